#!/usr/bin/env bash
# Installs node_modules from package-lock.json with `npm ci` when they are missing or stale
# (the lock file changed since the last install), and does nothing otherwise: no network and
# no output when up to date. Sourced or run from clients/typescript/ by gen.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stamp=node_modules/.finetune-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
echo "clients/typescript: npm ci (package-lock.json changed or node_modules missing)" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
echo "$want" >"$stamp"
