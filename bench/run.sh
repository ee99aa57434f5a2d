#!/usr/bin/env bash
# Validation benchmark: `finetune validate` vs the OpenAI cookbook's Python method vs the raw
# tokenizer, on generated chat datasets. See bench/README.md.
#
#   bench/run.sh [--cookbook-all] [--unique-system] [SIZE_MB...]   (default sizes: 100 1000)
#
#   --cookbook-all    also run the (slow) cookbook method on sizes above 100 MB
#   --unique-system   worst case: every example's system prompt differs (no shared prompt)
#   --repeat=N        runs per method and size, the fastest is reported (default 3)
#   --no-build        use the binaries already in target/release (e.g. while src/ is mid-edit)
#   --wait-idle       before each run, wait (up to 10 min) until other load is under 15%
#
# Writes bench/out/data-<N>MB.jsonl (kept and reused), the raw JSON of every run in
# bench/out/<method>-<N>MB.json, and the table in bench/out/results.md (with
# --unique-system: data-<N>MB-unique.jsonl, <method>-<N>MB-unique.json, results-unique.md).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
OUT=$BENCH/out
VENV=$BENCH/.venv
PY=$VENV/bin/python
O200K_URL="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
MODEL=gpt-4o-2024-08-06

cookbook_all=0
wait_idle=0
build=1
repeat=3
tag=
gen_flags=()
sizes=()
for arg in "$@"; do
  case $arg in
    --cookbook-all) cookbook_all=1 ;;
    --unique-system) tag=-unique; gen_flags=(--unique-system) ;;
    --repeat=[1-9]*) repeat=${arg#--repeat=} ;;
    --no-build) build=0 ;;
    --wait-idle) wait_idle=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *[!0-9]*|'') echo "run.sh: sizes are whole MB, got '$arg'" >&2; exit 2 ;;
    *) sizes+=("$arg") ;;
  esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000)

die() { echo "run.sh: FAIL: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

mkdir -p "$OUT"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"

# 1. Python venv with tiktoken.
if [ ! -x "$PY" ] || ! "$PY" -c 'import tiktoken' 2>/dev/null; then
  step "creating $VENV with tiktoken"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check tiktoken
fi

# 2. Release builds (this also fetches tiktoken-rs, whose BPE file seeds tiktoken's cache).
FINETUNE=$ROOT/target/release/finetune
RAW=$ROOT/target/release/examples/raw_tokenizer
if [ "$build" -eq 1 ]; then
  step "cargo build --release --bin finetune --example raw_tokenizer"
  cargo build --release --bin finetune --example raw_tokenizer
fi
[ -x "$FINETUNE" ] && [ -x "$RAW" ] || die "build $FINETUNE and $RAW first (cargo build --release --bin finetune --example raw_tokenizer)"

# 3. Seed tiktoken's cache: the file named by the sha1 of its download URL (tiktoken/load.py).
export TIKTOKEN_CACHE_DIR=$VENV/tiktoken-cache
mkdir -p "$TIKTOKEN_CACHE_DIR"
cache_file=$TIKTOKEN_CACHE_DIR/$(printf '%s' "$O200K_URL" | sha1sum | cut -d' ' -f1)
if [ ! -f "$cache_file" ]; then
  src=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tiktoken-rs-0.12.1/assets/o200k_base.tiktoken 2>/dev/null | head -n1 || true)
  [ -n "$src" ] || die "tiktoken-rs 0.12.1's assets/o200k_base.tiktoken not found under ~/.cargo/registry"
  cp "$src" "$cache_file.tmp" && mv "$cache_file.tmp" "$cache_file"
fi
[ "$(sha256sum "$cache_file" | cut -d' ' -f1)" = "$O200K_SHA256" ] || die "$cache_file has the wrong sha256"

# Other load makes wall times noisy: say so (CPU s in the table is less affected).
cpu_busy() { # percent of all CPUs busy over 2 s, from /proc/stat
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{busy=$3-$1; idle=$4-$2; print int(100*busy/(busy+idle+0.001))}'
}
wait_for_idle() {
  local i b
  for ((i = 0; i < 300; i++)); do
    b=$(cpu_busy)
    [ "$b" -lt 15 ] && return 0
  done
  echo "run.sh: warning: still ${b}% busy after 10 minutes; running anyway" >&2
}
busy=$(cpu_busy)
[ "$busy" -lt 15 ] || [ "$wait_idle" -eq 1 ] || echo "run.sh: warning: the machine is already ${busy}% busy; wall times will be noisy" >&2

