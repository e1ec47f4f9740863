#!/usr/bin/env python3
"""Record the per-tensor types of GGUF files written by llama-quantize, for the test that
compares leanlm's mix rules with llama-quantize's (the tests of
crates/leanlm/src/transform/mix.rs).

    python3 bench/make-mix-fixtures.py MIX NAME FILE.gguf

reads only the header (its own reader, independent of leanlm's) and writes
crates/leanlm/tests/fixtures/mixes/NAME.json: the mix, the attention head counts, and
every 2-D tensor's name, row width (ne0) and type. Files used (docs/benchmarks.md):
the Q4_K_M files of scripts/fetch-model.sh (made by their publishers with llama-quantize),
and Q5_K_M / Q3_K_M copies of Qwen2.5-Coder-1.5B made here with
`llama-quantize --allow-requantize` (bench/build-peer.sh with PEER_EXTRA_TARGETS=llama-quantize).
"""
import json, os, struct, sys

TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
         9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
         30: "BF16"}
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def main():
    mix, name, path = sys.argv[1:4]
    f = open(path, "rb")
    rd = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
    rs = lambda: f.read(rd("Q")).decode("utf-8", "replace")

    def value(t):
        if t == 8:
            return rs()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [value(et) for _ in range(n)]
        return rd(SCALAR[t])

    assert f.read(4) == b"GGUF", "not a GGUF file"
    version, n_tensors, n_kv = rd("I"), rd("Q"), rd("Q")
    assert version in (2, 3)
    kv = {}
    for _ in range(n_kv):
        k = rs()
        kv[k] = value(rd("I"))
    arch = kv["general.architecture"]
    tensors = []
    for _ in range(n_tensors):
        tname = rs()
        dims = [rd("Q") for _ in range(rd("I"))]
        ttype = rd("I")
        rd("Q")  # offset
        if len(dims) == 2:
            tensors.append([tname, dims[0], TYPES.get(ttype, str(ttype))])
    out = {
        "mix": mix,
        "file": os.path.basename(path),
        "n_heads": kv[f"{arch}.attention.head_count"],
        "n_kv_heads": kv.get(f"{arch}.attention.head_count_kv", kv[f"{arch}.attention.head_count"]),
        "tensors": tensors,
    }
    dest = os.path.join(os.path.dirname(__file__), "..", "crates", "leanlm", "tests", "fixtures",
                        "mixes", name + ".json")
    with open(dest, "w") as w:
        head = {k: v for k, v in out.items() if k != "tensors"}
        w.write(json.dumps(head)[:-1] + ', "tensors": [\n')
        w.write(",\n".join(json.dumps(t) for t in tensors))
        w.write("\n]}\n")
    print(f"{dest}: {len(tensors)} tensors")


main()
