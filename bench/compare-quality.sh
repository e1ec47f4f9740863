#!/usr/bin/env bash
# Quality and evaluation time of leanlm against llama.cpp on the same GGUF, one after
# the other in one run, 2 threads: WikiText-2 test perplexity (ctx 512) and HellaSwag.
#   CHUNKS=N   evaluate only the first N chunks (default: the whole file)
#   TASKS=N    HellaSwag tasks (default 1000)
# Prints a markdown table for docs/benchmarks.md.  Usage: bench/compare-quality.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
WIKI=data/wikitext-2-raw/wiki.test.raw
HS=data/hellaswag/hellaswag_val_1000.txt
TASKS=${TASKS:-1000}
[ -f "$MODEL" ] || scripts/fetch-model.sh
bin=$(bench/build-peer.sh)
cargo build --release --quiet
mkdir -p bench/out
chunk_args=()
[ -n "${CHUNKS:-}" ] && chunk_args=(--chunks "$CHUNKS")

t0=$(date +%s.%N)
"$bin/llama-perplexity" -m "$MODEL" -f "$WIKI" -c 512 -t 2 "${chunk_args[@]}" > bench/out/llama-ppl.log 2>&1
t1=$(date +%s.%N)
target/release/leanlm eval "$MODEL" --ppl "$WIKI" -c 512 -t 2 "${chunk_args[@]}" --json > bench/out/leanlm-ppl.json
t2=$(date +%s.%N)
"$bin/llama-perplexity" -m "$MODEL" -f "$HS" --hellaswag --hellaswag-tasks "$TASKS" -t 2 > bench/out/llama-hs.log 2>&1
target/release/leanlm eval "$MODEL" --hellaswag "$HS" --tasks "$TASKS" -t 2 --json > bench/out/leanlm-hs.json

python3 - "$t0" "$t1" "$t2" <<'PY'
import json, re, sys
t0, t1, t2 = map(float, sys.argv[1:4])
log = open("bench/out/llama-ppl.log").read()
m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", log)
ours = json.load(open("bench/out/leanlm-ppl.json"))["perplexity"]
print("| metric | llama.cpp | leanlm | ratio |")
print("|---|---|---|---|")
print(f"| WikiText-2 PPL, ctx 512, {ours['chunks']} chunks | {m.group(1)} ± {m.group(2)} | {ours['ppl']:.4f} ± {ours['ppl_stderr']:.4f} | {ours['ppl']/float(m.group(1)):.4f} |")
print(f"| perplexity wall time (s) | {t1-t0:.0f} | {t2-t1:.0f} | {(t2-t1)/(t1-t0):.2f}× |")
hs_lines = [l for l in open("bench/out/llama-hs.log") if re.match(r"^\d+\t", l)]
llama_hs = float(hs_lines[-1].split("\t")[1].rstrip("%"))
hs = json.load(open("bench/out/leanlm-hs.json"))["hellaswag"]
print(f"| HellaSwag acc_norm, {hs['tasks']} tasks | {llama_hs:.2f}% | {100*hs['acc_norm']:.2f}% ± {100*hs['acc_norm_stderr']:.2f} | {100*hs['acc_norm']-llama_hs:+.2f} points |")
print(f"| HellaSwag acc (sum of log-probs) | – | {100*hs['acc']:.2f}% ± {100*hs['acc_stderr']:.2f} | |")
PY
