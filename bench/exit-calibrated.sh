#!/usr/bin/env bash
# Early exit at a calibrated threshold: choose the threshold on WikiText-2 validation
# text for a top-1 disagreement budget (default 1%), check the disagreement it realizes
# on the test text, and time its decoding beside plain decoding and llama-bench tg128 in
# one run (2 threads).
#   BUDGET (0.01)  CHUNKS (4)   Usage: bench/exit-calibrated.sh [MODEL]
#   LLAMA_CPP_DIR=/path/to/llama.cpp  reuse an existing llama.cpp build (see build-peer.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
BUDGET=${BUDGET:-0.01}
CHUNKS=${CHUNKS:-4}
[ -f "$MODEL" ] || scripts/fetch-model.sh
bin=$(bench/build-peer.sh)
cargo build --release --quiet
OUT=bench/out/exit
mkdir -p "$OUT"
leanlm="target/release/leanlm -t 2"
VALID=data/wikitext-2/valid.txt
TEST=data/wikitext-2-raw/wiki.test.raw
$leanlm eval "$MODEL" --ppl "$VALID" --chunks "$CHUNKS" --calibrate-exit "$BUDGET" --json > "$OUT/calibration.json"
T=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["chosen"]; print(c["threshold"] if c["threshold"] is not None else "never")' "$OUT/calibration.json")
echo "calibrated threshold (budget $BUDGET top-1 disagreement on $CHUNKS validation chunks): $T"
"$bin/llama-bench" -m "$MODEL" -p 0 -n 128 -r 5 -t 2 -o json > "$OUT/llama-tg128.json" 2>/dev/null
$leanlm bench "$MODEL" -p 64 -n 128 -r 5 --json > "$OUT/plain.json"
if [ "$T" != never ]; then
  $leanlm bench "$MODEL" -p 64 -n 128 -r 5 --text "$TEST" --early-exit "$T" --json > "$OUT/exit.json"
  $leanlm eval "$MODEL" --ppl "$TEST" --chunks "$CHUNKS" --base "$MODEL" --early-exit "$T" --json > "$OUT/exit-eval.json"
fi
python3 - "$OUT" "$T" <<'PY'
import json, os, sys
out, t = sys.argv[1], sys.argv[2]
peer = next(r["avg_ts"] for r in json.load(open(f"{out}/llama-tg128.json")) if r["n_gen"] > 0)
tg = lambda j: j["results"][1]["tokens_per_sec"]
plain = tg(json.load(open(f"{out}/plain.json")))
print(f"llama-bench tg128: {peer:.1f} t/s | leanlm plain tg128: {plain:.1f} t/s ({plain/peer:.2f}×)")
if t != "never":
    e = json.load(open(f"{out}/exit.json"))
    ev = json.load(open(f"{out}/exit-eval.json"))
    print(f"early exit {t}: {tg(e):.1f} t/s ({tg(e)/peer:.2f}× llama.cpp, {tg(e)/plain:.2f}× plain), "
          f"{e['adaptive']['mean_blocks']:.2f} blocks/token; on the test text: same top-1 "
          f"{100*ev['kld']['same_top']:.2f}%, PPL {ev['perplexity']['ppl']:.3f} vs {ev['kld']['ppl_base']:.3f}")
c = json.load(open(f"{out}/calibration.json"))["chosen"]
print(f"calibration: {c['mean_blocks']:.2f} blocks/token, top-1 differs {100*c['disagreement']:.2f}%, mean KLD {c['mean_kld']:.4f}")
PY
