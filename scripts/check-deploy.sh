#!/usr/bin/env bash
# Validates the example deployment in deploy/ offline, and fails naming the file and the
# problem. The validators are installed on first use from the package registries, pinned:
#   - Kubernetes manifests: PyPI kubernetes-validate (bundled schemas, --strict: unknown
#     fields are errors) against the oldest and newest Kubernetes the guide supports, then
#     tools/deploy-check/k8s_consistency.py (selectors, ports, Secret keys, grace period);
#   - Envoy and compose: tools/deploy-check (Go), built on Envoy's own API types
#     (go-control-plane, with their validation rules) and Docker Compose's loader
#     (compose-go, with the compose-spec schema).
# Each validator must also refuse a copy of its file with one field misspelt, so a check
# that stopped checking fails here too.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes versions the manifests must validate against (deploy/README.md says so).
K8S_VERSIONS="1.30.0 1.37.0"
tool=tools/deploy-check
venv="$tool/.venv"
bin="$PWD/tools/bin/deploy-check"

# The venv, made anew when the pins or the Python change.
want="$({ sha256sum "$tool/requirements.txt" | cut -d' ' -f1; python3 --version 2>&1; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$tool/requirements.txt"
  echo "$want" >"$venv/.requirements.sha256"
fi
command -v go >/dev/null || { echo "check-deploy: go is not installed (needed to build tools/deploy-check)"; exit 1; }
# go build is incremental: after the first build (about a minute) this takes a second.
(cd "$tool" && GOFLAGS=-mod=readonly go build -o "$bin" .)

# kubernetes-validate only warns about a kind it has no schema for (a typo in `kind:`);
# here every warning fails.
k8s_validate() {
  local out version status=0
  for version in $K8S_VERSIONS; do
    out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$@" 2>&1) || status=1
    if [ -n "$out" ]; then
      printf '%s\n' "$out"
      status=1
    fi
  done
  return $status
}

failed=0
fail() { echo "check-deploy: $*"; failed=1; }

k8s_validate deploy/kubernetes/*.yaml || fail "deploy/kubernetes: a manifest does not match the Kubernetes schema (above)"
"$venv/bin/python" "$tool/k8s_consistency.py" deploy/kubernetes || fail "deploy/kubernetes: the manifests disagree (above)"
"$bin" envoy -compose deploy/envoy/compose.yaml deploy/envoy/envoy.yaml || fail "deploy/envoy/envoy.yaml is not a valid Envoy configuration (above)"
"$bin" compose deploy/envoy/compose.yaml || fail "deploy/envoy/compose.yaml is not a valid compose file (above)"
[ "$failed" = 0 ] || exit 1

# The validators must refuse a misspelt field.
canary=$(mktemp -d)
trap 'rm -rf "$canary"' EXIT
misspell() { # FILE FROM TO: writes $canary/<name of FILE>, FILE with FROM replaced by TO
  local out
  out="$canary/$(basename "$1")"
  sed "0,/$2/s//$3/" "$1" >"$out"
  grep -q "$3" "$out" || { echo "check-deploy: canary: '$2' not found in $1"; exit 1; }
}
refused() { # WHAT COMMAND...: the command must fail
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    echo "check-deploy: $what accepted a misspelt field: the check is not working"; exit 1
  fi
}
misspell deploy/kubernetes/deployment.yaml 'replicas: 3' 'replica: 3'
refused "kubernetes-validate" k8s_validate "$canary/deployment.yaml"
misspell deploy/kubernetes/service.yaml 'kind: Service' 'kind: Servic'
refused "kubernetes-validate (kind)" k8s_validate "$canary/service.yaml"
misspell deploy/envoy/envoy.yaml 'lb_policy:' 'lb_polcy:'
refused "deploy-check envoy" "$bin" envoy "$canary/envoy.yaml"
misspell deploy/envoy/compose.yaml 'stop_grace_period:' 'stop_grace_perod:'
refused "deploy-check compose" "$bin" compose "$canary/compose.yaml"
echo "deploy/: every manifest valid; the validators refuse misspelt fields"
