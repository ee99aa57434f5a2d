#!/usr/bin/env bash
# Runs the Python SDK's checks: ruff (format, lint) and mypy --strict on the package, tests and
# example, then pytest
# against the real server behind the SDK harness ($FINETUNE_HARNESS, default
# <repo>/target/debug/examples/sdk_harness; build it with `cargo build --example sdk_harness`).
# Installs .venv first when needed (scripts/venv.sh: pinned, idempotent). Extra arguments go to
# pytest. PYTHON picks the interpreter for a new venv (default python3). tests/test_package.py
# builds the sdist and wheel and installs the wheel into a fresh venv of a consumer project
# (its dependencies from PyPI, or pip's cache), so the suite checks what a user installs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$("$here/scripts/venv.sh" | tail -n1)"
cd "$here"
"$python" -m ruff format --check --quiet .
"$python" -m ruff check --quiet .
"$python" -m mypy src tests examples
"$python" -m pytest "$@"
