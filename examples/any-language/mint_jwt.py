#!/usr/bin/env python3
"""Mints a Myxi JWT (HS256) with the Python standard library only.

    MYXI_JWT_SECRET=... python3 mint_jwt.py alice widgets=1,2,9* news=*

The token's subject is the user; each EXCHANGE=KEY,KEY argument grants
those routing keys of an exchange whose policy is "jwt" ('*' matches any
run of characters). It expires in 15 minutes. Your application does this
in its own language; docs/any-language.md lists the claims.
"""
import base64, hashlib, hmac, json, os, sys, time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret: str, user: str, grants: dict, ttl: int = 15 * 60) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": user, "exp": int(time.time()) + ttl, "myxi": {"subscribe": grants}}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


if __name__ == "__main__":
    if len(sys.argv) < 2 or "MYXI_JWT_SECRET" not in os.environ:
        sys.exit(__doc__)
    grants = {}
    for arg in sys.argv[2:]:
        exchange, _, keys = arg.partition("=")
        grants[exchange] = keys.split(",")
    print(mint(os.environ["MYXI_JWT_SECRET"], sys.argv[1], grants))