# 4. Datasets.
for n in "${sizes[@]}"; do
  f=$OUT/data-${n}MB${tag}.jsonl
  if [ ! -f "$f" ]; then
    step "generating $f"
    python3 "$BENCH/gen_dataset.py" "$n" "$f.tmp" "${gen_flags[@]}"
    mv "$f.tmp" "$f"
  fi
done

# 5. Runs. Each method runs $repeat times; the fastest run's JSON (plus every run's seconds as
# all_seconds) is kept in $OUT/<method>-<N>MB.json. Best-of-N because the machine is shared.
machine_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

finetune_once() { # FILE OUTJSON
  local f=$1 out=$2 rc=0 secs rss_kb user sys report
  report=${out%.run}; report=${report%.json}.report.json  # the full report of the last run
  local m0 m1
  m0=$(machine_ticks)
  /usr/bin/time -f '%e %M %U %S' -o "$out.time" \
    "$FINETUNE" validate "$f" --json --model "$MODEL" > "$report" || rc=$?
  # Exit 1 means the report lists errors (it is still complete); 2 means it failed.
  [ "$rc" -le 1 ] || die "finetune validate exited $rc on $f"
  [ "$rc" -eq 0 ] || echo "run.sh: warning: finetune found $(jq .error_count "$report") errors in $f" >&2
  m1=$(machine_ticks)
  read -r secs rss_kb user sys < <(tail -n1 "$out.time")
  local others
  others=$(echo "$m0 $m1 $user $sys $(getconf CLK_TCK)" | awk '{t=$4-$2; o=($3-$1)-($5+$6)*$7; p=(t>0)?100*o/t:0; if(p<0)p=0; if(p>100)p=100; print p}')
  jq -c --argjson secs "$secs" --argjson rss_kb "$rss_kb" --argjson cpu "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" --argjson others "$others" '
    {method: "finetune", examples: .training.examples, total_tokens: .training.tokens.total,
     seconds: $secs, mb_per_s: (.training.size_bytes / 1e6 / $secs),
     examples_per_s: (.training.examples / $secs), peak_rss_mb: ($rss_kb * 1024 / 1e6),
     cpu_seconds: $cpu, others_load_pct: $others, file_bytes: .training.size_bytes, error_count: .error_count, warning_count: .warning_count}' \
    "$report" > "$out"
  rm -f "$out.time"
}
raw_once() { "$RAW" "$1" > "$2"; }
cookbook_once() { "$PY" "$BENCH/cookbook.py" "$1" > "$2"; }

best_of() { # METHOD FILE OUTJSON
  local method=$1 f=$2 out=$3 i all=()
  rm -f "$out"
  for ((i = 1; i <= repeat; i++)); do
    [ "$wait_idle" -eq 0 ] || wait_for_idle
    "${method}_once" "$f" "$out.run"
    jq -c . "$out.run" >&2
    all+=("$(jq .seconds "$out.run")")
    if [ ! -f "$out" ] || [ "$(jq -n --argjson a "$(jq .seconds "$out.run")" --argjson b "$(jq .seconds "$out")" '$a < $b')" = true ]; then
      mv "$out.run" "$out"
    fi
  done
  rm -f "$out.run"
  jq -c --argjson all "[$(IFS=,; echo "${all[*]}")]" '. + {all_seconds: $all}' "$out" > "$out.tmp" && mv "$out.tmp" "$out"
}

