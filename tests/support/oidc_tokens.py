"""Signing keys and token builders for the token tests (tests only).

key = generate_key("RS256", "rsa-1")      # slow for RSA: build them in module-scoped fixtures
raw = key.sign(id_token_claims(nonce=None))   # None drops a claim
keys = KeySet.from_jwks(jwks_of(key, other))
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER: Final = "https://idp.example.com/realms/main"
CLIENT_ID: Final = "authproxy-client"
NONCE: Final = "n-0S6_WzA2Mj"
NOW: Final = 1_700_000_000.0
SKEW: Final = 60.0
# >= 32 bytes: a realistic HMAC key (PyJWT refuses shorter ones for HS256 in our options)
CLIENT_SECRET: Final = "client-secret-0123456789-abcdefghijklmnop"
ALL_ASYMMETRIC: Final = ("RS256", "PS256", "ES256", "EdDSA")
LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"
# a kid value meaning "use the key's own kid" in ``JwtKey.sign``
OWN_KID: Final = object()

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


@dataclass(frozen=True)
class JwtKey:
    """A private key, its public JWK and the alg it signs with."""

    kid: str
    alg: str
    private: PrivateKey = field(repr=False)
    public_jwk: dict[str, Any]

    def sign(self, claims: Mapping[str, Any], *, kid: object = OWN_KID, alg: str | None = None, **headers: Any) -> str:
        header: dict[str, Any] = dict(headers)
        if kid is OWN_KID:
            header["kid"] = self.kid
        elif kid is not None:
            header["kid"] = kid
        return jwt.encode(dict(claims), self.private, algorithm=alg or self.alg, headers=header)


def generate_key(alg: str, kid: str, *, with_alg: bool = False) -> JwtKey:
    """A fresh key for ``alg`` ("RS256", "PS256", "ES256", "ES384", "EdDSA", "Ed448")."""
    private: PrivateKey
    if alg in ("RS256", "PS256"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg in ("ES256", "ES384"):
        private = ec.generate_private_key(ec.SECP256R1() if alg == "ES256" else ec.SECP384R1())
        public_jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "Ed448":
        private = ed448.Ed448PrivateKey.generate()
        public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        alg = "EdDSA"
    else:
        raise ValueError(alg)
    public_jwk = {**public_jwk, "kid": kid, "use": "sig"}
    if with_alg:
        public_jwk["alg"] = alg
    return JwtKey(kid, alg, private, public_jwk)


def jwks_of(*keys: JwtKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


def _with(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; an override of None removes the claim."""
    claims = {**base, **overrides}
    return {name: value for name, value in claims.items() if value is not None}


def id_token_claims(**overrides: Any) -> dict[str, Any]:
    return _with(
        {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": "user-1",
            "iat": int(NOW) - 5,
            "exp": int(NOW) + 300,
            "nonce": NONCE,
            "sid": "session-1",
            "email": "alice@example.com",
        },
        overrides,
    )


def logout_token_claims(**overrides: Any) -> dict[str, Any]:
    return _with(
        {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "iat": int(NOW) - 5,
            "jti": "jti-1",
            "events": {LOGOUT_EVENT: {}},
            "sid": "session-1",
            "sub": "user-1",
        },
        overrides,
    )


def access_token_claims(**overrides: Any) -> dict[str, Any]:
    return _with(
        {
            "iss": ISSUER,
            "aud": ["https://api.example.com", CLIENT_ID],
            "sub": "user-1",
            "client_id": CLIENT_ID,
            "iat": int(NOW) - 5,
            "exp": int(NOW) + 300,
            "jti": "at-1",
            "scope": "openid profile",
        },
        overrides,
    )


def unsigned_token(claims: Mapping[str, Any], **header: Any) -> str:
    """An ``alg: none`` token (RFC 7519 section 6), built by hand so no library refuses it."""

    def part(value: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', **header})}.{part(claims)}."


def hmac_token(claims: Mapping[str, Any], secret: str = CLIENT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(dict(claims), secret, algorithm=alg)
