#!/usr/bin/env bash
# Checks that package.json's version is clients/VERSION, installs the SDK's dependencies when
# needed (npm ci from package-lock.json) and runs its tests against the real server: the
# harness at $FINETUNE_HARNESS, by default ../../target/debug/examples/sdk_harness
# (`cargo build --example sdk_harness` builds it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
want=$(tr -d '[:space:]' <../VERSION)
have=$(node -p 'require("./package.json").version')
if [[ $have != "$want" ]]; then
  echo "clients/typescript/package.json has version $have, clients/VERSION says $want" >&2
  exit 1
fi
scripts/ensure-deps.sh
npm test
