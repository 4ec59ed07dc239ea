"""Verifies a token the way a cloud STS would, with PyJWT (not this project's code).

Reads the issuer's OIDC discovery document, fetches its JWKS, checks the ES256 signature,
`iss`, `aud` and expiry, and prints the header and claims as JSON.

usage: verify_jwt.py TOKEN ISSUER AUDIENCE
"""
import json
import sys
import urllib.request

import jwt


def main() -> None:
    token, issuer, audience = sys.argv[1:4]
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration") as r:
        conf = json.load(r)
    if conf["issuer"] != issuer:
        raise SystemExit(f"discovery issuer {conf['issuer']!r} != {issuer!r}")
    key = jwt.PyJWKClient(conf["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
    )
    print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))


if __name__ == "__main__":
    main()
