"""The signed identity assertion ``X-Authproxy-Identity`` and its JWKS (SPEC sections 2, 3 and 4).

Upstreams that would rather verify than trust headers get a short-lived JWT (RFC 7519) signed
with ES256 (RFC 7518 section 3.4, ECDSA P-256 with SHA-256) and fetch the public key from
``/oauth2/jwks.json`` (RFC 7517 section 5, a JWK Set):

- header: ``alg: ES256``, ``typ: JWT`` (RFC 7519 section 5.1), ``kid`` = the RFC 7638 JWK
  thumbprint of the public key, so every replica loading the same key file names it the same;
- claims: ``iss`` = the proxy's ``public_url``, ``aud`` = the route name (RFC 7519 section
  4.1.3; an assertion for one upstream is refused by another), ``sub``, ``email``, ``groups``
  (only those the user has), ``iat`` and ``exp`` = ``iat + ttl`` (NumericDate, whole seconds).

The key is an EC P-256 private key in PEM (PKCS#8 or SEC1) from ``identity_jwt.signing_key_file``;
without one a key is generated at start (:attr:`IdentitySigner.generated`), and the caller warns
that replicas would each have their own.

Signing sits on the request path, so assertions are cached per audience and identity and reused
while at least half of the ttl remains: an upstream never receives one that expires sooner.

Apart from reading the key file in :meth:`IdentitySigner.from_config`, no I/O; the clock is
passed in.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from authproxy.config import IdentityJWTConfig
from authproxy.errors import ConfigError

ALGORITHM: Final = "ES256"
KEY_FILE_PATH: Final = "identity_jwt.signing_key_file"
# P-256 coordinates are 32 bytes; RFC 7518 section 6.2.1.2 requires the full length, zero-padded
_COORDINATE_BYTES: Final = 32
# one entry per (route, identity) in use; bounded so a flood of distinct users cannot grow memory
CACHE_MAX_ENTRIES: Final = 4096
_MAKE_KEY_HINT: Final = "make one with: openssl ecparam -name prime256v1 -genkey -noout -out identity.pem"

_CacheKey = tuple[str, str | None, str | None, tuple[str, ...] | None]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7518 section 6.2.1 members of a P-256 public key: ``kty``, ``crv``, ``x``, ``y``."""
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        "y": _b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 section 3: SHA-256 over the required members, sorted, without whitespace."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC P-256 private key from PEM; ``ConfigError`` naming the key file otherwise."""
    try:
        key = load_pem_private_key(pem, password=None)
    except TypeError as e:
        # cryptography raises TypeError for a password-protected key loaded without a password
        raise ConfigError([f"{KEY_FILE_PATH}: the key is encrypted; give an unencrypted EC P-256 key"]) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError([f"{KEY_FILE_PATH}: not a PEM private key ({_MAKE_KEY_HINT})"]) from e
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    found = f"an EC key on curve {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else _kind_of(key)
    raise ConfigError(
        [f"{KEY_FILE_PATH}: ES256 needs an EC P-256 (prime256v1) private key, got {found} ({_MAKE_KEY_HINT})"]
    )


def _kind_of(key: object) -> str:
    """A readable name for a private key that is not EC, for the configuration error."""
    kinds = (
        (rsa.RSAPrivateKey, "an RSA key"),
        (ed25519.Ed25519PrivateKey, "an Ed25519 key"),
        (ed448.Ed448PrivateKey, "an Ed448 key"),
    )
    return next((name for kind, name in kinds if isinstance(key, kind)), "a key of another type")


def _string_list(value: object) -> tuple[str, ...] | None:
    """``groups`` as a list of strings whether the provider sent one string or a list."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(item for item in value if isinstance(item, str))
    return None


class IdentitySigner:
    """Signs ``X-Authproxy-Identity`` assertions with one P-256 key and publishes its JWKS."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str, ttl: float, *, generated: bool = False) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.issuer: Final = issuer
        self.ttl: Final = ttl
        self.generated: Final = generated
        self._key = key
        jwk = public_jwk(key.public_key())
        self.kid: Final = jwk_thumbprint(jwk)
        self._jwks: Final = {"keys": [{**jwk, "use": "sig", "alg": ALGORITHM, "kid": self.kid}]}
        self._headers: Final = {"kid": self.kid, "typ": "JWT"}
        # cache key -> (token, iat, exp); OrderedDict as a small LRU
        self._cache: OrderedDict[_CacheKey, tuple[str, int, int]] = OrderedDict()

    def __repr__(self) -> str:
        return f"IdentitySigner(issuer={self.issuer!r}, kid={self.kid!r}, generated={self.generated})"

    @classmethod
    def from_config(cls, cfg: IdentityJWTConfig, issuer: str) -> IdentitySigner:
        """Load ``signing_key_file`` or generate a key (then ``generated`` is True)."""
        if cfg.signing_key_file is None:
            return cls(ec.generate_private_key(ec.SECP256R1()), issuer, cfg.ttl, generated=True)
        try:
            pem = Path(cfg.signing_key_file).read_bytes()
        except OSError as e:
            raise ConfigError([f"{KEY_FILE_PATH}: cannot read {cfg.signing_key_file}: {e.strerror or e}"]) from e
        return cls(load_signing_key(pem), issuer, cfg.ttl)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set for ``/oauth2/jwks.json`` (a copy; callers may change it)."""
        return copy.deepcopy(self._jwks)

    def sign(self, claims: Mapping[str, Any], audience: str, now: float) -> str:
        """An ES256 assertion of ``claims``' identity for the route ``audience``, valid ``ttl`` from ``now``."""
        sub = claims.get("sub")
        email = claims.get("email")
        identity: _CacheKey = (
            audience,
            sub if isinstance(sub, str) else None,
            email if isinstance(email, str) else None,
            _string_list(claims.get("groups")),
        )
        cached = self._cache.get(identity)
        # reuse only while at least half the ttl remains, and never one "issued" after now
        # (a clock stepped back would otherwise hand out an assertion from the future)
        if cached is not None and cached[1] <= now and cached[2] - now >= self.ttl / 2:
            self._cache.move_to_end(identity)
            return cached[0]
        issued = int(now)
        expires = int(now + self.ttl)
        payload: dict[str, Any] = {"iss": self.issuer, "aud": audience}
        for name, value in zip(("sub", "email", "groups"), identity[1:], strict=True):
            if value is not None:
                payload[name] = list(value) if isinstance(value, tuple) else value
        payload["iat"] = issued
        payload["exp"] = expires
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM, headers=self._headers)
        self._cache[identity] = (token, issued, expires)
        self._cache.move_to_end(identity)
        if len(self._cache) > CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)
        return token
