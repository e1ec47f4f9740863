#!/usr/bin/env python3
"""Record chat templates rendered by Python's jinja2 as test fixtures.

jinja2 is configured as Hugging Face transformers' apply_chat_template configures it
(trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now, a tojson that
keeps non-ASCII text). Templates: SmolLM2-135M-Instruct's and Qwen2.5-Coder-0.5B-Instruct's
(read from their GGUF files, fetched by scripts/fetch-model.sh), leanlm's Gemma 3 default
(crates/leanlm/src/model/arch/gemma3.jinja) and a Llama 3 template written for the tests
(crates/leanlm/tests/fixtures/chat/llama3.jinja). Writes
crates/leanlm/tests/fixtures/chat/rendered.json: each template's text (recorded from the
model files where it comes from one) and its renderings of a few conversations.

  pip install jinja2   # 3.1.6 recorded the fixture
  bench/make-chat-fixtures.py
"""
import json, os, struct, subprocess, sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "leanlm", "tests", "fixtures", "chat", "rendered.json")

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "  Tell me a joke.  "}], True),
    ([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Good morning"},
      {"role": "assistant", "content": "Bonjour"}], False),
    ([{"role": "user", "content": "Ünïcödé ✓\n\nsecond line\n"}], True),
]


def gguf_string(path, key):
    """One string value of a GGUF file's metadata (no numpy needed)."""
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
        _, _, n_kv = struct.unpack("<IQQ", f.read(20))
        size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        def string():
            n, = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8")
        for _ in range(n_kv):
            k = string()
            t, = struct.unpack("<I", f.read(4))
            if t == 8:
                v = string()
                if k == key:
                    return v
            elif t == 9:
                et, n = struct.unpack("<IQ", f.read(12))
                if et == 8:
                    for _ in range(n):
                        string()
                else:
                    f.seek(size[et] * n, 1)
            else:
                f.seek(size[t], 1)
    raise KeyError(key)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def model(name):
    return os.path.join(ROOT, subprocess.run([os.path.join(ROOT, "scripts", "fetch-model.sh"), name],
                                             check=True, capture_output=True, text=True).stdout.strip())


def main():
    read = lambda rel: open(os.path.join(ROOT, rel)).read()
    templates = [
        ("smollm2", "tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf",
         gguf_string(model("smollm2-135m"), "tokenizer.chat_template"), "<|im_start|>", "<|im_end|>"),
        ("qwen2.5-coder", "tokenizer.chat_template of qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
         gguf_string(model("qwen2.5-coder-0.5b"), "tokenizer.chat_template"), "", "<|im_end|>"),
        ("gemma3", "crates/leanlm/src/model/arch/gemma3.jinja",
         read("crates/leanlm/src/model/arch/gemma3.jinja"), "<bos>", "<eos>"),
        ("llama3", "crates/leanlm/tests/fixtures/chat/llama3.jinja",
         read("crates/leanlm/tests/fixtures/chat/llama3.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
    ]
    env = environment()
    out = {"made_with": f"jinja2 {jinja2.__version__}, configured as transformers' apply_chat_template",
           "templates": []}
    for name, source, text, bos, eos in templates:
        t = env.from_string(text)
        cases = [{"messages": msgs, "add_generation_prompt": gen,
                  "rendered": t.render(messages=msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos)}
                 for msgs, gen in CONVERSATIONS]
        out["templates"].append({"name": name, "source": source, "template": text,
                                 "bos_token": bos, "eos_token": eos, "cases": cases})
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
