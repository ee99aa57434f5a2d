#!/usr/bin/env bash
# Creates or refreshes the Python virtualenv at the repository root (.venv) with the pinned
# packages of tests/python/requirements.txt. Idempotent and quiet when up to date: the hash
# of the requirements and the Python version are kept in .venv and compared first.
# Prints the venv's python on its last line. PYTHON picks the interpreter (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/python/requirements.txt"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"

want="$({ sha256sum "$requirements" | cut -d' ' -f1; "$python" --version 2>&1; } | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c '' 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi

# A missing or broken venv, or one made by another Python, is made anew.
if ! "$venv/bin/python" -c '' 2>/dev/null ||
  [ "$("$venv/bin/python" --version 2>&1)" != "$("$python" --version 2>&1)" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  -r "$requirements"
echo "$want" >"$stamp"
echo "$venv/bin/python"
