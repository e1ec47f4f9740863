#!/usr/bin/env python3
"""Record llama.cpp's outputs on the default model as test fixtures.

llama.cpp comes from the PyPI llama-cpp-python==0.3.36 source package (vendor/llama.cpp),
built with cmake by bench/build-peer.sh. Writes into crates/leanlm/tests/fixtures/llama_cpp/:
  wiki_test_ids.u16.gz  llama-tokenize --no-parse-special on all of wiki.test.raw (u16 LE, gzip)
  greedy.json           llama-simple greedy continuations (32 tokens) of eight prompts
  logprobs.json         llama-perplexity --kl-divergence-base, ctx 512, first chunk of
                        wiki.test.raw: top-16 log-probs at each of the 255 scored positions
  gemma3-270m/wiki_test_ids.u32.gz
                        llama-tokenize --no-parse-special on all of wiki.test.raw with the
                        Gemma 3 270M vocabulary (SentencePiece; u32 LE, gzip); the model is
                        fetched by scripts/fetch-model.sh gemma3-270m
  gemma3-270m/greedy.json, gemma3-270m/logprobs.json
                        the same two records as above, on Gemma 3 270M Q4_K_M

  bench/make-fixtures.py [--only gemma3-270m]   (--only: record that model's files alone)
"""
import gzip, json, os, struct, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
WIKI = os.path.join(ROOT, "data", "wikitext-2-raw", "wiki.test.raw")
OUT = os.path.join(ROOT, "crates", "leanlm", "tests", "fixtures", "llama_cpp")
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "In 1969, Neil Armstrong",
    "Water boils at a temperature of",
    "My favourite recipe for a quick dinner is",
    "The most important rule of writing good software is",
]
TOP = 16


def run(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def read_logits(path):
    """A llama-perplexity --kl-divergence-base file (one chunk): its context length, its
    tokens, and llama.cpp's top log-probs at each scored position (the second half)."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"_logits_"
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", raw, 8)
    off = 20
    tokens = list(struct.unpack_from(f"<{n_ctx}i", raw, off))
    off += 4 * n_ctx * n_chunk
    nv = 2 * ((n_vocab + 1) // 2) + 4
    first = n_ctx // 2
    positions = []
    for i in range(n_ctx - 1 - first):
        scale, min_lp = struct.unpack_from("<ff", raw, off)
        q = struct.unpack_from(f"<{n_vocab}H", raw, off + 8)
        off += 2 * nv
        order = sorted(range(n_vocab), key=lambda t: -q[t])[:TOP]
        positions.append({"pos": first + i, "top": [[t, min_lp + scale * q[t]] for t in order]})
    return n_ctx, tokens, positions


def record_model(tool, model, out):
    """greedy.json and logprobs.json of one model into folder `out`."""
    greedy = []
    for p in PROMPTS:
        # llama-simple prints the BOS piece when the vocabulary renders it (Gemma's <bos>).
        text = run([tool("llama-simple"), "-m", model, "-n", "32", p]).removeprefix("<bos>")
        assert text.startswith(p), (p, text)
        greedy.append({"prompt": p, "continuation": text[len(p):].removesuffix("\n")})
    json.dump({"made_with": "llama-simple -n 32 (greedy), llama.cpp from llama-cpp-python==0.3.36",
               "cases": greedy}, open(os.path.join(out, "greedy.json"), "w"), indent=1, ensure_ascii=False)

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.kld")
        run([tool("llama-perplexity"), "-m", model, "-f", WIKI, "-c", "512", "--chunks", "1", "-t", "2",
             "--kl-divergence-base", base])
        n_ctx, tokens, positions = read_logits(base)
    json.dump({"made_with": "llama-perplexity -c 512 --chunks 1 --kl-divergence-base, log-probs quantized "
                            "by llama.cpp to 16 bits over a 16-nat range (error <= 1.3e-4)",
               "ctx": n_ctx, "tokens": tokens, "positions": positions},
              open(os.path.join(out, "logprobs.json"), "w"))


def main():
    only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--only" else None
    bin_dir = run([os.path.join(ROOT, "bench", "build-peer.sh")]).strip()
    tool = lambda name: os.path.join(bin_dir, name)
    os.makedirs(OUT, exist_ok=True)

    gemma = os.path.join(ROOT, run([os.path.join(ROOT, "scripts", "fetch-model.sh"), "gemma3-270m"]).strip())
    gemma_out = os.path.join(OUT, "gemma3-270m")
    os.makedirs(gemma_out, exist_ok=True)
    if only == "gemma3-270m":
        record_model(tool, gemma, gemma_out)
        print("fixtures written to", gemma_out)
        return

    ids = json.loads(run([tool("llama-tokenize"), "-m", MODEL, "-f", WIKI, "--ids", "--log-disable", "--no-parse-special"]))
    with gzip.open(os.path.join(OUT, "wiki_test_ids.u16.gz"), "wb", compresslevel=9) as f:
        f.write(struct.pack(f"<{len(ids)}H", *ids))
    print(f"wiki.test.raw: {len(ids)} tokens")

    ids = json.loads(run([tool("llama-tokenize"), "-m", gemma, "-f", WIKI, "--ids",
                          "--log-disable", "--no-parse-special"]))
    with open(os.path.join(gemma_out, "wiki_test_ids.u32.gz"), "wb") as f:
        f.write(gzip.compress(struct.pack(f"<{len(ids)}I", *ids), compresslevel=9, mtime=0))
    print(f"wiki.test.raw, Gemma 3 vocabulary: {len(ids)} tokens")

    record_model(tool, MODEL, OUT)
    record_model(tool, gemma, gemma_out)
    print("fixtures written to", OUT)


if __name__ == "__main__":
    sys.exit(main())
