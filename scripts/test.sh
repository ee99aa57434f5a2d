#!/usr/bin/env bash
# The project's one test command. On a fresh machine it installs what the checks need
# (the Rust components, buf from npm, grpcurl, the Python venvs, the SDKs' npm and Go
# modules), then runs every check; any failure fails the run.
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

step "buf breaking (the protos against the main branch)"
# On a branch or with uncommitted proto changes this catches wire- and source-breaking edits
# (FILE rules, proto/buf.yaml) before they reach main's clients.
if git rev-parse --verify --quiet main >/dev/null; then
  (cd proto && ../tools/node_modules/.bin/buf breaking --against '../.git#branch=main,subdir=proto')
else
  echo "no local main branch to compare against: skipped"
fi

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

# The SDK suites run against the real server behind the SDK harness, each regenerating its
# stubs first and failing on drift. (cargo test builds examples only as test targets, so the
# harness binary is built here.)
step "SDK harness (cargo build --example sdk_harness)"
cargo build --locked --example sdk_harness
export FINETUNE_HARNESS="$PWD/target/debug/examples/sdk_harness"

step "SDK: Python (clients/python)"
clients/python/test.sh -q

step "SDK: TypeScript (clients/typescript)"
clients/typescript/test.sh

step "SDK: Go (clients/go)"
clients/go/test.sh
