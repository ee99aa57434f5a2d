#!/usr/bin/env bash
# Validation benchmark: `finetune validate` vs the OpenAI cookbook's Python method vs the raw
# tokenizer, on generated chat datasets. See bench/README.md.
#
#   bench/run.sh [--cookbook-all] [--unique-system] [SIZE_MB...]   (default sizes: 100 1000)
#
#   --cookbook-all    also run the (slow) cookbook method on sizes above 100 MB
#   --unique-system   worst case: every example's system prompt differs (no shared prompt)
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
tag=
gen_flags=()
sizes=()
for arg in "$@"; do
  case $arg in
    --cookbook-all) cookbook_all=1 ;;
    --unique-system) tag=-unique; gen_flags=(--unique-system) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
step "cargo build --release --bin finetune --example raw_tokenizer"
cargo build --release --bin finetune --example raw_tokenizer
FINETUNE=$ROOT/target/release/finetune
RAW=$ROOT/target/release/examples/raw_tokenizer

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

# 4. Datasets.
for n in "${sizes[@]}"; do
  f=$OUT/data-${n}MB${tag}.jsonl
  if [ ! -f "$f" ]; then
    step "generating $f"
    python3 "$BENCH/gen_dataset.py" "$n" "$f.tmp" "${gen_flags[@]}"
    mv "$f.tmp" "$f"
  fi
done

# 5. Runs. Each leaves one JSON object in $OUT/<method>-<N>MB.json.
for n in "${sizes[@]}"; do
  f=$OUT/data-${n}MB${tag}.jsonl

  step "finetune validate on ${n} MB"
  rc=0
  /usr/bin/time -f '%e %M' -o "$OUT/finetune-${n}MB${tag}.time" \
    "$FINETUNE" validate "$f" --json --model "$MODEL" > "$OUT/finetune-${n}MB${tag}.report.json" || rc=$?
  # Exit 1 means the report lists errors (it is still complete); 2 means it failed.
  [ "$rc" -le 1 ] || die "finetune validate exited $rc on $f"
  [ "$rc" -eq 0 ] || echo "run.sh: warning: finetune found $(jq .error_count "$OUT/finetune-${n}MB${tag}.report.json") errors in $f" >&2
  read -r secs rss_kb < <(tail -n1 "$OUT/finetune-${n}MB${tag}.time")
  jq -c --argjson secs "$secs" --argjson rss_kb "$rss_kb" '
    {method: "finetune", examples: .training.examples, total_tokens: .training.tokens.total,
     seconds: $secs, mb_per_s: (.training.size_bytes / 1e6 / $secs),
     examples_per_s: (.training.examples / $secs), peak_rss_mb: ($rss_kb * 1024 / 1e6),
     file_bytes: .training.size_bytes, error_count: .error_count, warning_count: .warning_count}' \
    "$OUT/finetune-${n}MB${tag}.report.json" > "$OUT/finetune-${n}MB${tag}.json"
  cat "$OUT/finetune-${n}MB${tag}.json" >&2

  step "raw tokenizer on ${n} MB"
  "$RAW" "$f" > "$OUT/raw_tokenizer-${n}MB${tag}.json"
  cat "$OUT/raw_tokenizer-${n}MB${tag}.json" >&2

  rm -f "$OUT/cookbook-${n}MB${tag}.json"
  if [ "$n" -le 100 ] || [ "$cookbook_all" -eq 1 ]; then
    step "cookbook (json.loads + tiktoken) on ${n} MB"
    "$PY" "$BENCH/cookbook.py" "$f" > "$OUT/cookbook-${n}MB${tag}.json"
    cat "$OUT/cookbook-${n}MB${tag}.json" >&2
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
  echo "1 MB = 1,000,000 bytes. finetune: wall time and max RSS of the whole process (\`/usr/bin/time\`);"
  echo "raw tokenizer: tokenizing only (2 threads, parsing untimed), RSS includes the file's strings held in memory;"
  echo "cookbook: json.loads + tiktoken encode, one thread, whole script after imports."
  echo
  echo "| method | size | seconds | MB/s | examples/s | peak RSS MB |"
  echo "|---|---|---:|---:|---:|---:|"
  for n in "${sizes[@]}"; do
    for m in finetune raw_tokenizer cookbook; do
      [ -f "$OUT/$m-${n}MB${tag}.json" ] || continue
      jq -r --arg size "${n} MB" '"| \(.method) | \($size) | \(.seconds * 100 | round / 100) | \(.mb_per_s * 10 | round / 10) | \(.examples_per_s | round) | \(.peak_rss_mb | round) |"' "$OUT/$m-${n}MB${tag}.json"
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
