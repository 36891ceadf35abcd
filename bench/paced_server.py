#!/usr/bin/env python3
"""paced_server.py - a stand-in OpenAI /v1/completions server on a known clock, for checking a
load generator's timing (bench/curl_check.sh) without a model's noise.

A streamed request gets its response headers at once, its first chunk TTFT ms after the request
arrived and one chunk every ITL ms after that (absolute deadlines from the arrival, so a late
wake-up does not delay the rest), max_tokens chunks in all, then a usage chunk and [DONE].
HTTP/1.1 keep-alive with chunked encoding, TCP_NODELAY, one thread per connection.
GET /v1/models and /health answer too. Binds loopback only.

Trade-off: Python's sleep wakes up late by the scheduler's latency; on a loaded machine that
is the noise left, and both clients see the same server. Not here: non-streamed responses.

usage: bench/paced_server.py [--port N] [--port-file F] [--ttft-ms 200] [--itl-ms 20]
"""
import argparse
import http.server
import json
import socket
import socketserver
import time


def make_handler(ttft_ms, itl_ms):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def send_json(self, code, obj):
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def do_GET(self):
            if self.path == '/v1/models':
                self.send_json(200, {'object': 'list', 'data': [{'id': 'paced', 'object': 'model'}]})
            elif self.path == '/health':
                self.send_json(200, {'status': 'ok'})
            else:
                self.send_json(404, {'error': {'message': 'not found'}})

        def chunk(self, data):
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
            self.wfile.flush()

        def do_POST(self):
            t0 = time.monotonic()
            n = int(self.headers.get('Content-Length', '0'))
            try:
                req = json.loads(self.rfile.read(n))
                max_tokens = max(1, min(int(req.get('max_tokens', 16)), 100000))
                prompt_tokens = len(str(req.get('prompt', '')).split())
            except (ValueError, TypeError):
                self.send_json(400, {'error': {'message': 'bad request'}})
                return
            if self.path != '/v1/completions' or not req.get('stream'):
                self.send_json(404, {'error': {'message': 'only streamed /v1/completions'}})
                return
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            self.wfile.flush()
            for i in range(max_tokens):
                wait = t0 + (ttft_ms + i * itl_ms) / 1e3 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                ev = {'object': 'text_completion', 'model': 'paced',
                      'choices': [{'index': 0, 'text': ' tok', 'logprobs': None,
                                   'finish_reason': 'length' if i == max_tokens - 1 else None}]}
                self.chunk(b'data: ' + json.dumps(ev).encode() + b'\n\n')
            usage = {'object': 'text_completion', 'model': 'paced', 'choices': [],
                     'usage': {'prompt_tokens': prompt_tokens, 'completion_tokens': max_tokens,
                               'total_tokens': prompt_tokens + max_tokens}}
            self.chunk(b'data: ' + json.dumps(usage).encode() + b'\n\ndata: [DONE]\n\n')
            self.wfile.write(b'0\r\n\r\n')
            self.wfile.flush()

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--port-file')
    ap.add_argument('--ttft-ms', type=float, default=200)
    ap.add_argument('--itl-ms', type=float, default=20)
    a = ap.parse_args()
    srv = Server(('127.0.0.1', a.port), make_handler(a.ttft_ms, a.itl_ms))
    if a.port_file:
        with open(a.port_file, 'w') as f:
            f.write(str(srv.server_address[1]))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
