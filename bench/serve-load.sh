#!/usr/bin/env bash
# The same OpenAI-client load against `leanlm serve` and llama-server (built from the same
# llama.cpp source as every peer figure), on one model, at --parallel 1 and 4, in one run.
# Each server gets the same threads and per-slot context; the load is
# bench/serve-openai.py's (CLIENTS concurrent clients x REQUESTS requests of TOKENS tokens).
#
#   bench/serve-load.sh [MODEL]     env: THREADS=2 CLIENTS=8 REQUESTS=25 TOKENS=64
#                                        PARALLEL="1 4" CTX=512 OUT=FILE (JSON lines)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$(scripts/fetch-model.sh)}
THREADS=${THREADS:-2}
CLIENTS=${CLIENTS:-8}
REQUESTS=${REQUESTS:-25}
TOKENS=${TOKENS:-64}
PARALLEL=${PARALLEL:-"1 4"}
CTX=${CTX:-512}
OUT=${OUT:-$(mktemp /tmp/serve-load.XXXX.jsonl)}
[ -e "$OUT" ] && [ -s "$OUT" ] && { echo "error: $OUT exists and is not empty" >&2; exit 1; }
PEER=$(PEER_EXTRA_TARGETS=llama-server bench/build-peer.sh)
cargo build --release --bin leanlm >&2
LEANLM=target/release/leanlm
PORT=18181

wait_up() { # url
  for _ in $(seq 1 300); do curl -sf "$1/health" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "error: no server at $1" >&2; return 1
}

run_one() { # label parallel command...
  local label=$1 np=$2; shift 2
  "$@" >/tmp/serve-load.server.log 2>&1 &
  local pid=$!
  if wait_up "http://127.0.0.1:$PORT"; then
    python3 bench/serve-openai.py --url "http://127.0.0.1:$PORT/v1" --clients "$CLIENTS" \
      --requests "$REQUESTS" --tokens "$TOKENS" --label "$label parallel $np" >>"$OUT"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for np in $PARALLEL; do
  run_one leanlm "$np" "$LEANLM" -t "$THREADS" serve -m "$MODEL" --port $PORT \
    --parallel "$np" --queue 64 -c "$CTX"
  # llama-server divides -c among its slots.
  run_one llama-server "$np" "$PEER/llama-server" -m "$MODEL" --port $PORT -t "$THREADS" \
    -np "$np" -c $((CTX * np)) --no-webui
done

python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["label"]: r["load"] for r in rows}
print(f"{'server':28} {'tok/s':>8} {'p50 s':>7} {'p95 s':>7} {'errors':>6} {'incomplete':>10}")
for label, l in by.items():
    print(f"{label:28} {l['aggregate_tokens_per_s']:8.1f} {l['latency_p50_s']:7.2f} "
          f"{l['latency_p95_s']:7.2f} {l['errors']:6} {l['incomplete']:10}")
for np in sorted({k.split()[-1] for k in by}):
    ours, peer = by.get(f"leanlm parallel {np}"), by.get(f"llama-server parallel {np}")
    if ours and peer and peer["aggregate_tokens_per_s"]:
        print(f"parallel {np}: leanlm / llama-server = "
              f"{ours['aggregate_tokens_per_s'] / peer['aggregate_tokens_per_s']:.2f}x")
one, four = by.get("leanlm parallel 1"), by.get("leanlm parallel 4")
if one and four:
    print(f"leanlm parallel 4 / parallel 1 = "
          f"{four['aggregate_tokens_per_s'] / one['aggregate_tokens_per_s']:.2f}x")
print(f"(JSON lines in {sys.argv[1]})")
EOF
