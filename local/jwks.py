#!/usr/bin/env python3
"""Write a JWKS (one RS256 key) for an RSA private key in PEM.

    python3 local/jwks.py [--create] <key.pem> <out.json> <kid>

--create generates the key first (RSA 2048, PKCS#8 PEM, via openssl) when <key.pem> does not
exist. The modulus and exponent come from `openssl rsa` (no Python crypto package needed).
Used by local/up (local dev key, kid "local-dev") and for the committed test key
(shared/testkit/keys, kid "test-key").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def create_key(pem: str, bits: int = 2048) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(pem)), exist_ok=True)
    tmp = pem + ".tmp"
    old_umask = os.umask(0o077)
    try:
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        os.umask(old_umask)
    os.replace(tmp, pem)


def public_numbers(pem: str) -> tuple[int, int]:
    """(n, e) of the RSA key in `pem`, read with openssl."""
    text = subprocess.run(
        ["openssl", "rsa", "-in", pem, "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    modulus = subprocess.run(
        ["openssl", "rsa", "-in", pem, "-noout", "-modulus"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not modulus.startswith("Modulus="):
        raise ValueError(f"{pem}: unexpected `openssl rsa -modulus` output")
    n = int(modulus.split("=", 1)[1], 16)
    m = re.search(r"publicExponent:\s*(\d+)", text)
    if not m:
        raise ValueError(f"{pem}: public exponent not found")
    return n, int(m.group(1))


def jwks_for(pem: str, kid: str) -> dict:
    n, e = public_numbers(pem)
    if n.bit_length() < 2048:
        raise ValueError(f"{pem}: RSA key of {n.bit_length()} bits; RS256 needs at least 2048")
    return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64url_uint(n), "e": b64url_uint(e)}]}


def write_jwks(pem: str, out: str, kid: str) -> dict:
    jwks = jwks_for(pem, kid)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(jwks, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)
    return jwks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--create", action="store_true", help="generate <key.pem> (RSA 2048) if it is missing")
    parser.add_argument("pem")
    parser.add_argument("out")
    parser.add_argument("kid")
    args = parser.parse_args(argv)
    if not os.path.exists(args.pem):
        if not args.create:
            print(f"jwks: {args.pem} does not exist (pass --create to generate it)", file=sys.stderr)
            return 1
        create_key(args.pem)
    write_jwks(args.pem, args.out, args.kid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
