#!/usr/bin/env bash
# Decode speed of adaptive decoding against plain decoding and llama-bench's tg128, in one
# run, 2 threads: greedy generation of N tokens after P prompts (WikiText-2 validation
# lines, so acceptance rates reflect real text), for plain decoding, early exit at several
# thresholds, self-speculation (a sweep of exit layer E and draft length k), a draft model
# (a depth-pruned copy when DRAFT is unset: made here with `leanlm prune --structured`),
# and prompt lookup. Reports tokens/s, acceptance, mean blocks per token, and how many
# outputs differ from plain greedy.
#   N (64)  P (8)  DRAFT=path   Usage: bench/adaptive-suite.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
N=${N:-64}
P=${P:-8}
[ -f "$MODEL" ] || scripts/fetch-model.sh
bin=$(bench/build-peer.sh)
cargo build --release --quiet
OUT=bench/out/adaptive
mkdir -p "$OUT"
leanlm=target/release/leanlm
if [ -z "${DRAFT:-}" ]; then
  DRAFT=$OUT/draft-depth14.gguf
  [ -f "$DRAFT" ] || $leanlm prune "$MODEL" -o "$DRAFT" --structured layers=16 --outtype same \
      --calib data/wikitext-2/valid.txt --nsamples 16 --seqlen 512 -t 2 > /dev/null 2>&1
fi
"$bin/llama-bench" -m "$MODEL" -p 0 -n 128 -r 5 -t 2 -o json > "$OUT/llama-tg128.json" 2>/dev/null

python3 - "$MODEL" "$DRAFT" "$N" "$P" "$OUT" <<'PY'
import json, subprocess, sys, statistics
model, draft, n, p, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lines = [l.strip() for l in open("data/wikitext-2/valid.txt", encoding="utf-8") if len(l.strip()) > 200][:p]
prompts = [l[:300] for l in lines]
def run(args):
    res = []
    for pr in prompts:
        cmd = ["target/release/leanlm", "generate", model, "-p", pr, "-n", str(n), "-t", "2", "--ignore-eos", "--json"] + args
        res.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return res
plain = run([])
modes = [("plain", [])]
modes += [(f"early exit max-prob ≥ {t}", ["--early-exit", str(t)]) for t in (0.95, 0.9, 0.8)]
modes += [(f"self-speculative E={e} k={k}", ["--draft-layers", str(e), "--draft-k", str(k)]) for e in (8, 16, 24) for k in (2, 4)]
modes += [(f"draft model ({draft.split('/')[-1]}) k={k}", ["--draft", draft, "--draft-k", str(k)]) for k in (2, 4)]
modes += [("draft model, adaptive k", ["--draft", draft, "--adaptive"])]
modes += [(f"prompt lookup n=2 k={k}", ["--lookup", "2", "--draft-k", str(k)]) for k in (4, 8)]
peer = json.load(open(f"{out}/llama-tg128.json"))
peer_tg = next(r["avg_ts"] for r in peer if r["n_gen"] > 0)
print(f"llama-bench tg128 (2 threads, same run): {peer_tg:.1f} t/s\n")
print("| mode | decode t/s (median over prompts) | × llama.cpp tg128 | acceptance | tokens per target pass | blocks per token | outputs ≠ plain |")
print("|---|---|---|---|---|---|---|")
for name, args in modes:
    res = plain if not args else run(args)
    tps = statistics.median(r["decode_tokens_per_sec"] for r in res)
    diff = sum(r["tokens"] != q["tokens"] for r, q in zip(res, plain))
    acc = tpp = blocks = "–"
    if res[0].get("speculative"):
        s = [r["speculative"]["stats"] for r in res]
        acc = f"{100 * sum(x['accepted'] for x in s) / max(1, sum(x['drafted'] for x in s)):.0f}%"
        tpp = f"{sum(x['accepted'] + x['rounds'] for x in s) / sum(x['rounds'] for x in s):.2f}"
    if res[0].get("early_exit"):
        blocks = f"{statistics.mean(r['early_exit']['mean_layers'] for r in res):.1f}"
    print(f"| {name} | {tps:.1f} | {tps / peer_tg:.2f}× | {acc} | {tpp} | {blocks} | {diff}/{len(res)} |")
PY
