#!/usr/bin/env bash
# Speculative decoding on a real target/draft pair (issue 24): ours and llama.cpp's
# llama-speculative-simple on the same files, prompts (bench/prompts/speculative-pair.txt:
# six code prompts, four prose, each rendered as one chat turn), greedy, N tokens, 2
# threads, in one run. Per prompt and mode: tokens/s, acceptance, tokens per target pass,
# and whether the text equals plain greedy decoding.
#   N (128)  K (8: draft length, llama.cpp's --spec-draft-n-max)  PMIN (0.75)
#   PEER=0   skip llama.cpp (its build takes a while on two cores)
#   Usage: bench/speculative-pair.sh [TARGET DRAFT]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-$(scripts/fetch-model.sh qwen2.5-coder-1.5b)}
DRAFT=${2:-$(scripts/fetch-model.sh qwen2.5-coder-0.5b)}
N=${N:-128}
K=${K:-8}
PMIN=${PMIN:-0.75}
OUT=bench/out/speculative-pair
mkdir -p "$OUT"
cargo build --release --quiet
bin=""
if [ "${PEER:-1}" != 0 ]; then
  bin=$(PEER_EXTRA_TARGETS=llama-speculative-simple bench/build-peer.sh)
fi

python3 - "$TARGET" "$DRAFT" "$N" "$K" "$PMIN" "$OUT" "$bin" <<'PY'
import json, re, subprocess, sys
target, draft, n, k, pmin, out, peer = sys.argv[1:8]
prompts = [l.rstrip("\n").replace("\\n", "\n") for l in open("bench/prompts/speculative-pair.txt", encoding="utf-8") if l.strip()]
leanlm = "target/release/leanlm"
common = ["generate", target, "-t", "2", "--chat", "-n", n, "--ignore-eos", "--json"]
modes = [
    ("plain", []),
    ("draft", ["--draft", draft, "--draft-k", k, "--draft-p-min", pmin]),
    ("draft+lookup", ["--draft", draft, "--lookup", "3", "--draft-k", k, "--draft-p-min", pmin]),
    ("lookup", ["--lookup", "3", "--draft-k", k]),
]
rows = []
for i, p in enumerate(prompts):
    plain_tokens = None
    for name, args in modes:
        j = json.loads(subprocess.run([leanlm] + common + ["-p", p] + args, check=True, capture_output=True, text=True).stdout)
        s = j.get("speculative") or {}
        if name == "plain":
            plain_tokens = j["tokens"]
        rows.append({"prompt": i, "impl": "leanlm", "mode": name, "tps": j["decode_tokens_per_sec"],
                     "acceptance": s.get("acceptance_rate"), "per_pass": s.get("tokens_per_target_pass"),
                     "same_as_plain": j["tokens"] == plain_tokens})
        print(f"prompt {i} leanlm {name:13s} {j['decode_tokens_per_sec']:6.2f} t/s", file=sys.stderr)
    if peer:
        # The same chat turn as leanlm's --chat renders for Qwen2.5 (ChatML with its default system message).
        text = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n")
        for name, extra in [("plain", None), ("draft", ["-md", draft, "--spec-type", "draft-simple", "--spec-draft-n-max", k, "--draft-p-min", pmin])]:
            if extra is None:
                cmd = [f"{peer}/llama-simple", "-m", target, "-n", n, text]
                r = subprocess.run(cmd, capture_output=True, text=True)
                m = re.search(r"decoded (\d+) tokens in ([\d.]+) s, speed: ([\d.]+) t/s", r.stderr)
                rows.append({"prompt": i, "impl": "llama.cpp", "mode": name, "tps": float(m.group(3)) if m else None})
                continue
            cmd = [f"{peer}/llama-speculative-simple", "-m", target, "-p", text, "-n", n, "-t", "2", "--temp", "0", "-c", "4096", "--ignore-eos"] + extra
            r = subprocess.run(cmd, capture_output=True, text=True)
            log = r.stdout + r.stderr
            # The decode line: the first "speed:" in the log is the prompt's ("encoded").
            tps = re.search(r"decoded\s+\d+ tokens in\s+[\d.]+ s\w*, speed:\s*([\d.]+) t/s", log)
            acc = re.search(r"accept\s*=\s*([\d.]+)%", log)
            rows.append({"prompt": i, "impl": "llama.cpp", "mode": name, "tps": float(tps.group(1)) if tps else None,
                         "acceptance": float(acc.group(1)) / 100 if acc else None})
            print(f"prompt {i} llama.cpp {name} {rows[-1]['tps']} t/s", file=sys.stderr)
json.dump(rows, open(f"{out}/results.json", "w"), indent=1)

def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")
lines = ["| impl | mode | tokens/s (mean of prompts) | × our plain | acceptance | tokens per target pass | same text as plain |", "|---|---|---:|---:|---:|---:|---:|"]
base = mean(r["tps"] for r in rows if r["impl"] == "leanlm" and r["mode"] == "plain")
for impl, mode in dict.fromkeys((r["impl"], r["mode"]) for r in rows):
    rs = [r for r in rows if r["impl"] == impl and r["mode"] == mode]
    tps = mean(r["tps"] for r in rs)
    same = sum(bool(r.get("same_as_plain")) for r in rs) if impl == "leanlm" else None
    lines.append(f"| {impl} | {mode} | {tps:.2f} | {tps / base:.2f} | {mean(r.get('acceptance') for r in rs):.2f} | "
                 f"{mean(r.get('per_pass') for r in rs):.2f} | {'' if same is None else f'{same}/{len(rs)}'} |")
lines += ["", "Per prompt (leanlm: plain / draft / draft+lookup / lookup t/s, draft acceptance):", ""]
for i in range(len(prompts)):
    rs = {r["mode"]: r for r in rows if r["prompt"] == i and r["impl"] == "leanlm"}
    lines.append(f"- prompt {i}: " + " / ".join(f"{rs[m]['tps']:.2f}" for m, _ in modes)
                 + f", acceptance {rs['draft']['acceptance']:.2f}")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
