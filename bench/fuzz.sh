#!/usr/bin/env bash
# Fuzz every reader of untrusted input with cargo-fuzz (libFuzzer + AddressSanitizer).
#
#   bench/fuzz.sh [RUNS] [TARGET ...]
#
# RUNS executions per target (default 1,000,000), each target bounded by MAX_SECS seconds
# (default 1800) and every input by 10 s and 2 GB (a hang or an over-allocation counts as
# a failure, like a crash). Targets: gguf hf_folder tokenize_gguf tokenizer_json recipe
# base_cache (default: all). JOBS targets run at once (default 1).
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). Seeds are written by `fuzz/src/make_seeds.rs`; a crash
# leaves its input in fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run TARGET FILE).
# The figures go to bench/out/fuzz/summary.tsv and the logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gguf hf_folder tokenize_gguf tokenizer_json recipe base_cache)
MAX_SECS=${MAX_SECS:-1800}
JOBS=${JOBS:-1}
OUT=bench/out/fuzz
mkdir -p "$OUT"

cargo +nightly fuzz --version >/dev/null 2>&1 || {
  echo "error: needs cargo-fuzz and a nightly toolchain: cargo install cargo-fuzz; rustup toolchain install nightly" >&2
  exit 1
}
scripts/fetch-model.sh
# One build for the seed maker and the targets (same flags, so nothing is compiled twice).
(cd fuzz && cargo +nightly fuzz build --release)
fuzz/target/x86_64-unknown-linux-gnu/release/make-seeds

run_one() {
  local t=$1 log=$OUT/$1.log
  local start=$SECONDS rc=0
  # The binaries run directly (as `cargo fuzz run` would run them, same corpus and artifact
  # folders), so that editing sources during a long run does not rebuild and change the target.
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  "fuzz/target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="fuzz/artifacts/$t/" \
      -runs="$RUNS" -max_total_time="$MAX_SECS" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -print_final_stats=1 "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  local crashes
  crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-0}" "$((SECONDS - start))" "$rc" "$crashes" >>"$OUT/summary.tsv"
  echo "$t: ${execs:-0} executions in $((SECONDS - start)) s, exit $rc, $crashes artifact(s)" >&2
}

printf 'target\texecutions\tseconds\texit\tartifacts\n' >"$OUT/summary.tsv"
running=0
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
column -t "$OUT/summary.tsv"
