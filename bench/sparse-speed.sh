#!/usr/bin/env bash
# Does sparsity pay in speed? A Wanda 50% unstructured and a Wanda 2:4 model, each stored
# dense (Q8_0) and sparse (the same 8-bit values without the zeros: bitmap / 2:4
# layouts, `leanlm quantize --sparse=bitmap`: 2:4 where it holds, else the bitmap), decoded and prompted by `leanlm bench` with 1 and
# 2 threads, median of 5, dense and sparse alternating in one run.
# Usage: bench/sparse-speed.sh [NSAMPLES] [SEQLEN]   (calibration of the Wanda prune)
set -euo pipefail
cd "$(dirname "$0")/.."
NSAMPLES=${1:-16}; SEQLEN=${2:-512}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$MODEL" ] || scripts/fetch-model.sh
cargo build --release --quiet
L=target/release/leanlm
D=bench/out/sparse; mkdir -p $D
for p in "50:--sparsity 0.5" "24:--pattern 2:4"; do
  name=wanda${p%%:*}; args=${p#*:}
  [ -f $D/$name.f32.gguf ] || $L prune "$MODEL" -o $D/$name.f32.gguf --method wanda $args \
      --calib data/wikitext-2/valid.txt --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --outtype f32 2>/dev/null
  # Re-encoded every run: the sparse layouts belong to this build.
  $L quantize $D/$name.f32.gguf -o $D/$name.q8_0.gguf --type q8_0 2>/dev/null
  $L quantize $D/$name.f32.gguf -o $D/$name.sparse.gguf --type q8_0 --sparse=bitmap 2>/dev/null
done
echo "| model | threads | layout | MB streamed / token | pp512 t/s | tg128 t/s | tg sparse / dense |"
echo "|---|---|---|---|---|---|---|"
for name in wanda50 wanda24; do
  for t in 1 2; do
    for kind in q8_0 sparse; do
      $L bench $D/$name.$kind.gguf -p 512 -n 128 -r 5 -t $t --json > $D/bench-$name-$kind-t$t.json
    done
    python3 - $name $t $D/bench-$name-q8_0-t$t.json $D/bench-$name-sparse-t$t.json <<'PY'
import json, sys
name, t, dense, sparse = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
tg = lambda j: next(r for r in j["results"] if r["test"].startswith("tg"))
pp = lambda j: next(r for r in j["results"] if r["test"].startswith("pp"))
for kind, j in (("dense Q8_0", dense), ("sparse", sparse)):
    ratio = f"{tg(j)['tokens_per_sec'] / tg(dense)['tokens_per_sec']:.2f}×" if j is sparse else ""
    print(f"| {name} | {t} | {kind} | {j['weight_bytes_per_token'] / 1e6:.1f} | {pp(j)['tokens_per_sec']:.1f} | "
          f"{tg(j)['tokens_per_sec']:.1f} ({tg(j)['min']:.1f}–{tg(j)['max']:.1f}) | {ratio} |")
PY
  done
done
