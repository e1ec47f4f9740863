#!/usr/bin/env bash
# Distillation benchmarks on SmolLM2-135M (2-core CPU): heal a depth-pruned model
# (6 blocks removed by block influence) and a Wanda 50% model (masks kept), and train a
# 10-block draft from the teacher's blocks; WikiText-2 test PPL (ctx 512, first CHUNKS
# chunks) and HellaSwag (1,000 tasks) before and after each, and the draft's acceptance
# in speculative decoding. Resumable: finished files are kept; a killed distillation
# continues from its checkpoint.
#   STEPS_DEPTH (72)  STEPS_WANDA (15)  STEPS_DRAFT (20)  LR (2e-4; 3e-4 for the draft)  CHUNKS (100)
#   Usage: bench/distill-suite.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$MODEL" ] || scripts/fetch-model.sh
cargo build --release --quiet
OUT=bench/out/distill
mkdir -p "$OUT"
leanlm=target/release/leanlm
VALID=data/wikitext-2/valid.txt
TEST=data/wikitext-2-raw/wiki.test.raw
HS=data/hellaswag/hellaswag_val_1000.txt
CHUNKS=${CHUNKS:-100}
LR=${LR:-2e-4}
calib=(--calib "$VALID" --nsamples 64 --seqlen 512 --seed 0)

[ -f "$OUT/depth-6.gguf" ] || $leanlm prune "$MODEL" -o "$OUT/depth-6.gguf" --structured layers=6 "${calib[@]}" --outtype f16
[ -f "$OUT/wanda50.gguf" ] || $leanlm prune "$MODEL" -o "$OUT/wanda50.gguf" --method wanda --sparsity 0.5 "${calib[@]}" --outtype f16

distill() { # name student-args... ; steps from $STEPS
  local name=$1; shift
  [ -f "$OUT/$name.gguf" ] && return
  local resume=()
  [ -f "$OUT/$name.gguf.ckpt" ] && resume=(--resume)
  $leanlm distill --teacher "$MODEL" "$@" -o "$OUT/$name.gguf" --data "$VALID" --steps "$STEPS" \
      --lr "${RUN_LR:-$LR}" --warmup "${RUN_WARMUP:-5}" --eval-every 36 --eval-ppl "$TEST" --eval-chunks 8 "${resume[@]}" --json > "$OUT/$name.json"
}
STEPS=${STEPS_DEPTH:-72} distill depth-6-kd --student "$OUT/depth-6.gguf"
STEPS=${STEPS_WANDA:-15} RUN_WARMUP=3 distill wanda50-kd --student "$OUT/wanda50.gguf"
DRAFT_LAYERS=0,3,6,9,12,15,18,21,24,29
STEPS=${STEPS_DRAFT:-20} RUN_LR=3e-4 RUN_WARMUP=3 distill draft10-kd --init-from-teacher layers=$DRAFT_LAYERS

evaluate() { # model name
  [ -f "$OUT/$2.eval.json" ] || $leanlm eval "$1" --ppl "$TEST" --chunks "$CHUNKS" --hellaswag "$HS" --json > "$OUT/$2.eval.json"
}
evaluate "$MODEL" teacher
for m in depth-6 depth-6-kd wanda50 wanda50-kd draft10-kd; do evaluate "$OUT/$m.gguf" "$m"; done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ev = lambda n: json.load(open(f"{out}/{n}.eval.json"))
ppl = lambda n: ev(n)["perplexity"]["ppl"]
hs = lambda n: 100 * ev(n)["hellaswag"]["acc_norm"]
dense = ppl("teacher")
print(f"teacher (Q4_1): PPL {dense:.3f}, HellaSwag acc_norm {hs('teacher'):.2f}%\n")
print("| student | PPL before | PPL after | gap recovered | HellaSwag before | after | train tok/s | peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for base in ("depth-6", "wanda50"):
    kd = base + "-kd"
    s = json.load(open(f"{out}/{kd}.json"))
    b, a = ppl(base), ppl(kd)
    rec = (b - a) / (b - dense)
    print(f"| {base} | {b:.3f} | {a:.3f} | {100*rec:.0f}% | {hs(base):.2f}% | {hs(kd):.2f}% | {s['train_tokens_per_s']:.1f} | {s['peak_rss_bytes']/1e9:.2f} GB |")
PY

# The draft: acceptance of its proposals by the teacher in greedy speculative decoding
# (k = 4, 64 tokens after each of 8 WikiText-2 validation prompts), and decode speed.
python3 - "$MODEL" "$OUT/draft10-kd.gguf" <<'PY'
import json, subprocess, sys, statistics
model, draft = sys.argv[1], sys.argv[2]
lines = [l.strip() for l in open("data/wikitext-2/valid.txt", encoding="utf-8") if len(l.strip()) > 200][:8]
def run(args):
    res = []
    for pr in lines:
        cmd = ["target/release/leanlm", "generate", model, "-p", pr[:300], "-n", "64", "-t", "2", "--ignore-eos", "--json"] + args
        res.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return res
plain, spec = run([]), run(["--draft", draft, "--draft-k", "4"])
s = [r["speculative"]["stats"] for r in spec]
acc = sum(x["accepted"] for x in s) / max(1, sum(x["drafted"] for x in s))
tps = lambda rs: statistics.median(r["decode_tokens_per_sec"] for r in rs)
same = sum(a["tokens"] == b["tokens"] for a, b in zip(plain, spec))
print(f"\ndraft {draft}: acceptance {100*acc:.1f}%, decode {tps(spec):.1f} t/s vs plain {tps(plain):.1f} t/s "
      f"({tps(spec)/tps(plain):.2f}×), outputs identical to plain greedy: {same}/{len(plain)}")
PY
