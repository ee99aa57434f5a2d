#!/usr/bin/env bash
# Regenerates every client SDK's generated code from proto/ (Python, TypeScript, Go), each
# with its own pinned generator (clients/<lang>/gen.sh). Run it after any change to proto/;
# each SDK's test suite regenerates into a temporary directory and fails on any drift.
set -euo pipefail
cd "$(dirname "$0")/.."
for lang in python typescript go; do
  if [ -x "clients/$lang/gen.sh" ]; then
    echo "==> clients/$lang" >&2
    "clients/$lang/gen.sh"
  fi
done
