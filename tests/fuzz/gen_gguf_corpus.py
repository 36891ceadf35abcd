#!/usr/bin/env python3
"""Write the seed corpus of fuzz_gguf (tests/fuzz/corpus/gguf): small valid GGUF files that
cover every value type, the shapes of a MoE model (expert tensors, tokenizer arrays, quantized
types) and both versions, plus a few broken ones near the interesting checks. Deterministic;
the whole corpus stays under 32 KiB and each seed under 8 KiB.
    python3 tests/fuzz/gen_gguf_corpus.py [OUTDIR]
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B",
          U64: "Q", I64: "q", F64: "d"}
# ggml type id -> (block size, bytes per block) for the types the seeds use
TYPES = {0: (1, 4), 1: (1, 2), 8: (32, 34), 12: (256, 144), 14: (256, 210), 30: (1, 2)}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(value(et, i) for i in items)
    return struct.pack("<" + SCALAR[t], v)


def gguf(kvs, tensors, version=3, align=32, tail_pad=False):
    """kvs: [(key, type, value)]; tensors: [(name, shape, ggml type)] laid out in order."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    off, infos = 0, []
    for name, shape, ty in tensors:
        bs, ts = TYPES[ty]
        n = 1
        for d in shape:
            n *= d
        nbytes = n // bs * ts
        infos.append((off, nbytes))
        out += s(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ty, off)
        off = (off + nbytes + align - 1) // align * align
    if tensors:
        out += b"\0" * (-len(out) % align)
        data = bytearray()
        for (o, nbytes) in infos:
            data += b"\0" * (o - len(data))
            data += bytes((i * 37 + 11) & 0xFF for i in range(nbytes))
        if tail_pad:
            data += b"\0" * (-len(data) % align)
        out += bytes(data)
    return out


def all_types(version):
    kvs = [
        ("t.u8", U8, 255), ("t.i8", I8, -128), ("t.u16", U16, 65535), ("t.i16", I16, -32768),
        ("t.u32", U32, 2**32 - 1), ("t.i32", I32, -2**31), ("t.f32", F32, 0.1),
        ("t.bool", BOOL, 1), ("t.str", STR, "hello"), ("t.str.empty", STR, ""),
        ("t.str.bad", STR, b"a\xff\xc3"), ("t.u64", U64, 2**64 - 1), ("t.i64", I64, -2**63),
        ("t.f64", F64, float("nan")), ("t.f64.inf", F64, float("inf")),
        ("a.u8", ARR, (U8, [0, 1, 255])), ("a.i16", ARR, (I16, [-1, 7])),
        ("a.f32", ARR, (F32, [0.5, -2.25, 1e30])), ("a.bool", ARR, (BOOL, [1, 0])),
        ("a.str", ARR, (STR, ["a", "", "xyz"])), ("a.u64", ARR, (U64, [2**64 - 1])),
        ("a.f64", ARR, (F64, [1e300, -0.0])), ("a.empty", ARR, (U32, [])),
        ("a.nested", ARR, (ARR, [(I32, [1, 2]), (U8, []), (STR, ["x"])])),
        ("a.deep", ARR, (ARR, [(ARR, [(U16, [7])])])),
        ("general.alignment", U32, 64),
    ]
    tensors = [("t0", [3], 0), ("t1", [2, 4], 1), ("t.q8", [32, 2], 8)]
    return gguf(kvs, tensors, version=version, align=64)


def moe(arch, n_layer=2, n_expert=4):
    kvs = [
        ("general.architecture", STR, arch), ("general.name", STR, "seed"),
        (arch + ".block_count", U32, n_layer), (arch + ".context_length", U32, 128),
        (arch + ".embedding_length", U32, 32), (arch + ".feed_forward_length", U32, 64),
        (arch + ".expert_feed_forward_length", U32, 32),
        (arch + ".attention.head_count", U32, 4), (arch + ".attention.head_count_kv", U32, 2),
        (arch + ".attention.layer_norm_rms_epsilon", F32, 1e-5),
        (arch + ".expert_count", U32, n_expert), (arch + ".expert_used_count", U32, 2),
        (arch + ".rope.freq_base", F32, 10000.0),
        ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "qwen2"),
        ("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "ab", "<s>", "</s>", "\u0120x"])),
        ("tokenizer.ggml.token_type", ARR, (I32, [1, 1, 1, 3, 3, 1])),
        ("tokenizer.ggml.merges", ARR, (STR, ["a b"])),
        ("tokenizer.ggml.bos_token_id", U32, 3), ("tokenizer.ggml.eos_token_id", U32, 4),
        ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ]
    tensors = [("token_embd.weight", [32, 6], 8), ("output_norm.weight", [32], 0)]
    for l in range(n_layer):
        b = "blk.%d." % l
        tensors += [
            (b + "attn_norm.weight", [32], 0), (b + "attn_q.weight", [32, 2], 1),
            (b + "ffn_gate_inp.weight", [32, n_expert], 0),
            (b + "ffn_gate_exps.weight", [32, 4, n_expert], 8),
            (b + "ffn_up_exps.weight", [32, 4, n_expert], 8),
            (b + "ffn_down_exps.weight", [32, 4, n_expert], 1),
        ]
    return gguf(kvs, tensors, tail_pad=True)


def kquants():
    return gguf([("general.architecture", STR, "llama")],
                [("q4k", [256, 1], 12), ("q6k", [256, 1], 14), ("bf16", [4], 30)])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                             "corpus", "gguf")
    os.makedirs(out, exist_ok=True)
    seeds = {
        "empty-v3": gguf([], []),
        "all-types-v3": all_types(3),
        "all-types-v2": all_types(2),
        "moe-qwen3moe": moe("qwen3moe"),
        "moe-llama": moe("llama", n_layer=1, n_expert=2),
        "kquants": kquants(),
    }
    at = seeds["all-types-v3"]
    seeds["cut-in-keys"] = at[:100]
    seeds["cut-in-tensors"] = at[:at.find(b"t.q8") + 3]
    seeds["cut-in-data"] = at[:-5]
    seeds["bad-magic"] = b"GGUX" + at[4:64]
    seeds["version-1"] = at[:4] + struct.pack("<I", 1) + at[8:64]
    seeds["bool-2"] = gguf([("b", BOOL, 2)], [])
    ov = bytearray(gguf([], [("a", [16], 0), ("b", [8], 0)]))  # then move b onto a
    i = ov.find(b"b\x01\x00\x00\x00") + 1 + 4 + 8 + 4  # b's offset field
    ov[i:i + 8] = struct.pack("<Q", 32)
    seeds["overlap"] = bytes(ov)
    total = 0
    for name, data in seeds.items():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(data)
        total += len(data)
    print("%d seeds, %d bytes in %s" % (len(seeds), total, out))


if __name__ == "__main__":
    main()
