#!/usr/bin/env bash
# The Go SDK's checks: the generated code (and the enum constants made from it) matches the
# protos, the version is clients/VERSION, gofmt, go vet, and the tests (race detector on)
# against the real service, among them the
# consumer test (internal/consumer: the README's quick start built in a fresh module outside
# the repository through a replace). The tests start the sdk_harness themselves:
# $FINETUNE_HARNESS, default target/debug/examples/sdk_harness, built here if missing.
set -euo pipefail
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

go mod download

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
./gen.sh "$tmp"
if ! diff -r gen "$tmp"; then
  echo "clients/go/gen is out of date with proto/: run clients/go/gen.sh" >&2
  exit 1
fi
# The short enum constants follow the generated enums (go:generate in finetune/enum.go).
go run ./internal/enumgen -o "$tmp/enums.go"
if ! diff finetune/enums.go "$tmp/enums.go"; then
  echo "finetune/enums.go is out of date with gen/: run go generate ./finetune" >&2
  exit 1
fi

version="$(tr -d '[:space:]' <../VERSION)"
if ! grep -qx "const Version = \"$version\"" finetune/version.go; then
  echo "finetune.Version (finetune/version.go) is not clients/VERSION ($version)" >&2
  exit 1
fi

unformatted="$(gofmt -l finetune internal examples gen)"
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed: $unformatted" >&2
  exit 1
fi

go vet ./...

if [ -z "${FINETUNE_HARNESS:-}" ] && [ ! -x "$repo/target/debug/examples/sdk_harness" ]; then
  (cd "$repo" && cargo build --example sdk_harness)
fi

race=()
if [ "$(go env CGO_ENABLED)" = 1 ]; then
  race=(-race)
fi
go test "${race[@]}" -count=1 ./...
