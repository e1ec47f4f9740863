#!/usr/bin/env python3
"""Load a leanlm-written Hugging Face folder with transformers and measure WikiText-2
perplexity with llama.cpp's protocol (chunks of CTX tokens, second half scored, BOS
first only where the tokenizer adds one), for comparison with
`leanlm eval DIR --ppl wiki.test.raw -c CTX --chunks N`.

Needs torch and transformers (not installed by the project; run where they are):
    python3 bench/check-hf.py OUT_DIR [--chunks 20] [--ctx 512]
"""
import argparse
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--text", default="data/wikitext-2-raw/wiki.test.raw")
p.add_argument("--chunks", type=int, default=20)
p.add_argument("--ctx", type=int, default=512)
a = p.parse_args()

tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
# newline="": the text as llama.cpp reads it (wiki.test.raw has CRLF line ends).
text = open(a.text, encoding="utf-8", newline="").read()
ids = tok(text, add_special_tokens=False)["input_ids"]
# llama.cpp tokenizes the whole text with BOS in front, and puts BOS first in every
# chunk, only when the model's tokenizer adds BOS (SmolLM2's does not).
bos = tok.bos_token_id
add_bos = bos is not None and tok("x")["input_ids"][:1] == [bos]
if add_bos:
    ids = [bos] + ids
print(f"{len(ids)} tokens, BOS {'added' if add_bos else 'not added'}")
nll, count = 0.0, 0
with torch.no_grad():
    for c in range(min(a.chunks, len(ids) // a.ctx)):
        chunk = ids[c * a.ctx:(c + 1) * a.ctx]
        if add_bos:
            chunk = [bos] + chunk[1:]
        logits = model(torch.tensor([chunk])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        first = a.ctx // 2
        for i in range(first, a.ctx - 1):
            nll -= logp[i, chunk[i + 1]].item()
            count += 1
print(f"transformers: {model.config.num_hidden_layers} layers, PPL {math.exp(nll / count):.4f} "
      f"over {count} tokens ({a.chunks} chunks of {a.ctx})")
