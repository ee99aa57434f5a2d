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

step "self-contained (no file names a path outside the repository)"
# A clone at any path, with nothing beside it, must pass: provider material lives in reference/.
if git grep -nE '\.\./(shared|\.library)\b|/work/(shared|main)' -- ':!scripts/test.sh'; then
  echo "the files above reach outside the repository"; exit 1
fi

step "buf lint (STANDARD)"
(cd proto && ../tools/node_modules/.bin/buf lint)

step "buf breaking (the protos against the released API, proto/released/image.json)"
# The baseline is committed, so this check runs in every clone, on any branch; it catches
# wire- and source-breaking edits (FILE rules, proto/buf.yaml) before they reach clients.
# scripts/release-api.sh records a new baseline when an API version ships.
[ -s proto/released/image.json ] || { echo "proto/released/image.json is missing: run scripts/release-api.sh"; exit 1; }
(cd proto && ../tools/node_modules/.bin/buf breaking --against released/image.json)
# The check must be able to fail: a copy of the protos with one field renamed has to be refused.
canary=$(mktemp -d)
cp -r proto/. "$canary"
sed -i '0,/string request_id = /s//string request_id_renamed = /' "$canary/fileengine/finetune/v1/job.proto"
grep -q request_id_renamed "$canary/fileengine/finetune/v1/job.proto"
root=$PWD
if (cd "$canary" && "$root/tools/node_modules/.bin/buf" breaking --against "$root/proto/released/image.json" >/dev/null 2>&1); then
  rm -rf "$canary"; echo "buf breaking accepted a renamed field: the check is not working"; exit 1
fi
rm -rf "$canary"
echo "buf breaking refuses a renamed field, as it should"

step "deploy/: Kubernetes, Envoy and compose files against their schemas (offline)"
scripts/check-deploy.sh

step "the core crate depends on no gRPC, HTTP or database crate"
# The direction core <- adapters <- server is held by the compiler only while the core
# cannot name them: finetune-core's dependency tree must not hold any of them.
if cargo tree --locked -p finetune-core -e normal --prefix none | grep -E '^(tonic|prost|reqwest|sqlx|axum|hyper|finetune) '; then
  echo "finetune-core depends on the crates above: move that code to an adapter or the server"; exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "tools (grpcurl for the runbook test)"
scripts/tools.sh

# Clippy runs inside the one build the tests need: `cargo clippy` is `cargo check` with
# clippy-driver standing in for rustc on this crate, and clippy-driver builds as well as it
# checks. A separate clippy step compiled every dependency a second time (metadata only) and
# this crate twice. Only the workspace's crates (the finetune package and crates/*) go through
# the wrapper, so the dependencies' build is shared with a plain `cargo build`. Any warning,
# from rustc or clippy, fails the run.
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
# Without it the build would still pass, unlinted: refuse instead.
[ -x "$RUSTC_WORKSPACE_WRAPPER" ] || { echo "clippy-driver not found (rustup component add clippy)"; exit 1; }
step "cargo build of every target, linted by clippy (warnings fail)"
build_log=$(mktemp)
cargo test --locked --workspace --all-targets --no-run 2>&1 | tee "$build_log"
if grep -q '^warning' "$build_log"; then
  rm -f "$build_log"; echo "the build above has warnings (rustc or clippy): fix them"; exit 1
fi
rm -f "$build_log"

# The Store conformance suite (tests/store.rs) runs on PostgreSQL too: a throwaway server for
# this run, stopped and removed when the script exits, however it exits.
step "PostgreSQL for the tests (scripts/postgres.sh)"
pg_env=$(scripts/postgres.sh start)  # an assignment, so that a failed start stops the run
eval "$pg_env"
trap 'scripts/postgres.sh stop "$FINETUNE_TEST_PG_DIR"' EXIT

step "cargo test"
cargo test --locked --workspace --all-targets

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

# Last, because it replaces target/debug/finetune (the steps above run the default build's);
# the default binary is kept aside and put back after. Only the finetune package is rebuilt
# without the feature; the dependencies are shared.
step "a build without the emulator feature has no emulator"
default_bin="$(mktemp -d)/finetune"
cp -p target/debug/finetune "$default_bin"
if cargo tree --locked -e normal --no-default-features -p finetune --prefix none | grep -q '^finetune-emulator '; then
  echo "finetune-emulator is in the dependency tree of the build without the feature"; exit 1
fi
build_log=$(mktemp)
cargo build --locked --no-default-features --bin finetune 2>&1 | tee "$build_log"
if grep -q '^warning' "$build_log"; then
  rm -f "$build_log"; echo "the build without the emulator has warnings (rustc or clippy): fix them"; exit 1
fi
rm -f "$build_log"
# A binary that wrongly started a server would be stopped by the timeout (status 124).
for args in "serve --emulator --addr 127.0.0.1:0 --data-dir $(mktemp -d)" "emulator --addr 127.0.0.1:0"; do
  set +e
  out=$(timeout 20 target/debug/finetune $args 2>&1 </dev/null)
  code=$?
  set -e
  if [ "$code" != 2 ] || ! grep -q 'lacks the `emulator` feature' <<<"$out"; then
    echo "finetune $args: expected exit status 2 and the missing feature named, got $code: $out"; exit 1
  fi
done
echo "serve --emulator and finetune emulator are refused, with exit status 2"
# Put the default binary back for whoever runs it next.
mv "$default_bin" target/debug/finetune
