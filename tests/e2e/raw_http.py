#!/usr/bin/env python3
"""raw_http.py - raw-socket HTTP cases curl cannot express (pipelining, slow or partial
clients, idle connections), for tests/e2e/serve_test.sh. Loopback only, bounded in time.

usage: raw_http.py PORT CASE     prints what the case observed; exit 0 when it held.
"""
import socket
import sys
import time

PORT = int(sys.argv[1])
CASE = sys.argv[2]


def conn(timeout=10):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    return s


def recv_all(s, limit=1 << 20):
    out = b""
    while len(out) < limit:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        out += b
    return out


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def case_pipeline():
    # three requests in one write: answered in order on one connection, the last closes it
    s = conn()
    body = b'{"model":"mixtral-tiny-q8_0","prompt":"Hi","max_tokens":2,"seed":3}'
    reqs = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (len(body), body))
    s.sendall(reqs)
    out = recv_all(s)
    n = out.count(b"HTTP/1.1 200 OK")
    i1, i2, i3 = out.find(b'"status":"ok"'), out.find(b'"text_completion"'), out.find(b'"object":"list"')
    if n != 3 or not (0 <= i1 < i2 < i3):
        fail("pipelined responses: %d OK, order %d %d %d" % (n, i1, i2, i3))
    print("3 pipelined responses in order")


def case_chunked_expect():
    # chunked request body + Expect: 100-continue: 100 first, then the answer
    s = conn()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    first = s.recv(4096)
    if not first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        fail("no 100 Continue: %r" % first[:60])
    parts = [b'{"model":"mixtral-tiny-q8_0",', b'"prompt":"Hello","max_tokens":3}']
    for p in parts:
        s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
    s.sendall(b"0\r\n\r\n")
    out = first[25:] + recv_all(s)
    if b"HTTP/1.1 200 OK" not in out or b'"completion_tokens":3' not in out:
        fail("chunked body not answered: %r" % out[:200])
    print("100 Continue, chunked body decoded")


def case_header_timeout():
    # a client that stops in the middle of its headers gets 408 and is closed
    s = conn(timeout=15)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    out = recv_all(s)
    dt = time.time() - t0
    if not out.startswith(b"HTTP/1.1 408"):
        fail("expected 408, got %r after %.1fs" % (out[:40], dt))
    print("408 after %.1f s" % dt)


def case_idle_timeout():
    # an idle keep-alive connection is closed by the server
    s = conn(timeout=15)
    t0 = time.time()
    out = recv_all(s)
    dt = time.time() - t0
    if out != b"" or dt > 10:
        fail("idle connection: %r after %.1fs" % (out[:40], dt))
    print("idle connection closed after %.1f s" % dt)


def case_garbage():
    s = conn()
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    out = recv_all(s)
    if not out.startswith(b"HTTP/1.1 400") or b"Connection: close" not in out:
        fail("garbage: %r" % out[:80])
    print("garbage -> 400 and close")


def case_huge_headers():
    s = conn()
    s.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    out = recv_all(s)
    if not out.startswith(b"HTTP/1.1 431"):
        fail("huge headers: %r" % out[:80])
    print("40 KB header -> 431")


def case_max_connections():
    # argv[3] = the server's --max-connections
    limit = int(sys.argv[3])
    keep = [conn() for _ in range(limit)]
    time.sleep(0.3)
    s = conn()
    out = recv_all(s)
    for k in keep:
        k.close()
    if not out.startswith(b"HTTP/1.1 503") or b"Retry-After:" not in out:
        fail("connection over the limit: %r" % out[:80])
    print("connection %d -> 503 with Retry-After" % (limit + 1))


{
    "pipeline": case_pipeline,
    "chunked_expect": case_chunked_expect,
    "header_timeout": case_header_timeout,
    "idle_timeout": case_idle_timeout,
    "garbage": case_garbage,
    "huge_headers": case_huge_headers,
    "max_connections": case_max_connections,
}[CASE]()
