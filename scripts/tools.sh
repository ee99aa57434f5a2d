#!/usr/bin/env bash
# Installs the operator tools the runbook test needs into tools/bin (gitignored):
# grpcurl, built from source through the Go module proxy. Idempotent: an existing,
# working tools/bin/grpcurl is kept. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.3
bin="$PWD/tools/bin/grpcurl"

if [ -x "$bin" ] && "$bin" -version >/dev/null 2>&1; then
  :
else
  if ! command -v go >/dev/null 2>&1; then
    echo "scripts/tools.sh: go is not installed; install Go (https://go.dev/dl) or put grpcurl in tools/bin" >&2
    exit 1
  fi
  mkdir -p tools/bin
  echo "installing grpcurl $GRPCURL_VERSION into tools/bin (first time: about a minute)" >&2
  GOBIN="$PWD/tools/bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  "$bin" -version >&2
fi
echo "$bin"