for n in "${sizes[@]}"; do
  f=$OUT/data-${n}MB${tag}.jsonl

  step "finetune validate on ${n} MB (x$repeat)"
  best_of finetune "$f" "$OUT/finetune-${n}MB${tag}.json"

  step "raw tokenizer on ${n} MB (x$repeat)"
  best_of raw "$f" "$OUT/raw_tokenizer-${n}MB${tag}.json"

  rm -f "$OUT/cookbook-${n}MB${tag}.json"
  if [ "$n" -le 100 ] || [ "$cookbook_all" -eq 1 ]; then
    step "cookbook (json.loads + tiktoken) on ${n} MB (x$repeat)"
    best_of cookbook "$f" "$OUT/cookbook-${n}MB${tag}.json"
  fi

  # All methods must count the same tokens.
  want=$(jq .total_tokens "$OUT/finetune-${n}MB${tag}.json")
  for m in raw_tokenizer cookbook; do
    [ -f "$OUT/$m-${n}MB${tag}.json" ] || continue
    got=$(jq .total_tokens "$OUT/$m-${n}MB${tag}.json")
    [ "$got" = "$want" ] || die "token totals disagree on ${n} MB${tag}: finetune $want, $m $got"
    got=$(jq .examples "$OUT/$m-${n}MB${tag}.json")
    [ "$got" = "$(jq .examples "$OUT/finetune-${n}MB${tag}.json")" ] || die "example counts disagree on ${n} MB: $m $got"
  done
  step "${n} MB: all methods agree on $want tokens"
done

# 6. The table.
{
  echo "# Validation benchmark results${tag:+ (--unique-system: no shared system prompt)}"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GB RAM;"
  echo "$(rustc --version); tiktoken $("$PY" -c 'import tiktoken; print(tiktoken.__version__)') on $("$PY" --version 2>&1)."
  echo "Best of $repeat runs per row. 1 MB = 1,000,000 bytes. finetune: wall time and max RSS of the whole process (\`/usr/bin/time\`);"
  echo "raw tokenizer: tokenizing only (2 threads, parsing untimed), RSS includes the file's strings held in memory;"
  echo "cookbook: json.loads + tiktoken encode, one thread, from importing tiktoken to the end."
  echo "CPU s: user + system CPU seconds over the same span (less sensitive than wall time to other load on the machine);"
  echo "others' load: share of both CPUs busy with other processes during the timed span (0% = a clean run)."
  echo
  echo "| method | size | seconds | MB/s | examples/s | peak RSS MB | CPU s | others' load |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for n in "${sizes[@]}"; do
    for m in finetune raw_tokenizer cookbook; do
      [ -f "$OUT/$m-${n}MB${tag}.json" ] || continue
      jq -r --arg size "${n} MB" '"| \(.method) | \($size) | \(.seconds * 100 | round / 100) | \(.mb_per_s * 10 | round / 10) | \(.examples_per_s | round) | \(.peak_rss_mb | round) | \(.cpu_seconds * 10 | round / 10) | \(.others_load_pct | round)% |"' "$OUT/$m-${n}MB${tag}.json"
    done
  done
  echo
  echo "Ratios (targets: finetune >= 4x cookbook, >= 0.85x raw tokenizer, RSS largest/smallest <= 2):"
  echo
  for n in "${sizes[@]}"; do
    ft=$(jq .mb_per_s "$OUT/finetune-${n}MB${tag}.json")
    if [ -f "$OUT/cookbook-${n}MB${tag}.json" ]; then
      cb=$(jq .mb_per_s "$OUT/cookbook-${n}MB${tag}.json")
      echo "- ${n} MB: finetune vs cookbook: $(awk -v a="$ft" -v b="$cb" 'BEGIN{printf "%.1fx", a/b}')"
    fi
    raw=$(jq .mb_per_s "$OUT/raw_tokenizer-${n}MB${tag}.json")
    echo "- ${n} MB: finetune vs raw tokenizer: $(awk -v a="$ft" -v b="$raw" 'BEGIN{printf "%.2fx", a/b}')"
  done
  if [ ${#sizes[@]} -gt 1 ]; then
    lo=${sizes[0]} hi=${sizes[-1]}
    a=$(jq .peak_rss_mb "$OUT/finetune-${hi}MB${tag}.json")
    b=$(jq .peak_rss_mb "$OUT/finetune-${lo}MB${tag}.json")
    echo "- finetune RSS ${hi} MB / RSS ${lo} MB: $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2fx", a/b}') ($(printf '%.0f' "$a") MB / $(printf '%.0f' "$b") MB)"
  fi
} > "$OUT/results${tag}.md"
cat "$OUT/results${tag}.md"
