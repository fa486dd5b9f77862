#!/usr/bin/env python3
"""Check Enclave's GA4GH visas with independent JWT code: PyJWT (python3-jwt) and, for the
signature alone, python3-cryptography.

Usage: visa_check.py JWKS_FILE EXPORT_JSON_FILE ISSUER

JWKS_FILE is `enclavectl grant export --jwks`; EXPORT_JSON_FILE is `enclavectl --json grant
export --format ga4gh-visa`. For every visa: the header (alg ES256, typ, kid in the JWKS, jku), the
signature against the JWKS (PyJWT, and again with cryptography alone), the claims GA4GH Passport
v1.2 requires (iss, sub, iat, exp, jti; ga4gh_visa_v1 with type ControlledAccessGrants, asserted,
value, source, by). Then the forgeries: a changed payload, a changed signature, another key, "alg":
"none", and the same visa checked after its expiry must all be refused. Exit 0 and "ok: N visas"
when everything holds; 1 and the reason otherwise.
"""
import base64
import hashlib
import json
import sys

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def fail(msg):
    print("visa_check: " + msg, file=sys.stderr)
    sys.exit(1)


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def refused(token, key, issuer, what, **kw):
    try:
        jwt.decode(token, key, algorithms=["ES256"], issuer=issuer, **kw)
    except jwt.InvalidTokenError:
        return
    fail(what + " was accepted")


def verify_raw(jwk, token):
    """The signature with cryptography alone: r || s -> DER, ECDSA P-256 SHA-256."""
    head, payload, sig = token.split(".")
    x = int.from_bytes(b64d(jwk["x"]), "big")
    y = int.from_bytes(b64d(jwk["y"]), "big")
    pub = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raw = b64d(sig)
    if len(raw) != 64:
        fail("signature is %d bytes, not 64 (r || s)" % len(raw))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub.verify(der, (head + "." + payload).encode(), ec.ECDSA(hashes.SHA256()))


def main():
    if len(sys.argv) != 4:
        fail("usage: visa_check.py JWKS_FILE EXPORT_JSON_FILE ISSUER")
    jwks = json.load(open(sys.argv[1]))
    export = json.load(open(sys.argv[2]))
    issuer = sys.argv[3]
    keys = {k["kid"]: k for k in jwks["keys"]}
    if not keys:
        fail("the JWKS holds no key")
    for k in keys.values():
        if k.get("kty") != "EC" or k.get("crv") != "P-256" or k.get("alg") != "ES256":
            fail("JWKS key is not an ES256 P-256 key: %r" % k)
        if "d" in k:
            fail("the JWKS holds a private key")
        # kid: the RFC 7638 thumbprint, computed here independently.
        canon = json.dumps({"crv": k["crv"], "kty": k["kty"], "x": k["x"], "y": k["y"]},
                           separators=(",", ":"), sort_keys=True)
        if b64e(hashlib.sha256(canon.encode()).digest()) != k["kid"]:
            fail("kid %r is not the key's RFC 7638 thumbprint" % k["kid"])
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    n = 0
    for v in export["visas"]:
        token = v["jwt"]
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "ES256":
            fail("alg is %r" % header.get("alg"))
        if header.get("typ") not in ("vnd.ga4gh.visa+jwt", "JWT"):
            fail("typ is %r" % header.get("typ"))
        if header.get("jku") != issuer + "/jwks.json":
            fail("jku is %r" % header.get("jku"))
        jwk = keys.get(header.get("kid"))
        if jwk is None:
            fail("kid %r is not in the JWKS" % header.get("kid"))
        key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
        claims = jwt.decode(token, key, algorithms=["ES256"], issuer=issuer,
                            options={"require": ["iss", "sub", "iat", "exp", "jti"]})
        try:
            verify_raw(jwk, token)
        except InvalidSignature:
            fail("cryptography does not verify the signature that PyJWT accepted")
        for c in ("iat", "exp"):
            if type(claims[c]) is not int:
                fail("%s is not an integer" % c)
        if claims["sub"] != v["sub"]:
            fail("sub %r, but the export says %r" % (claims["sub"], v["sub"]))
        if "scope" in claims:
            fail("a visa document token (with jku) must not carry scope")
        visa = claims.get("ga4gh_visa_v1")
        if not isinstance(visa, dict):
            fail("no ga4gh_visa_v1 object")
        if visa.get("type") != "ControlledAccessGrants":
            fail("type is %r" % visa.get("type"))
        if type(visa.get("asserted")) is not int or visa["asserted"] > claims["iat"]:
            fail("asserted %r is not an integer time before iat" % visa.get("asserted"))
        want = issuer + "/datasets/" + v["dataset"]
        if v["version"]:
            want += "/versions/%d" % v["version"]
        if visa.get("value") != want:
            fail("value %r, wanted %r" % (visa.get("value"), want))
        if not isinstance(visa.get("source"), str) or not visa["source"].startswith("http"):
            fail("source %r is not a URL" % visa.get("source"))
        if visa.get("by") != "dac":
            fail("by is %r" % visa.get("by"))

        # Forgeries: each must be refused.
        head, payload, sig = token.split(".")
        forged = dict(claims, sub=claims["sub"] + "x")
        refused(head + "." + b64e(json.dumps(forged).encode()) + "." + sig, key, issuer,
                "a visa with a changed sub")
        bad = bytearray(b64d(sig))
        bad[10] ^= 1
        refused(head + "." + payload + "." + b64e(bytes(bad)), key, issuer,
                "a visa with a changed signature")
        refused(token, other, issuer, "a visa checked with another key")
        none = b64e(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        refused(none + "." + payload + ".", key, issuer, "an unsigned visa (alg none)")
        refused(token, key, issuer + "/other", "a visa from another issuer")
        # Checked one second after its expiry (a negative leeway moves the clock forward).
        refused(token, key, issuer, "an expired visa",
                leeway=-(claims["exp"] - claims["iat"] + 1))
        n += 1
    print("ok: %d visas" % n)


if __name__ == "__main__":
    main()
