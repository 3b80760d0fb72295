#!/usr/bin/env python3
"""Writes N HS256 JWTs (one per line) for users <prefix>0..<prefix>N-1.

Usage: tokens.py SECRET N PREFIX [TENANT] > tokens.txt
Standard library only: the load scripts need distinct users, and wrk's Lua
cannot sign tokens itself.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    secret, count, prefix = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
    tenant = sys.argv[4] if len(sys.argv) > 4 else "bench"
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    exp = int(time.time()) + 6 * 3600
    out = sys.stdout
    for i in range(count):
        claims = {"sub": f"{prefix}{i}", "tenant_id": tenant, "exp": exp}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
        out.write(f"{header}.{payload}.{sig}\n")


if __name__ == "__main__":
    main()
