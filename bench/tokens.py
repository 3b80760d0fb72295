#!/usr/bin/env python3
"""Writes N HS256 JWTs (one per line) for users <prefix>0..<prefix>N-1.

Usage: tokens.py SECRET N PREFIX [TENANT] > tokens.txt
       RS256_KEY=private.pem tokens.py - N PREFIX [TENANT] > tokens.txt
Standard library only for HS256: the load scripts need distinct users, and
wrk's Lua cannot sign tokens itself. RS256 (RS256_KEY, a PEM private key)
needs the `cryptography` package.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    secret, count, prefix = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
    tenant = sys.argv[4] if len(sys.argv) > 4 else "bench"
    sign = lambda data: hmac.new(secret, data, hashlib.sha256).digest()
    alg = "HS256"
    if os.environ.get("RS256_KEY"):
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        with open(os.environ["RS256_KEY"], "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        sign = lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        alg = "RS256"
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    exp = int(time.time()) + 6 * 3600
    out = sys.stdout
    for i in range(count):
        claims = {"sub": f"{prefix}{i}", "tenant_id": tenant, "exp": exp}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = b64(sign(signing_input))
        out.write(f"{header}.{payload}.{sig}\n")


if __name__ == "__main__":
    main()
