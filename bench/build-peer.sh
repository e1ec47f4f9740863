#!/usr/bin/env bash
# Build the peer, llama.cpp, from the PyPI llama-cpp-python source package (its
# vendor/llama.cpp), once, into bench/.peer (ignored by git). Prints the bin folder.
#   LLAMA_CPP_DIR=/path/to/llama.cpp  reuse an existing checkout+build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
if [ -n "${LLAMA_CPP_DIR:-}" ]; then
  src="$LLAMA_CPP_DIR"
else
  peer=bench/.peer
  src="$peer/llama_cpp_python-$VERSION/vendor/llama.cpp"
  if [ ! -f "$src/CMakeLists.txt" ]; then
    mkdir -p "$peer"
    python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$peer" >&2
    tar -xzf "$peer/llama_cpp_python-$VERSION.tar.gz" -C "$peer"
  fi
fi
bin="$src/build/bin"
need=(llama-bench llama-perplexity llama-tokenize llama-simple ${PEER_EXTRA_TARGETS:-})
# PEER_EXTRA_TARGETS: more tools an issue needs, e.g. "llama-quantize llama-imatrix".
missing=0
for t in "${need[@]}"; do [ -x "$bin/$t" ] || missing=1; done
if [ "$missing" = 1 ]; then
  command -v cmake >/dev/null || { echo "cmake is needed: python3 -m pip install cmake (or apt-get install -y cmake)" >&2; exit 1; }
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_TESTS=OFF >&2
  cmake --build "$src/build" -j"$(nproc)" --target "${need[@]}" >&2
fi
echo "$(cd "$bin" && pwd)"
