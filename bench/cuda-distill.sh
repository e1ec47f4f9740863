#!/usr/bin/env bash
# The `cuda` feature on a GPU machine: build with candle's CUDA backend (needs nvcc and
# the CUDA toolkit), check that the student's forward and gradients on the GPU agree with
# the CPU (the library's distill tests run there too), then time a short distillation of
# the depth-pruned model on the GPU against the same run on the CPU.
#   STEPS (20)   Usage: bench/cuda-distill.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
STEPS=${STEPS:-20}
[ -f "$MODEL" ] || scripts/fetch-model.sh
command -v nvcc > /dev/null || { echo "nvcc not found: the cuda feature needs the CUDA toolkit" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cargo build --release --features cuda --quiet
LEANLM_TEST_DEVICE=cuda cargo test --release --features cuda -p leanlm --lib distill
OUT=bench/out/cuda
mkdir -p "$OUT"
leanlm=target/release/leanlm
[ -f "$OUT/depth-6.gguf" ] || $leanlm prune "$MODEL" -o "$OUT/depth-6.gguf" --structured layers=6 \
    --calib data/wikitext-2/valid.txt --nsamples 64 --seqlen 512 --outtype f16
for dev in cuda cpu; do
  rm -f "$OUT/kd-$dev.gguf"*
  $leanlm distill --teacher "$MODEL" --student "$OUT/depth-6.gguf" -o "$OUT/kd-$dev.gguf" \
      --data data/wikitext-2/valid.txt --steps "$STEPS" --eval-every 0 --device "$dev" \
      --json > "$OUT/kd-$dev.json"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for dev in ("cuda", "cpu"):
    s = json.load(open(f"{out}/kd-{dev}.json"))
    losses = [json.loads(l)["loss"] for l in open(s["log"]) if '"step"' in l and '"kind":"step"' in l]
    print(f"{dev}: {s['train_tokens_per_s']:.0f} train tok/s, final loss {losses[-1]:.4f}, peak RSS {s['peak_rss_bytes']/1e9:.2f} GB")
PY
