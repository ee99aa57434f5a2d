#!/usr/bin/env bash
# Regenerates the TypeScript code for ../../proto (and the vendored google/rpc/error_details.proto)
# into OUT_DIR, default src/gen (the committed copy). Same inputs give byte-identical output:
# protoc-gen-es and buf are pinned in package-lock.json and the output has no timestamps.
#   ./gen.sh                 # refresh src/gen
#   ./gen.sh /tmp/gen-check  # generate elsewhere, e.g. to diff against src/gen
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(realpath -m "${1:-$here/src/gen}")
cd "$here"
scripts/ensure-deps.sh

# Generate into a fresh directory, then swap it in, so files of deleted protos do not linger.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/buf generate --template buf.gen.yaml -o "$tmp"
rm -rf "$out"
mkdir -p "$out"
cp -r "$tmp/." "$out/"
