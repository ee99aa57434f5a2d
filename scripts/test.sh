#!/usr/bin/env bash
# The project's one test command. On a fresh machine it installs what the checks need
# (the Rust components, buf from npm), then runs every check; any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add clippy rustfmt
fi
cargo --version
if [ ! -x tools/node_modules/.bin/buf ]; then
  npm ci --prefix tools --no-audit --no-fund
fi

step "buf lint (STANDARD)"
(cd proto && ../tools/node_modules/.bin/buf lint)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "tools (grpcurl for the runbook test)"
scripts/tools.sh

step "cargo test"
cargo test --locked --all-targets

step "Python: the official openai SDK against the emulator"
scripts/python-env.sh
FINETUNE_BIN="$PWD/target/debug/finetune" .venv/bin/python -m pytest tests/python -q
