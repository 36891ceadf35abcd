#!/usr/bin/env python3
"""abuse.py - hostile traffic against `expertd serve` on loopback while a well-behaved client
keeps making valid requests; every valid request must succeed.

  python3 tests/e2e/abuse.py PORT MODEL_NAME [--hostile N] [--workers W] [--max-seconds S]

N hostile requests (default 10000) are spread over W threads (default 8), each a fresh TCP
connection carrying one of the kinds below (bounded in bytes and time: every socket has a
2-second timeout; the whole run stops at --max-seconds). Meanwhile one thread sends valid
completions (greedy, 4 tokens) back to back over its own connections and records each status.
Prints one JSON line: counts per hostile kind and per response class, valid ok/failed, and
exits 1 if any valid request failed, the server stopped accepting, or the run hit its time cap
before sending every hostile request. Loopback only: the address is 127.0.0.1.
"""
import argparse
import json
import random
import socket
import sys
import threading
import time

HOST = "127.0.0.1"


def body_req(path, body, extra=b"", method=b"POST"):
    return (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def kinds(model):
    m = model.encode()
    ok_prefix = b'{"model":"' + m + b'",'
    rnd = random.Random(7)
    yield_list = [
        ("garbage", lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))),
        ("bad_method", lambda: b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad_version", lambda: b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("no_crlf", lambda: b"GET /health HTTP/1.1\nHost: x\n\n"),
        ("header_no_colon", lambda: b"GET /health HTTP/1.1\r\nHost x\r\n\r\n"),
        ("huge_header", lambda: b"GET /health HTTP/1.1\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n"),
        ("many_headers", lambda: b"GET /health HTTP/1.1\r\n" + b"".join(
            b"X-%d: v\r\n" % i for i in range(400)) + b"\r\n"),
        ("bad_content_length", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Length: -5\r\n\r\n{}"),
        ("two_content_lengths", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"),
        ("cl_and_chunked", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5"
                                   b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bad_chunk", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n"),
        ("body_too_big_declared", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 99999999999\r\n\r\n"),
        ("truncated_body", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 100\r\n\r\n{\"model\":"),
        ("bad_json", lambda: body_req(b"/v1/completions", b'{"model": "' + m + b'", "prompt": ')),
        ("json_not_object", lambda: body_req(b"/v1/completions", b"[1,2,3]")),
        ("deep_json", lambda: body_req(b"/v1/completions", b"[" * 5000 + b"]" * 5000)),
        ("wrong_types", lambda: body_req(b"/v1/completions", ok_prefix +
                                         b'"prompt":1.5,"max_tokens":"x","n":[],"stop":{}}')),
        ("out_of_range", lambda: body_req(b"/v1/completions", ok_prefix +
                                          b'"prompt":"a","max_tokens":-1,"temperature":99}')),
        ("huge_n", lambda: body_req(b"/v1/completions", ok_prefix + b'"prompt":"a","n":100000}')),
        ("bad_token_ids", lambda: body_req(b"/v1/completions", ok_prefix +
                                           b'"prompt":[-1,99999999,3]}')),
        ("bad_utf8", lambda: body_req(b"/v1/completions", ok_prefix + b'"prompt":"\xff\xfe\xc3"}')),
        ("nul_in_json", lambda: body_req(b"/v1/completions", ok_prefix + b'"prompt":"a\\u0000b"}')),
        ("logit_bias_flood", lambda: body_req(b"/v1/completions", ok_prefix + b'"prompt":"a",'
                                              b'"logit_bias":{' + b",".join(
                                                  b'"%d":1' % i for i in range(3000)) + b"}}")),
        ("unknown_model", lambda: body_req(b"/v1/completions", b'{"model":"nope","prompt":"a"}')),
        ("chat_bad_role", lambda: body_req(b"/v1/chat/completions", ok_prefix +
                                           b'"messages":[{"role":"wizard","content":"x"}]}')),
        ("chat_bad_part", lambda: body_req(b"/v1/chat/completions", ok_prefix +
                                           b'"messages":[{"role":"user","content":[{"type":'
                                           b'"image_url","image_url":{"url":"x"}}]}]}')),
        ("path_traversal", lambda: b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("long_path", lambda: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("header_injection", lambda: b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"),
        ("half_request_close", lambda: b"POST /v1/completions HTTP/1.1\r\nHo"),
        ("stream_then_close", lambda: body_req(b"/v1/completions", ok_prefix +
                                               b'"prompt":"a","max_tokens":64,"stream":true}')),
    ]
    return yield_list


def send_one(payload, read=True):
    """One connection: send, read what comes back within the socket timeout. Returns the
    status code (int), 0 when the server closed without a response, -1 on a timeout/reset."""
    s = socket.create_connection((HOST, PORT), timeout=2)
    try:
        s.sendall(payload)
        if not read:
            return 0
        data = b""
        while b"\r\n" not in data and len(data) < 64:
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 "):
            return int(data[9:12])
        return 0
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        return -1
    finally:
        s.close()


def valid_one(model):
    body = json.dumps({"model": model, "prompt": "Hello there", "max_tokens": 4,
                       "temperature": 0}).encode()
    s = socket.create_connection((HOST, PORT), timeout=30)
    try:
        s.sendall(body_req(b"/v1/completions", body, b"Connection: close\r\n"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0
        if status == 200:
            json.loads(rest)["choices"][0]["text"]  # a real completion came back
        return status
    except Exception:  # noqa: BLE001 - any failure of a valid request is the finding
        return -1
    finally:
        s.close()


def main():
    global PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("model")
    ap.add_argument("--hostile", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=600)
    a = ap.parse_args()
    PORT = a.port
    ks = kinds(a.model)
    deadline = time.monotonic() + a.max_seconds
    lock = threading.Lock()
    sent = {k: 0 for k, _ in ks}
    classes = {}
    next_i = [0]
    stop_valid = threading.Event()
    valid = {"ok": 0, "failed": 0, "statuses": {}}

    def hostile_worker():
        while time.monotonic() < deadline:
            with lock:
                i = next_i[0]
                if i >= a.hostile:
                    return
                next_i[0] += 1
            name, make = ks[i % len(ks)]
            try:
                st = send_one(make())
            except OSError:
                st = -2  # could not even connect: counted, and checked below
            with lock:
                sent[name] += 1
                key = ("%dxx" % (st // 100)) if st > 0 else {0: "closed", -1: "timeout/reset",
                                                              -2: "connect failed"}[st]
                classes[key] = classes.get(key, 0) + 1

    def valid_worker():
        while not stop_valid.is_set() and time.monotonic() < deadline:
            st = valid_one(a.model)
            with lock:
                valid["statuses"][st] = valid["statuses"].get(st, 0) + 1
                valid["ok" if st == 200 else "failed"] += 1

    vt = threading.Thread(target=valid_worker)
    vt.start()
    ws = [threading.Thread(target=hostile_worker) for _ in range(a.workers)]
    t0 = time.monotonic()
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop_valid.set()
    vt.join()
    # and the server still answers a valid request after it all
    final = valid_one(a.model)
    out = {"hostile_sent": sum(sent.values()), "seconds": round(time.monotonic() - t0, 1),
           "by_kind": sent, "responses": classes, "valid_ok": valid["ok"],
           "valid_failed": valid["failed"], "valid_statuses": valid["statuses"],
           "final_valid_status": final}
    print(json.dumps(out))
    bad = (valid["failed"] or valid["ok"] == 0 or final != 200
           or out["hostile_sent"] < a.hostile or classes.get("connect failed", 0)
           or classes.get("5xx", 0))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
