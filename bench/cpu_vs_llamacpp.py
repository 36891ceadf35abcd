#!/usr/bin/env python3
"""Summarize bench/cpu_vs_llamacpp.sh output (JSON lines) as a markdown table.

For each model and test (pp512, tg128, pp128): the median over rounds of each engine's mean
tok/s, the min..max of those means, the expertd/llama.cpp ratio of the medians, and for decode
the bandwidth it implies (expertd's decode_weight_bytes_per_token x tok/s) against the median
of the memory-bandwidth probe. usage: cpu_vs_llamacpp.py OUT.jsonl
"""
import json
import os
import statistics
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    bw = [r["data"]["membw_gb_s"] for r in rows if r["tag"] == "membw"]
    loads = [r["load"] for r in rows]
    res = {}  # (model, test, engine) -> [tok/s per round]
    bytes_per_tok = {}
    for r in rows:
        d, m = r["data"], os.path.basename(r["model"])
        if r["tag"].startswith("expertd"):
            if d.get("n_prompt"):
                res.setdefault((m, "pp%d" % d["n_prompt"], "expertd"), []).append(d["prefill_tok_s"])
            if d.get("n_gen"):
                res.setdefault((m, "tg%d" % d["n_gen"], "expertd"), []).append(d["decode_tok_s"])
                bytes_per_tok[m] = d["decode_weight_bytes_per_token"]
        elif r["tag"].startswith("llama-bench"):
            for t in d:
                test = "pp%d" % t["n_prompt"] if t["n_prompt"] else "tg%d" % t["n_gen"]
                res.setdefault((m, test, "llama.cpp"), []).append(t["avg_ts"])
    bwm = statistics.median(bw) if bw else float("nan")
    print("memory read bandwidth (median of %d probes): %.1f GB/s (range %.1f..%.1f); load average %.1f..%.1f"
          % (len(bw), bwm, min(bw, default=0), max(bw, default=0), min(loads), max(loads)))
    print()
    print("| model | test | expertd tok/s | llama.cpp tok/s | ratio | expertd GB/s (% of membw) | llama.cpp GB/s |")
    print("|---|---|---|---|---|---|---|")
    for m in sorted({k[0] for k in res}):
        for test in ("tg128", "pp512", "pp128"):
            x, l = res.get((m, test, "expertd"), []), res.get((m, test, "llama.cpp"), [])
            if not x and not l:
                continue
            xm = statistics.median(x) if x else float("nan")
            lm = statistics.median(l) if l else float("nan")
            cell = lambda v, med: "%.1f (%.1f..%.1f)" % (med, min(v), max(v)) if v else "-"
            gb = ""
            lgb = ""
            if test.startswith("tg") and m in bytes_per_tok:
                g = bytes_per_tok[m] * xm / 1e9
                gb = "%.1f (%.0f%%)" % (g, 100 * g / bwm)
                lgb = "%.1f" % (bytes_per_tok[m] * lm / 1e9)
            print("| %s | %s | %s | %s | %.2fx | %s | %s |" % (m, test, cell(x, xm), cell(l, lm), xm / lm, gb, lgb))


if __name__ == "__main__":
    main()
