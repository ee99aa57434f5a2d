#!/usr/bin/env bash
# Regenerates the Go code for ../../proto into OUT_DIR (default: gen/, the committed copy):
#   clients/go/gen.sh [OUT_DIR]
# Deterministic: buf 1.75.0 (tools/package.json), protoc-gen-go at the protobuf runtime version
# go.mod requires, protoc-gen-go-grpc pinned below; no timestamps. Installs the plugins into bin/
# once (quiet and offline when they are already there).
set -euo pipefail
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/gen}"

PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# The generator must match the runtime the generated code is compiled against.
PROTOC_GEN_GO_VERSION="$(awk '$1 == "google.golang.org/protobuf" { print $2 }' "$here/go.mod")"

bin="$here/bin"
install_plugin() { # NAME PACKAGE VERSION VERSION_LINE
  if [ "$("$bin/$1" --version 2>/dev/null)" != "$4" ]; then
    GOBIN="$bin" go install "$2@$3"
  fi
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
  "$PROTOC_GEN_GO_VERSION" "protoc-gen-go $PROTOC_GEN_GO_VERSION"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  "$PROTOC_GEN_GO_GRPC_VERSION" "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}"

buf="$repo/tools/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
  npm ci --prefix "$repo/tools" --no-audit --no-fund --silent
fi

# Generate next to OUT_DIR, then swap, so a failed run leaves the old code in place and
# files of deleted protos do not linger.
mkdir -p "$out"
tmp="$(mktemp -d "$out/.gen.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$here" && PATH="$bin:$PATH" "$buf" generate "$repo/proto" --template buf.gen.yaml -o "$tmp")
rm -rf "$out/fileengine"
mv "$tmp/fileengine" "$out/fileengine"
