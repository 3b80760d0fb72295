#!/usr/bin/env python3
"""A stand-in rating service for load tests (SPEC §8 contract).

GET /v1/ratings/{user_id} answers the user rated 1500 in blitz_standard;
GET /calls answers how many rating reads it served. Standard library only.
Usage: fake_ratings.py PORT
"""
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # One segment per answer, sent at once (no Nagle/delayed-ACK wait).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer(self, status, body):
        head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.wfile.write(head + body)

    def do_GET(self):
        global calls
        if self.path == "/calls":
            self.answer("200 OK", str(calls).encode())
        elif self.path.startswith("/v1/ratings/"):
            with lock:
                calls += 1
            user = self.path.rsplit("/", 1)[1]
            self.answer("200 OK", json.dumps({"user_id": user, "ratings": [
                {"pool_id": "blitz_standard", "rating": 1500, "rating_deviation": 80.0}]}).encode())
        else:
            self.answer("404 Not Found", b"")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
