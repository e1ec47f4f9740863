#!/usr/bin/env bash
# Speed of leanlm against llama-bench on the same GGUF, in one run, median of 5:
# prompt processing (pp512) and decode (tg128), with 1 and 2 threads.
# Prints a markdown table for docs/benchmarks.md.  Usage: bench/compare-speed.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$MODEL" ] || scripts/fetch-model.sh
bin=$(bench/build-peer.sh)
cargo build --release --quiet
mkdir -p bench/out
echo "| threads | test | llama.cpp t/s | leanlm t/s | leanlm / llama.cpp |"
echo "|---|---|---|---|---|"
for t in 1 2; do
  "$bin/llama-bench" -m "$MODEL" -p 512 -n 128 -r 5 -t "$t" -o json > bench/out/llama-bench-t$t.json 2>/dev/null
  target/release/leanlm bench "$MODEL" -p 512 -n 128 -r 5 -t "$t" --json > bench/out/leanlm-bench-t$t.json
  python3 - "$t" bench/out/llama-bench-t$t.json bench/out/leanlm-bench-t$t.json <<'PY'
import json, sys
t, peer, ours = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
def peer_tps(test):
    for r in peer:
        if test == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0: return r["avg_ts"], r["stddev_ts"]
        if test == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0: return r["avg_ts"], r["stddev_ts"]
for test, name in (("pp", "pp512"), ("tg", "tg128")):
    p, ps = peer_tps(test)
    o = next(r for r in ours["results"] if r["test"] == name)
    print(f"| {t} | {name} | {p:.1f} ± {ps:.1f} | {o['tokens_per_sec']:.1f} ({o['min']:.1f}–{o['max']:.1f}) | {o['tokens_per_sec']/p:.2f}× |")
PY
done
