#!/usr/bin/env python3
"""How far llama.cpp built on this machine is from the llama.cpp fixtures (issue 2).

The fixtures in crates/leanlm/tests/fixtures/llama_cpp/ were recorded once, by
bench/make-fixtures.py, with llama.cpp built on the machine of that day. This script
builds the same llama.cpp here (bench/build-peer.sh), reruns the same commands and
compares: greedy continuations (llama-simple, 8 prompts x 32 tokens) and the 512-token
log-prob window (llama-perplexity --kl-divergence-base). It also runs leanlm's own
greedy decoding on the same prompts against both.

Both engines round activations to 8 bits, and which way a value rounds depends on the
last bits of everything before it; so the greedy path depends on the CPU's instruction
set and the kernels' summation order, in llama.cpp as in leanlm. Prints one JSON object.
Usage: bench/check-llama-drift.py
"""
import importlib.util, json, os, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("fixtures", os.path.join(ROOT, "bench", "make-fixtures.py"))
fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixtures)
FX = fixtures.OUT


def greedy_matches(continuations, cases):
    return sum(c == case["continuation"] for c, case in zip(continuations, cases))


def main():
    bin_dir = fixtures.run([os.path.join(ROOT, "bench", "build-peer.sh")]).strip()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    leanlm = os.path.join(ROOT, "target", "release", "leanlm")
    cases = json.load(open(os.path.join(FX, "greedy.json")))["cases"]

    llama_here, ours = [], []
    for case in cases:
        p = case["prompt"]
        text = fixtures.run([os.path.join(bin_dir, "llama-simple"), "-m", fixtures.MODEL, "-n", "32", p])
        llama_here.append(text[len(p):].removesuffix("\n"))
        out = json.loads(fixtures.run([leanlm, "generate", fixtures.MODEL, "-p", p, "-n", "32", "--json"]))
        ours.append(out["text"])

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.kld")
        fixtures.run([os.path.join(bin_dir, "llama-perplexity"), "-m", fixtures.MODEL, "-f", fixtures.WIKI,
                      "-c", "512", "--chunks", "1", "-t", "2", "--kl-divergence-base", base])
        _, _, here = fixtures.read_logits(base)
    recorded = json.load(open(os.path.join(FX, "logprobs.json")))["positions"]
    diffs, top1 = [], 0
    for h, r in zip(here, recorded):
        hd = {t: lp for t, lp in h["top"]}
        diffs += [abs(hd[t] - lp) for t, lp in r["top"] if t in hd]
        top1 += h["top"][0][0] == r["top"][0][0]

    print(json.dumps({
        "cpu_avx512f": "avx512f" in open("/proc/cpuinfo").read(),
        "greedy_prompts": len(cases),
        "llama_here_equal_to_fixture": greedy_matches(llama_here, cases),
        "leanlm_equal_to_fixture": greedy_matches(ours, cases),
        "leanlm_equal_to_llama_here": sum(a == b for a, b in zip(ours, llama_here)),
        "logprobs_llama_here_vs_fixture": {
            "mean_abs_diff_nats": sum(diffs) / len(diffs),
            "tokens_compared": len(diffs),
            "top1_agree": f"{top1}/{len(recorded)}",
        },
    }, indent=1))


if __name__ == "__main__":
    main()
