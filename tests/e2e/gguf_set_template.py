#!/usr/bin/env python3
"""gguf_set_template.py - copy a GGUF file with tokenizer.chat_template set to a template file's
text (replacing one it has), for the chat e2e tests: the fixture models carry no template.
Tensor data is copied unchanged; only the key/value section grows, and the data section is
re-aligned (tensor offsets are relative to it, so they stay valid).
    gguf_set_template.py IN.gguf TEMPLATE.jinja OUT.gguf
"""
import struct
import sys

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(b, pos, t):
    if t in SIZES:
        return pos + SIZES[t]
    if t == 8:
        (n,) = struct.unpack_from("<Q", b, pos)
        return pos + 8 + n
    if t == 9:
        et, n = struct.unpack_from("<IQ", b, pos)
        pos += 12
        for _ in range(n):
            pos = skip_value(b, pos, et)
        return pos
    raise ValueError(f"unknown GGUF value type {t}")


def main():
    src, tpl, dst = sys.argv[1:4]
    b = open(src, "rb").read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", b, 0)
    if magic != b"GGUF" or version not in (2, 3):
        sys.exit(f"{src}: not a GGUF v2/v3 file")
    pos, kvs, align = 24, [], 32
    for _ in range(n_kv):
        start = pos
        (kl,) = struct.unpack_from("<Q", b, pos)
        key = b[pos + 8:pos + 8 + kl].decode()
        (t,) = struct.unpack_from("<I", b, pos + 8 + kl)
        pos = skip_value(b, pos + 12 + kl, t)
        if key == "general.alignment":
            (align,) = struct.unpack_from("<I", b, pos - 4)
        if key != "tokenizer.chat_template":
            kvs.append(b[start:pos])
    tinfo_start = pos
    for _ in range(n_tensors):
        (nl,) = struct.unpack_from("<Q", b, pos)
        pos += 8 + nl
        (nd,) = struct.unpack_from("<I", b, pos)
        pos += 4 + 8 * nd + 4 + 8
    tinfo = b[tinfo_start:pos]
    data = b[(pos + align - 1) // align * align:]
    text = open(tpl, "rb").read()
    key = b"tokenizer.chat_template"
    kvs.append(struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(text)) + text)
    out = struct.pack("<4sIQQ", b"GGUF", version, n_tensors, len(kvs)) + b"".join(kvs) + tinfo
    out += b"\0" * ((-len(out)) % align)
    open(dst, "wb").write(out + data)


if __name__ == "__main__":
    main()
