#!/usr/bin/env bash
# The peer benchmark: the LiteLLM proxy and FineTune's gRPC Complete side by side, in front
# of one emulator process, under open-loop load (vegeta for HTTP, ghz for gRPC). See
# bench/README.md, "A peer, side by side".
set -euo pipefail
cd "$(dirname "$0")/../.."

# Pinned versions: a re-run on the next release compares like with like.
LITELLM_VERSION=1.108.7
GHZ_VERSION=v0.93.0
VEGETA_VERSION=v12.13.0

usage() {
  cat <<'EOF'
Usage: bench/peer/run.sh [options]

Starts `finetune emulator`, `finetune serve` (tier fast -> gpt-4o-mini on the emulator) and
the LiteLLM proxy (one model -> the same emulator, LiteLLM's defaults otherwise), sends the
same request (bench/peer/request.json) three ways in turn at each rate, stepping the rate up:

  direct    vegeta -> the emulator's /v1/chat/completions
  litellm   vegeta -> LiteLLM's /v1/chat/completions -> the emulator
  complete  ghz    -> FineTune Complete(tier fast)   -> the emulator

and writes bench/out/peer-results.md (tables) and bench/out/peer-results.json (numbers, per
run), raw generator output in bench/out/peer-raw/. A path leaves the steps at the first rate it
does not sustain (every request answered with success, answers at >= 95% of the rate).

Options:
  --rates LIST          offered rates in requests/s, stepped up in order
                        (default 10,25,50,70,100,150,200,300,500,700,1000,1500,2000,3000)
  --seconds N           seconds per run (default 5)
  --rounds N            runs per path and rate, the paths taking turns (default 2)
  --warmup N            unmeasured seconds per path at the first rate (default 2)
  --targets LIST        paths to run, of direct,litellm,complete (default all; direct always)
  --litellm-workers N   pass --num_workers N to LiteLLM (default: none, its own default of 1)
  --grpc-connections N  ghz connections to the service (default 4)
  --ghz-workers N       ghz request workers (default 50)
  --timeout N           per-request timeout in seconds (default 10)
  --no-build            use target/release/finetune as it is
  --tries N             tries at a rate before a path that misses it leaves the steps (default 2)
  --retry-idle N        before another try, wait up to N seconds for other processes to use
                        under 15% of the CPUs (default 20)
  --wait-idle N         the same wait before every run (default 0: do not wait)
  --keep-logs           keep the processes' logs (the temporary directory is printed)
  -h, --help            this text

Installs on first use (all ignored by git): ghz $GHZ_VERSION and vegeta $VEGETA_VERSION with
`go install` into bench/out/bin, litellm[proxy]==$LITELLM_VERSION into bench/.venv-peer, grpcurl
into tools/bin (scripts/tools.sh). The default run takes 7-9 minutes on 2 cores.
EOF
}

die() {
  echo "bench/peer/run.sh: $*" >&2
  exit 1
}

cmdline="bench/peer/run.sh${*:+ }$*"
build=1
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --no-build) build=0 ;;
    --keep-logs) pass+=("$1") ;;
    --rates | --seconds | --rounds | --warmup | --targets | --litellm-workers | --grpc-connections | --ghz-workers | --timeout | --wait-idle | --tries | --retry-idle)
      [ $# -ge 2 ] || die "$1 needs a value"
      pass+=("$1" "$2")
      shift
      ;;
    --*=*)
      opt="${1%%=*}"
      case "$opt" in
        --rates | --seconds | --rounds | --warmup | --targets | --litellm-workers | --grpc-connections | --ghz-workers | --timeout | --wait-idle | --tries | --retry-idle)
          pass+=("$opt" "${1#*=}")
          ;;
        *) die "unknown option $opt (see --help)" ;;
      esac
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

command -v python3 >/dev/null || die "python3 is needed (the driver and LiteLLM's venv)"
command -v go >/dev/null || die "go is needed to install ghz and vegeta (go install from the module proxy)"

bin="$PWD/bench/out/bin"
mkdir -p "$bin"
# The module version a binary was built from (`go version -m`; the tools print none of their own).
go_mod_version() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3 }'; }
install_go_tool() { # name module version
  local name=$1 module=$2 version=$3
  if [ -x "$bin/$name" ] && [ "$(go_mod_version "$bin/$name")" = "$version" ]; then
    return
  fi
  echo "bench/peer: installing $name $version into bench/out/bin" >&2
  GOBIN="$bin" go install "$module@$version" || die "go install $module@$version failed"
}
install_go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
install_go_tool vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION"

grpcurl=$(scripts/tools.sh) || die "scripts/tools.sh could not install grpcurl"

venv="$PWD/bench/.venv-peer"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
  echo "bench/peer: installing litellm[proxy]==$LITELLM_VERSION into bench/.venv-peer (first time: a few minutes)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "cannot create the venv $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" \
    || die "pip could not install litellm[proxy]==$LITELLM_VERSION"
fi

if [ "$build" = 1 ]; then
  echo "bench/peer: cargo build --release" >&2
  cargo build --release --quiet || die "cargo build --release failed"
fi
finetune="$PWD/target/release/finetune"
[ -x "$finetune" ] || die "$finetune is missing: run without --no-build"
# ghz 0.93's own .proto parser predates proto3 `optional`: it reads the descriptor set that
# build.rs writes for reflection instead (the newest, if several builds are around).
protoset=$(ls -t target/release/build/finetune-*/out/finetune_descriptor.bin 2>/dev/null | head -n 1 || true)
[ -n "$protoset" ] || die "no finetune_descriptor.bin under target/release/build: run without --no-build"

exec python3 bench/peer/peer.py \
  --finetune "$finetune" --ghz "$bin/ghz" --protoset "$PWD/$protoset" --vegeta "$bin/vegeta" --grpcurl "$grpcurl" \
  --litellm "$venv/bin/litellm" --out "$PWD/bench/out" --command "$cmdline" \
  --tool-versions "ghz $GHZ_VERSION, vegeta $VEGETA_VERSION" "${pass[@]}"
