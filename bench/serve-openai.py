#!/usr/bin/env python3
"""Drive an OpenAI-compatible server with the official `openai` package: chat, streaming
and completions checks, then a bounded load test (C concurrent clients x R requests of N
tokens each). Prints one JSON object: the checks, errors, incomplete answers, p50/p95
latency, and aggregate completion tokens per second.

    bench/serve-openai.py --url http://127.0.0.1:8080/v1 [--clients 8] [--requests 25]
                          [--tokens 64] [--api-key KEY] [--label NAME]

Without the package it makes a virtual environment (bench/out/.venv-openai), installs
`openai` there and runs itself again inside it.
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "out", ".venv-openai")

try:
    import openai  # noqa: F401
except ImportError:
    if os.environ.get("SERVE_OPENAI_IN_VENV"):
        sys.exit("openai is not importable even in the virtual environment")
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "openai==1.*"], check=True)
    os.environ["SERVE_OPENAI_IN_VENV"] = "1"
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])

from openai import AsyncOpenAI  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works to a child.",
    "List some facts about the planet Mars.",
    "Describe a walk through a forest in autumn.",
    "What makes bread rise? Explain in detail.",
    "Tell me about the history of the printing press.",
    "How do bees make honey?",
    "Describe the water cycle step by step.",
]


async def checks(client, model, tokens):
    out = {}
    r = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=tokens, temperature=0)
    c = r.choices[0]
    out["chat"] = {"finish_reason": c.finish_reason, "completion_tokens": r.usage.completion_tokens,
                   "chars": len(c.message.content or "")}
    pieces, usage = [], None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=tokens, temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    out["stream"] = {"same_text": "".join(pieces) == (c.message.content or ""),
                     "completion_tokens": usage.completion_tokens if usage else None}
    r = await client.completions.create(model=model, prompt="The capital of France is",
                                        max_tokens=16, temperature=0)
    out["completion"] = {"finish_reason": r.choices[0].finish_reason,
                         "completion_tokens": r.usage.completion_tokens}
    return out


async def load(client, model, clients, requests, tokens):
    latencies, tokens_out, errors, incomplete = [], 0, [], 0

    async def one_client(k):
        nonlocal tokens_out, incomplete
        for i in range(requests):
            prompt = PROMPTS[(k + i) % len(PROMPTS)]
            t0 = time.perf_counter()
            try:
                r = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=tokens, temperature=0)
            except Exception as e:  # every failure counts, whatever its kind
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            latencies.append(time.perf_counter() - t0)
            c = r.choices[0]
            if c.finish_reason not in ("stop", "length") or r.usage is None:
                incomplete += 1
                continue
            if c.finish_reason == "length" and r.usage.completion_tokens != tokens:
                incomplete += 1
            tokens_out += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    return {"clients": clients, "requests_per_client": requests, "max_tokens": tokens,
            "answers": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "incomplete": incomplete, "completion_tokens": tokens_out, "wall_s": wall,
            "aggregate_tokens_per_s": tokens_out / wall if wall > 0 else 0.0,
            "latency_p50_s": pct(0.50), "latency_p95_s": pct(0.95)}


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--label", default="")
    ap.add_argument("--skip-checks", action="store_true")
    a = ap.parse_args()
    client = AsyncOpenAI(base_url=a.url, api_key=a.api_key, max_retries=0, timeout=600)
    models = await client.models.list()
    model = models.data[0].id
    result = {"label": a.label, "url": a.url, "model": model}
    if not a.skip_checks:
        result["checks"] = await checks(client, model, a.tokens)
    result["load"] = await load(client, model, a.clients, a.requests, a.tokens)
    print(json.dumps(result))


asyncio.run(main())
