#!/usr/bin/env bash
# Speed of leanlm against llama-bench on the same GGUFs, in one run, median of 5:
# prompt processing (pp512) and decode (tg128), with 1 and 2 threads, plus the weight
# bytes leanlm streams per second while decoding next to this machine's measured read
# bandwidth (same thread count). leanlm runs with 8-bit activations (its default, as
# llama.cpp) and with 16-bit ones (`--activations 16`). Prints a markdown table for
# docs/benchmarks.md.
# Usage: bench/compare-speed.sh [MODEL…]   (default: the default model and a Q8_0 copy
# made by `leanlm quantize`)
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$DEFAULT" ] || scripts/fetch-model.sh
bin=$(bench/build-peer.sh)
cargo build --release --quiet
mkdir -p bench/out
if [ $# -eq 0 ]; then
  target/release/leanlm quantize "$DEFAULT" -o bench/out/default.q8_0.gguf --type q8_0 --allow-requantize 2>/dev/null
  set -- "$DEFAULT" bench/out/default.q8_0.gguf
fi
# THREADS and ACTIVATIONS narrow the runs (defaults: "1 2" and "8 16").
THREADS=${THREADS:-1 2}
ACTIVATIONS=${ACTIVATIONS:-8 16}
echo "| model | threads | test | llama.cpp t/s | leanlm activations | leanlm t/s | leanlm / llama.cpp | leanlm weight GB/s (of measured read GB/s) | leanlm peak RSS / file |"
echo "|---|---|---|---|---|---|---|---|---|"
for MODEL in "$@"; do
  for t in $THREADS; do
    tag=$(basename "$MODEL" .gguf)-t$t
    "$bin/llama-bench" -m "$MODEL" -p 512 -n 128 -r 5 -t "$t" -o json > bench/out/llama-bench-$tag.json 2>/dev/null
    for bits in $ACTIVATIONS; do
      target/release/leanlm bench "$MODEL" -p 512 -n 128 -r 5 -t "$t" --activations "$bits" --bandwidth --json > bench/out/leanlm-bench-$tag-a$bits.json
      python3 - "$MODEL" "$t" bench/out/llama-bench-$tag.json bench/out/leanlm-bench-$tag-a$bits.json "$bits" <<'PY'
import json, os, sys
model, t, peer, ours, bits = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4])), sys.argv[5]
def peer_tps(test):
    for r in peer:
        if test == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0: return r["avg_ts"], r["stddev_ts"]
        if test == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0: return r["avg_ts"], r["stddev_ts"]
for test, name in (("pp", "pp512"), ("tg", "tg128")):
    p, ps = peer_tps(test)
    o = next(r for r in ours["results"] if r["test"] == name)
    gbs, mem = "", ""
    if test == "tg":
        mem = f"{ours['peak_rss_bytes'] / 1e6:.0f} MB / {ours['file_bytes'] / 1e6:.0f} MB = {ours['peak_rss_bytes'] / ours['file_bytes']:.2f}"
        gbs = f"{ours['weight_bytes_per_token'] * o['tokens_per_sec'] / 1e9:.1f} of {ours['memory_read_bytes_per_sec'] / 1e9:.1f}"
    print(f"| {os.path.basename(model)} | {t} | {name} | {p:.1f} ± {ps:.1f} | {bits}-bit | {o['tokens_per_sec']:.1f} ({o['min']:.1f}–{o['max']:.1f}) | {o['tokens_per_sec']/p:.2f}× | {gbs} | {mem} |")
PY
    done
  done
done
