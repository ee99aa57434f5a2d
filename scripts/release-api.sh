#!/usr/bin/env bash
# Records the API as released: writes proto/released/image.json, the descriptor image that
# `buf breaking` in scripts/test.sh compares every change against. Run it when a version of
# the API ships (and commit the image with that release); until then, changes to the protos
# are checked against the last release, so nothing a client already relies on can break.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x tools/node_modules/.bin/buf ]; then
  npm ci --prefix tools --no-audit --no-fund
fi
(cd proto && ../tools/node_modules/.bin/buf build --exclude-source-info -o -#format=json) |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.stringify(JSON.parse(s),null,1)+"\n"))' \
  > proto/released/image.json
echo "wrote proto/released/image.json"
