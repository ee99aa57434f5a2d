#!/usr/bin/env bash
# Installs the SDK's dependencies when needed (npm ci from package-lock.json) and runs its
# tests against the real server: the harness at $FINETUNE_HARNESS, by default
# ../../target/debug/examples/sdk_harness (`cargo build --example sdk_harness` builds it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/ensure-deps.sh
npm test
