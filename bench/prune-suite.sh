#!/usr/bin/env bash
# Prune the default model every way issue "Pruning" lists, then measure WikiText-2 test
# perplexity (ctx 512, llama.cpp protocol) of each output beside the dense f32 model it
# came from. Outputs and logs go to bench/out/prune (ignored); finished outputs are kept
# and skipped on a rerun, so an interrupted suite resumes where it stopped.
#   NSAMPLES / SEQLEN   calibration windows (default 128 × 2048, the papers' setting)
#   CHUNKS              perplexity chunks (default: the whole file)
#   VARIANTS            space-separated subset of the names below
# Prints a markdown table for docs/benchmarks.md.  Usage: bench/prune-suite.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CALIB=data/wikitext-2/valid.txt
WIKI=data/wikitext-2-raw/wiki.test.raw
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-2048}
OUT=bench/out/prune
[ -f "$MODEL" ] || scripts/fetch-model.sh
cargo build --release --quiet
mkdir -p "$OUT"
leanlm=target/release/leanlm
calib=(--calib "$CALIB" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --seed 0)
chunk_args=()
[ -n "${CHUNKS:-}" ] && chunk_args=(--chunks "$CHUNKS")

declare -A ARGS=(
  [dense]="--method magnitude --sparsity 0"
  [magnitude50]="--method magnitude --sparsity 0.5"
  [wanda50]="--method wanda --sparsity 0.5 ${calib[*]}"
  [wanda24]="--method wanda --pattern 2:4 ${calib[*]}"
  [sparsegpt50]="--method sparsegpt --sparsity 0.5 ${calib[*]}"
  [sparsegpt24]="--method sparsegpt --pattern 2:4 ${calib[*]}"
  [owl_wanda50]="--method wanda --sparsity 0.5 --owl ${calib[*]}"
  [depth-4]="--structured layers=4 ${calib[*]}"
)
ORDER=${VARIANTS:-"dense magnitude50 wanda50 wanda24 sparsegpt50 sparsegpt24 owl_wanda50 depth-4"}

for v in $ORDER; do
  gguf="$OUT/$v.gguf"
  if [ ! -f "$gguf" ] || [ ! -s "$OUT/$v.prune.json" ]; then
    # f32 output: the perplexity measures pruning alone, as the papers do.
    # shellcheck disable=SC2086
    $leanlm prune "$MODEL" -o "$gguf" ${ARGS[$v]} --outtype f32 -t 2 --json > "$OUT/$v.prune.json.tmp"
    mv "$OUT/$v.prune.json.tmp" "$OUT/$v.prune.json"
  fi
  if [ ! -f "$OUT/$v.ppl.json" ]; then
    $leanlm eval "$gguf" --ppl "$WIKI" -c 512 -t 2 "${chunk_args[@]}" --json > "$OUT/$v.ppl.json.tmp"
    mv "$OUT/$v.ppl.json.tmp" "$OUT/$v.ppl.json"
  fi
done

python3 - "$OUT" "$NSAMPLES" "$SEQLEN" $ORDER <<'PY'
import json, sys
out, ns, sl, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
ppl = {n: json.load(open(f"{out}/{n}.ppl.json"))["perplexity"] for n in names}
dense = ppl.get("dense")
print(f"Calibration {ns} × {sl} tokens of wikitext-2/valid.txt, seed 0; f32 outputs.\n")
print("| variant | sparsity of block weights | PPL | × dense | prune time (s) | peak RSS (MB) |")
print("|---|---|---|---|---|---|")
for n in names:
    p = json.load(open(f"{out}/{n}.prune.json"))
    r = ppl[n]
    ratio = f"{r['ppl'] / dense['ppl']:.2f}" if dense else "–"
    rss = p.get("peak_rss_bytes") or 0
    print(f"| {n} | {100 * p['sparsity']:.1f}% | {r['ppl']:.3f} ± {r['ppl_stderr']:.3f} | {ratio} "
          f"| {p['report']['seconds']:.0f} | {rss / 1e6:.0f} |")
print(f"\nPerplexity over {dense['chunks'] if dense else '?'} chunks of 512 tokens of wiki.test.raw.")
PY
