#!/usr/bin/env python3
"""faults.py - faults while `expertd serve` is under load; no accepted request may vanish.

  python3 tests/e2e/faults.py PORT MODEL SERVER_PID STORE [--requests N] [--sigterm-after S]

N requests (default 60: streaming and not, 8-40 tokens) go out from 12 client threads over
fresh connections, their starts spread evenly over 1.1 x the time to SIGTERM. Meanwhile:
  - from 0.5 s on, every expert extent of the packed store STORE is corrupted in place (one
    byte per 4 KiB page flipped) for 1.5 s, then restored (the server has the store open; with
    a small --expert-cache every request reads experts, so the ones in flight fail their
    checksum, are retried once, and fail with an explicit error);
  - a fifth of the streaming clients hang up after their second event (client disconnect);
  - after --sigterm-after seconds (default 6) the server gets SIGTERM and drains.
Each request ends in one of: completed (200 and a whole JSON body, or an SSE stream ending in
`data: [DONE]`), error_STATUS (a 4xx/5xx JSON error) or error_in_stream (an SSE error event), hung_up (our own
disconnect), refused (no connection: the server had stopped listening), or vanished (anything
else: a connection closed or reset without a complete answer). Prints one JSON line and exits
1 when any request vanished, or when nothing completed or nothing failed (the faults did not
take). Loopback only.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"


def corrupt(store, restore_from=None):
    with open(store, "r+b") as f:
        if restore_from is not None:
            f.write(restore_from)
            return None
        orig = f.read()
        data_off = struct.unpack_from("<Q", orig, 48)[0]
        b = bytearray(orig)
        for off in range(data_off + 100, len(b), 4096):
            b[off] ^= 0xFF
        f.seek(0)
        f.write(bytes(b))
        return orig


def one(port, model, i, rnd, min_tokens):
    stream = rnd.random() < 0.6
    hang_up = stream and rnd.random() < 0.2
    body = json.dumps({"model": model, "prompt": "Story %d: once upon a time" % i,
                       "max_tokens": rnd.randint(min_tokens, 40), "temperature": 0.7, "seed": i,
                       "ignore_eos": True, "stream": stream}).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        s = socket.create_connection((HOST, port), timeout=60)
    except OSError:
        return "refused"
    try:
        s.sendall(req)
        data = b""
        events = 0
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if hang_up and data.count(b"\ndata: ") + data.count(b"\r\ndata: ") >= 2:
                events += 1
                return "hung_up"
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            return "vanished"
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in head.lower():
            rest = dechunk(rest)
            if rest is None:
                return "vanished"
        if status != 200:
            try:
                return "error_%d" % status if "error" in json.loads(rest) else "vanished"
            except ValueError:
                return "vanished"
        if not stream:
            try:
                json.loads(rest)["choices"][0]["text"]
                return "completed"
            except (ValueError, KeyError, IndexError):
                return "vanished"
        lines = [l for l in rest.split(b"\n") if l.startswith(b"data: ")]
        if not lines or lines[-1].strip() != b"data: [DONE]":
            return "vanished"
        if any(b'"error"' in l for l in lines):
            return "error_in_stream"
        return "completed"
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        return "vanished"
    finally:
        s.close()


def metrics(port):
    """The fault counters from /metrics (read just before the SIGTERM)."""
    want = ("expertd_expert_cache_read_errors_total", "expertd_expert_cache_read_retries_total",
            "expertd_engine_preemptions_total", "expertd_requests_cancelled_total")
    try:
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return {}
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in want:
            out[parts[0].replace("expertd_", "")] = float(parts[1])
    return out


def dechunk(b):
    out = b""
    while True:
        line, sep, b = b.partition(b"\r\n")
        if not sep:
            return None
        try:
            n = int(line.split(b";")[0], 16)
        except ValueError:
            return None
        if n == 0:
            return out
        if len(b) < n + 2:
            return None
        out += b[:n]
        b = b[n + 2:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("model")
    ap.add_argument("pid", type=int)
    ap.add_argument("store")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--sigterm-after", type=float, default=6.0)
    ap.add_argument("--no-corrupt", action="store_true", help="leave the store alone")
    ap.add_argument("--burst", action="store_true",
                    help="start every request at once (keeps every slot busy: KV pressure)")
    ap.add_argument("--min-tokens", type=int, default=8, help="shortest max_tokens (to 40)")
    a = ap.parse_args()
    outcomes = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    next_i = [0]

    def worker(seed):
        rnd = random.Random(seed)
        while True:
            with lock:
                i = next_i[0]
                if i >= a.requests:
                    return
                next_i[0] += 1
            # spread the starts over the run, so requests meet every phase: before, during and
            # after the corruption, and around the SIGTERM
            delay = t0 + i * a.sigterm_after * 1.1 / a.requests - time.monotonic()
            if delay > 0 and not a.burst:
                time.sleep(delay)
            o = one(a.port, a.model, i, rnd, a.min_tokens)
            with lock:
                outcomes[o] = outcomes.get(o, 0) + 1

    ws = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for w in ws:
        w.start()
    time.sleep(0.5)
    if not a.no_corrupt:
        orig = corrupt(a.store)
        time.sleep(1.5)
        corrupt(a.store, restore_from=orig)
    time.sleep(max(0.0, a.sigterm_after - (time.monotonic() - t0)))
    counters = metrics(a.port)
    os.kill(a.pid, signal.SIGTERM)
    for w in ws:
        w.join()
    out = {"requests": a.requests, "outcomes": outcomes, "seconds": round(time.monotonic() - t0, 1),
           "counters_before_sigterm": counters}
    print(json.dumps(out))
    errors = sum(v for k, v in outcomes.items() if k.startswith("error"))
    bad = (outcomes.get("vanished", 0) or not outcomes.get("completed")
           or (not errors and not a.no_corrupt))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
