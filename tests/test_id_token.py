"""ID token validation (OpenID Connect Core 1.0 section 3.1.3.7, at_hash 3.1.3.6): every check of
SPEC section 3 `/callback` has a row here that fails if the check is removed."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import example, given
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

from authproxy.errors import ProviderUnavailable, TokenInvalid, UnknownKeyId
from authproxy.oidc.tokens import (
    KeySet,
    _segment,
    _verified_payload,
    compute_at_hash,
    verify_id_token,
    verify_refreshed_id_token,
)
from tests.support.oidc_tokens import (
    ALL_ASYMMETRIC,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    NONCE,
    NOW,
    SKEW,
    JwtKey,
    generate_key,
    hmac_token,
    id_token_claims,
    jwks_of,
    unsigned_token,
)

ACCESS_TOKEN = "access-token-value-for-at-hash"


@dataclass(frozen=True)
class Keys:
    rsa: JwtKey
    rsa_other: JwtKey  # not in the JWKS: an attacker's key
    ps: JwtKey
    ec: JwtKey
    ed: JwtKey
    ed448: JwtKey

    def keyset(self) -> KeySet:
        return KeySet.from_jwks(jwks_of(self.rsa, self.ps, self.ec, self.ed, self.ed448))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=generate_key("RS256", "rsa-1"),
        rsa_other=generate_key("RS256", "rsa-1"),  # same kid as the real one
        ps=generate_key("PS256", "ps-1"),
        ec=generate_key("ES256", "ec-1"),
        ed=generate_key("EdDSA", "ed-1"),
        ed448=generate_key("Ed448", "ed448-1"),
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tampered(raw: str, **changes: Any) -> str:
    """The token with its payload changed and the old signature kept."""
    header, payload, signature = raw.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join((header, b64(json.dumps({**claims, **changes}).encode()), signature))


def verify(raw: str, keyset: KeySet, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "keys": keyset,
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "allowed_algorithms": ALL_ASYMMETRIC,
        "nonce": NONCE,
        "now": NOW,
        "skew": SKEW,
        "access_token": ACCESS_TOKEN,
    }
    arguments.update(overrides)
    return verify_id_token(raw, **arguments)


# each row: a token built from the keys, extra verify arguments (or a function of the keys
# giving them), the reason expected
Build = Callable[[Keys], str]
Overrides = dict[str, Any] | Callable[[Keys], dict[str, Any]]


def resolve(overrides: Overrides, keys: Keys) -> dict[str, Any]:
    return overrides(keys) if callable(overrides) else overrides


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def signed_raw(key: JwtKey, payload: bytes, **headers: Any) -> str:
    """A JWS over any payload bytes (not only a JSON object), signed by ``key``, with extra header fields."""
    return jwt.api_jws.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, **headers})


def hand_signed(private: Any, header: dict[str, Any], payload: bytes) -> str:
    """A JWS with exactly ``header`` (fields PyJWT's encoder would refuse or act on), payload and
    signature encoded as usual, signed with ``private`` (a private key or HMAC secret bytes)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    signature = get_default_algorithms()[header["alg"]].sign(signing_input.encode(), private)
    return f"{signing_input}.{b64(signature)}"


def claims_json(**overrides: Any) -> bytes:
    """The ID token claims as JSON; ``json.dumps`` writes ``math.inf`` and ``math.nan`` as the
    ``Infinity`` and ``NaN`` that ``json.loads`` reads back."""
    return json.dumps(id_token_claims(**overrides)).encode()


# 31 bytes: one short of HS256's minimum (RFC 7518 section 3.2, a key as long as the hash output)
SHORT_CLIENT_SECRET = "client-secret-0123456789-abcdef"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def stray_bits(raw: str) -> str:
    """The token with the unused low bit of its signature's last character set: the same bytes, another spelling."""
    head, _, signature = raw.rpartition(".")
    assert len(signature) % 4 in (2, 3)  # an RS256 signature (256 bytes) ends in 4 unused bits
    last = _ALPHABET[_ALPHABET.index(signature[-1]) ^ 1]
    assert base64.urlsafe_b64decode(signature[:-1] + last + "==") == base64.urlsafe_b64decode(signature + "==")
    return f"{head}.{signature[:-1]}{last}"


FAULTS: list[Any] = [
    pytest.param(lambda k: k.rsa_other.sign(id_token_claims()), {}, "bad signature", id="bad-signature"),
    pytest.param(
        lambda k: tampered(k.rsa.sign(id_token_claims()), sub="admin"), {}, "bad signature", id="tampered-payload"
    ),
    pytest.param(lambda k: unsigned_token(id_token_claims()), {}, "alg not allowed: none", id="alg-none"),
    pytest.param(
        lambda k: unsigned_token(id_token_claims()),
        {"allowed_algorithms": ["RS256", "none"]},
        "alg not allowed: none",
        id="alg-none-even-if-listed",
    ),
    pytest.param(
        lambda k: unsigned_token(id_token_claims(), kid="rsa-1"), {}, "alg not allowed: none", id="alg-none-with-kid"
    ),
    pytest.param(
        lambda k: hmac_token(id_token_claims()),
        {"client_secret": CLIENT_SECRET},
        "alg not allowed: HS256",
        id="hs256-with-client-secret-not-allowed",
    ),
    pytest.param(
        lambda k: hmac_token(id_token_claims(), secret="another-secret-of-the-attacker-0123456789"),
        {"client_secret": CLIENT_SECRET, "allowed_algorithms": ["RS256", "HS256"]},
        "bad signature",
        id="hs256-allowed-wrong-secret",
    ),
    pytest.param(
        lambda k: hand_signed(SHORT_CLIENT_SECRET.encode(), {"alg": "HS256", "typ": "JWT"}, claims_json()),
        {"client_secret": SHORT_CLIENT_SECRET, "allowed_algorithms": ["RS256", "HS256"]},
        "key too weak for HS256",
        id="hs256-client-secret-shorter-than-32-bytes",
    ),
    pytest.param(
        lambda k: hand_signed(CLIENT_SECRET.encode(), {"alg": "HS256"}, b"not json"),
        {"client_secret": CLIENT_SECRET, "allowed_algorithms": ["RS256", "HS256"]},
        "malformed token",
        id="hs256-payload-not-json",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims()),
        {"allowed_algorithms": ["ES256"]},
        "alg not allowed: RS256",
        id="alg-not-in-allow-list",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(iss="https://evil.example.com")), {}, "iss mismatch", id="wrong-iss"
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iss=ISSUER + "/")), {}, "iss mismatch", id="iss-trailing-slash"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iss=None)), {}, "iss missing", id="missing-iss"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(aud="another-client")), {}, "aud mismatch", id="wrong-aud"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(aud=None)), {}, "aud missing", id="missing-aud"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(aud=[CLIENT_ID, 7])), {}, "aud malformed", id="aud-not-strings"),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(aud=[CLIENT_ID, "other-client"])),
        {},
        "azp missing with several audiences",
        id="extra-aud-without-azp",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(aud=[CLIENT_ID, "other-client"], azp="other-client")),
        {},
        "azp mismatch",
        id="azp-wrong-several-audiences",
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(azp="other-client")), {}, "azp mismatch", id="azp-wrong"),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(exp=int(NOW - SKEW) - 1)), {}, "token expired", id="expired-beyond-skew"
    ),
    # RFC 7519 section 4.1.4: valid only *before* exp, so a token is refused at exp + skew itself
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(exp=int(NOW - SKEW))), {}, "token expired", id="expired-at-exp-plus-skew"
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(exp=None)), {}, "exp missing", id="missing-exp"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(exp="tomorrow")), {}, "exp malformed", id="exp-not-a-number"),
    # a boolean is not a number, even though Python's True == 1
    pytest.param(lambda k: k.rsa.sign(id_token_claims(exp=True)), {}, "exp malformed", id="exp-boolean"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iat=True)), {}, "iat malformed", id="iat-boolean"),
    # a non-finite time never expires (or is always valid): Infinity and NaN are not numbers here
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(exp=math.inf)), {}, "exp malformed", id="exp-infinity"),
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(exp=math.nan)), {}, "exp malformed", id="exp-nan"),
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(iat=-math.inf)), {}, "iat malformed", id="iat-minus-infinity"),
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(nbf=-math.inf)), {}, "nbf malformed", id="nbf-minus-infinity"),
    # an integer too large for a float (JSON has no limit) is no time either, not a crash
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(exp=10**400)), {}, "exp malformed", id="exp-beyond-float"),
    pytest.param(lambda k: signed_raw(k.rsa, claims_json(iat=-(10**400))), {}, "iat malformed", id="iat-beyond-float"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iat="yesterday")), {}, "iat malformed", id="iat-not-a-number"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(nbf="tomorrow")), {}, "nbf malformed", id="nbf-not-a-number"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iat=None)), {}, "iat missing", id="missing-iat"),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(iat=int(NOW + SKEW) + 1)), {}, "iat in the future", id="iat-in-the-future"
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(nbf=int(NOW + SKEW) + 1)), {}, "token not yet valid", id="nbf-future"
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(sub=None)), {}, "sub missing", id="missing-sub"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(sub="")), {}, "sub missing", id="empty-sub"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(nonce=None)), {}, "nonce missing", id="missing-nonce"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(nonce="other-nonce")), {}, "nonce mismatch", id="wrong-nonce"),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(at_hash=compute_at_hash("another-access-token", "RS256"))),
        {},
        "at_hash mismatch",
        id="wrong-at-hash",
    ),
    pytest.param(
        lambda k: k.ec.sign(id_token_claims(at_hash=compute_at_hash(ACCESS_TOKEN, "RS384"))),
        {},
        "at_hash mismatch",
        id="at-hash-of-another-hash-size",
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(at_hash=123)), {}, "at_hash mismatch", id="at-hash-not-a-string"),
    # at_hash is over the access token's ASCII octets (Core 1.0 section 3.1.3.6): one that has none is refused
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(at_hash="AAAAAAAAAAAAAAAAAAAAAA")),
        {"access_token": "t\u00f8ken"},
        "at_hash cannot be computed",
        id="at-hash-of-a-non-ascii-access-token",
    ),
    pytest.param(lambda k: "not.a.jwt", {}, "malformed token", id="garbage"),
    pytest.param(lambda k: _b64({"alg": "RS256"}) + ".e30", {}, "malformed token", id="two-segments"),
    pytest.param(lambda k: _b64({"alg": "RS256"}) + ".e30.c2ln.x.y", {}, "malformed token", id="five-segments-jwe"),
    pytest.param(lambda k: _b64({"alg": "RS256"}) + "!.e30.c2ln", {}, "malformed token", id="header-not-base64url"),
    pytest.param(lambda k: _b64({"alg": "RS256"}) + "===.e30.c2ln", {}, "malformed token", id="header-overpadded"),
    pytest.param(lambda k: _b64(["RS256"]) + ".e30.c2ln", {}, "malformed token", id="header-not-an-object"),
    pytest.param(lambda k: "bm90IGpzb24.e30.c2ln", {}, "malformed token", id="header-not-json"),
    pytest.param(lambda k: _b64({"alg": "none"}) + ".e30.", {}, "alg not allowed: none", id="alg-none"),
    pytest.param(lambda k: _b64({"kid": "rsa-1"}) + ".e30.c2ln", {}, "alg missing", id="alg-missing"),
    pytest.param(lambda k: _b64({"alg": ""}) + ".e30.c2ln", {}, "alg missing", id="alg-empty"),
    pytest.param(lambda k: _b64({"alg": 256}) + ".e30.c2ln", {}, "alg missing", id="alg-a-number"),
    pytest.param(lambda k: "x" * 70_000, {}, "token too large", id="oversized"),
    # the compact form, read as strictly as PyJWT reads it (authproxy.oidc.tokens._segment)
    pytest.param(
        lambda k: stray_bits(k.rsa.sign(id_token_claims())), {}, "malformed token", id="signature-not-canonical"
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims()) + "!", {}, "malformed token", id="signature-not-base64url"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims()) + "===", {}, "malformed token", id="signature-overpadded"),
    pytest.param(lambda k: signed_raw(k.rsa, b"[1, 2]"), {}, "malformed token", id="payload-not-an-object"),
    pytest.param(lambda k: signed_raw(k.rsa, b"not json"), {}, "malformed token", id="payload-not-json"),
    pytest.param(
        lambda k: signed_raw(k.rsa, json.dumps(id_token_claims()).encode(), crit=["exp"]),
        {},
        "malformed token",
        id="critical-extension",
    ),
    pytest.param(
        lambda k: signed_raw(k.rsa, json.dumps(id_token_claims()).encode(), b64=False, crit=["b64"]),
        {},
        "malformed token",
        id="unencoded-payload-b64-false",
    ),
    # b64 false without crit (RFC 7797 section 6 asks for both): refused all the same, even when
    # the signature verifies over the payload encoded as usual
    pytest.param(
        lambda k: hand_signed(k.rsa.private, {"alg": "RS256", "kid": "rsa-1", "b64": False}, claims_json()),
        {},
        "malformed token",
        id="b64-false-without-crit",
    ),
    # the kid is looked up and logged only as a string
    pytest.param(
        lambda k: hand_signed(k.rsa.private, {"alg": "RS256", "kid": 5}, claims_json()),
        {},
        "kid malformed",
        id="kid-a-number",
    ),
    pytest.param(
        lambda k: hand_signed(k.rsa.private, {"alg": "RS256", "kid": ["rsa-1"]}, claims_json()),
        {},
        "kid malformed",
        id="kid-a-list",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(), alg="PS256"),
        lambda k: {"keys": KeySet.from_jwks({"keys": [{**k.rsa.public_jwk, "alg": "RS256"}]})},
        "no key for alg PS256",
        id="key-alg-differs-from-token-alg",
    ),
    pytest.param(
        lambda k: k.ec.sign(id_token_claims(), kid="rsa-1"),
        {},
        "no key for alg ES256",
        id="kid-of-a-key-of-another-type",
    ),
]


@pytest.mark.parametrize(("build", "overrides", "reason"), FAULTS)
def test_id_token_fault_is_refused(keys: Keys, build: Build, overrides: Overrides, reason: str) -> None:
    with pytest.raises(TokenInvalid) as caught:
        verify(build(keys), keys.keyset(), **resolve(overrides, keys))
    assert caught.value.reason == reason


ACCEPTED: list[Any] = [
    pytest.param(lambda k: k.rsa.sign(id_token_claims()), {}, id="valid-rs256"),
    pytest.param(lambda k: k.ps.sign(id_token_claims()), {}, id="valid-ps256"),
    pytest.param(lambda k: k.ec.sign(id_token_claims()), {}, id="valid-es256"),
    pytest.param(lambda k: k.ed.sign(id_token_claims()), {}, id="valid-eddsa-ed25519"),
    pytest.param(lambda k: k.ed448.sign(id_token_claims()), {}, id="valid-eddsa-ed448"),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(at_hash=compute_at_hash(ACCESS_TOKEN, "RS256"))), {}, id="valid-at-hash"
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(at_hash="ignored-without-access-token")),
        {"access_token": None},
        id="at-hash-unchecked-without-access-token",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(aud=[CLIENT_ID, "other-client"], azp=CLIENT_ID)),
        {},
        id="several-audiences-with-azp",
    ),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(aud=[CLIENT_ID])), {}, id="aud-list-of-one"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims()) + "==", {}, id="signature-padded"),
    pytest.param(lambda k: signed_raw(k.rsa, json.dumps(id_token_claims()).encode(), b64=True), {}, id="b64-true"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(exp=int(NOW - SKEW) + 1)), {}, id="expired-but-within-skew"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iat=int(NOW + SKEW) - 1)), {}, id="iat-ahead-within-skew"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(iat=int(NOW + SKEW))), {}, id="iat-ahead-by-exactly-the-skew"),
    pytest.param(lambda k: k.rsa.sign(id_token_claims(nbf=int(NOW + SKEW))), {}, id="nbf-ahead-by-exactly-the-skew"),
    pytest.param(
        lambda k: hmac_token(id_token_claims()),
        {"client_secret": CLIENT_SECRET, "allowed_algorithms": ["RS256", "HS256"]},
        id="hs256-listed-with-client-secret",
    ),
    pytest.param(
        lambda k: hmac_token(id_token_claims(), secret=CLIENT_SECRET[:32]),
        {"client_secret": CLIENT_SECRET[:32], "allowed_algorithms": ["RS256", "HS256"]},
        id="hs256-client-secret-of-exactly-32-bytes",
    ),
    pytest.param(
        lambda k: k.rsa.sign(id_token_claims(), kid=None),
        lambda k: {"keys": KeySet.from_jwks(jwks_of(k.rsa))},
        id="no-kid-one-key",
    ),
    pytest.param(
        lambda k: k.ps.sign(id_token_claims(), alg="RS256", kid=None),
        lambda k: {"keys": KeySet.from_jwks(jwks_of(k.rsa, k.ec, k.ps))},
        id="no-kid-several-keys-tries-each",
    ),
]


@pytest.mark.parametrize(("build", "overrides"), ACCEPTED)
def test_valid_id_token_is_accepted(keys: Keys, build: Build, overrides: Overrides) -> None:
    claims = verify(build(keys), keys.keyset(), **resolve(overrides, keys))
    assert claims["sub"] == "user-1"


# ---------------------------------------------------------------------- ID tokens from a refresh

# the session's ID token from sign-in, which a refreshed one must match (Core 1.0 section 12.2)
SIGN_IN_CLAIMS = id_token_claims(auth_time=int(NOW) - 600)


def verify_refreshed(raw: str, keys: Keys, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "sub": "user-1",
        "earlier": SIGN_IN_CLAIMS,
        "keys": keys.keyset(),
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "allowed_algorithms": ALL_ASYMMETRIC,
        "now": NOW,
        "skew": SKEW,
        "access_token": ACCESS_TOKEN,
    }
    arguments.update(overrides)
    return verify_refreshed_id_token(raw, **arguments)


def refreshed_claims(**overrides: Any) -> dict[str, Any]:
    """The sign-in claims without the nonce, changed by ``overrides`` (None removes a claim)."""
    claims = {**SIGN_IN_CLAIMS, "nonce": None, **overrides}
    return {name: value for name, value in claims.items() if value is not None}


REFRESH_FAULTS: list[Any] = [
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(sub="user-2")), {}, "sub differs from the session's", id="other-sub"
    ),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims()),
        {"sub": "user-2"},
        "sub differs from the session's",
        id="session-of-another-user",
    ),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(aud=[CLIENT_ID, "other-client"], azp=CLIENT_ID)),
        {},
        "aud differs from the session's",
        id="audience-added",
    ),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(auth_time=int(NOW))),
        {},
        "auth_time differs from the session's",
        id="other-auth-time",
    ),
    # a back-channel logout finds the session by the sid it signed in with
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(sid="session-2")),
        {"sid": "session-1"},
        "sid differs from the session's",
        id="another-provider-session",
    ),
    # the sign-in checks apply as well
    pytest.param(lambda k: k.rsa_other.sign(refreshed_claims()), {}, "bad signature", id="bad-signature"),
    pytest.param(lambda k: unsigned_token(refreshed_claims()), {}, "alg not allowed: none", id="alg-none"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(iss="https://evil.example.com")), {}, "iss mismatch", id="iss"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(aud="another-client")), {}, "aud mismatch", id="aud"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(azp="other-client")), {}, "azp mismatch", id="azp"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(exp=int(NOW - SKEW) - 1)), {}, "token expired", id="expired"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(iat=None)), {}, "iat missing", id="missing-iat"),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(nbf=int(NOW + SKEW) + 1)), {}, "token not yet valid", id="nbf-future"
    ),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(sub=None)), {}, "sub missing", id="missing-sub"),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(at_hash=compute_at_hash("another-access-token", "RS256"))),
        {},
        "at_hash mismatch",
        id="at-hash-of-another-access-token",
    ),
    pytest.param(lambda k: "not.a.jwt", {}, "malformed token", id="garbage"),
]


@pytest.mark.parametrize(("build", "overrides", "reason"), REFRESH_FAULTS)
def test_refreshed_id_token_fault_is_refused(keys: Keys, build: Build, overrides: Overrides, reason: str) -> None:
    with pytest.raises(TokenInvalid) as caught:
        verify_refreshed(build(keys), keys, **resolve(overrides, keys))
    assert caught.value.reason == reason


REFRESH_ACCEPTED: list[Any] = [
    pytest.param(lambda k: k.rsa.sign(refreshed_claims()), {}, id="same-session-without-nonce"),
    # section 12.2 says SHOULD NOT; some providers repeat the sign-in nonce
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(nonce=NONCE)), {}, id="nonce-repeated"),
    pytest.param(lambda k: k.ec.sign(refreshed_claims()), {}, id="signed-by-another-key-of-the-set"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(auth_time=None)), {}, id="without-auth-time"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(aud=[CLIENT_ID])), {}, id="same-audience-as-a-list"),
    pytest.param(
        lambda k: k.rsa.sign(refreshed_claims(at_hash=compute_at_hash(ACCESS_TOKEN, "RS256"))), {}, id="at-hash"
    ),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(auth_time=int(NOW))), {"earlier": None}, id="no-earlier-token"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims()), {"sid": "session-1"}, id="same-provider-session"),
    pytest.param(lambda k: k.rsa.sign(refreshed_claims(sid=None)), {"sid": "session-1"}, id="without-sid"),
]


@pytest.mark.parametrize(("build", "overrides"), REFRESH_ACCEPTED)
def test_valid_refreshed_id_token_is_accepted(keys: Keys, build: Build, overrides: Overrides) -> None:
    claims = verify_refreshed(build(keys), keys, **resolve(overrides, keys))
    assert claims["sub"] == "user-1"
    assert claims["email"] == "alice@example.com"


def test_unknown_kid_raises_unknown_key_id(keys: Keys) -> None:
    with pytest.raises(UnknownKeyId):
        verify(keys.rsa.sign(id_token_claims(), kid="rotated-key"), keys.keyset())


def test_no_kid_and_no_fitting_key_is_refused(keys: Keys) -> None:
    with pytest.raises(TokenInvalid) as caught:
        verify(keys.rsa_other.sign(id_token_claims(), kid=None), KeySet.from_jwks(jwks_of(keys.rsa, keys.ps)))
    assert caught.value.reason == "bad signature"


def test_reasons_never_contain_the_token(keys: Keys) -> None:
    raw = keys.rsa.sign(id_token_claims(nonce="wrong"))
    with pytest.raises(TokenInvalid) as caught:
        verify(raw, keys.keyset())
    assert raw not in str(caught.value) and "wrong" not in str(caught.value)


# at_hash: Core 1.0 section 3.1.3.6, computed here independently of the code under test
@pytest.mark.parametrize(
    ("alg", "curve", "digest"),
    [
        pytest.param("RS256", None, hashlib.sha256(ACCESS_TOKEN.encode()).digest()[:16], id="rs256-sha256"),
        pytest.param("PS384", None, hashlib.sha384(ACCESS_TOKEN.encode()).digest()[:24], id="ps384-sha384"),
        pytest.param("ES512", None, hashlib.sha512(ACCESS_TOKEN.encode()).digest()[:32], id="es512-sha512"),
        pytest.param("HS256", None, hashlib.sha256(ACCESS_TOKEN.encode()).digest()[:16], id="hs256-sha256"),
        pytest.param("ES256K", None, hashlib.sha256(ACCESS_TOKEN.encode()).digest()[:16], id="es256k-sha256"),
        pytest.param("EdDSA", "Ed25519", hashlib.sha512(ACCESS_TOKEN.encode()).digest()[:32], id="ed25519-sha512"),
        pytest.param("EdDSA", "Ed448", hashlib.shake_256(ACCESS_TOKEN.encode()).digest(114)[:57], id="ed448-shake256"),
    ],
)
def test_at_hash_uses_the_hash_of_the_alg(alg: str, curve: str | None, digest: bytes) -> None:
    assert compute_at_hash(ACCESS_TOKEN, alg, curve) == b64(digest)


@pytest.mark.parametrize(
    ("alg", "curve"),
    [
        pytest.param("EdDSA", None, id="eddsa-without-its-curve"),
        pytest.param("EdDSA", "X25519", id="eddsa-on-a-key-agreement-curve"),
        pytest.param("none", None, id="alg-without-a-hash"),
    ],
)
def test_at_hash_without_a_defined_hash_is_an_error(alg: str, curve: str | None) -> None:
    with pytest.raises(ValueError):
        compute_at_hash(ACCESS_TOKEN, alg, curve)


def test_at_hash_of_an_eddsa_token_is_checked_with_sha512(keys: Keys) -> None:
    good = keys.ed.sign(id_token_claims(at_hash=b64(hashlib.sha512(ACCESS_TOKEN.encode()).digest()[:32])))
    assert verify(good, keys.keyset())["sub"] == "user-1"
    bad = keys.ed.sign(id_token_claims(at_hash=b64(hashlib.sha256(ACCESS_TOKEN.encode()).digest()[:16])))
    with pytest.raises(TokenInvalid, match="at_hash mismatch"):
        verify(bad, keys.keyset())


def test_at_hash_of_an_ed448_token_is_checked_with_shake256(keys: Keys) -> None:
    # EdDSA names no hash: an Ed448 key means SHAKE256 with 114 bytes, left half (not Ed25519's SHA-512)
    good = keys.ed448.sign(id_token_claims(at_hash=b64(hashlib.shake_256(ACCESS_TOKEN.encode()).digest(114)[:57])))
    assert verify(good, keys.keyset())["sub"] == "user-1"
    bad = keys.ed448.sign(id_token_claims(at_hash=b64(hashlib.sha512(ACCESS_TOKEN.encode()).digest()[:32])))
    with pytest.raises(TokenInvalid, match="at_hash mismatch"):
        verify(bad, keys.keyset())


# KeySet: which JWKS members are kept and found


def test_keyset_drops_encryption_and_private_keys(keys: Keys) -> None:
    keyset = KeySet.from_jwks(
        {
            "keys": [
                {**keys.rsa.public_jwk, "use": "enc", "kid": "enc-1"},
                {**keys.ec.public_jwk, "d": "private-part", "kid": "leaked-1"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac-1"},
                {"kty": "unknown"},
                "not-an-object",
                keys.rsa.public_jwk,
            ]
        }
    )
    assert [jwk["kid"] for jwk in keyset.jwks] == ["rsa-1"]
    with pytest.raises(UnknownKeyId):
        keyset.find("enc-1", "RS256")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("rsa", id="rsa"),
        pytest.param("ec", id="ec-p256"),
        pytest.param("ed", id="ed25519"),
        pytest.param("ed448", id="ed448"),
    ],
)
def test_a_jwks_key_published_with_its_private_part_never_verifies(keys: Keys, name: str) -> None:
    # a JWKS entry with "d" is a leaked private key: anyone may have signed with it
    leaked: JwtKey = getattr(keys, name)
    private_jwk = get_default_algorithms()[leaked.alg].to_jwk(leaked.private, as_dict=True)
    assert "d" in private_jwk
    keyset = KeySet.from_jwks({"keys": [{**private_jwk, "kid": "leaked-1", "use": "sig"}, keys.ps.public_jwk]})
    assert [jwk["kid"] for jwk in keyset.jwks] == ["ps-1"]
    with pytest.raises(UnknownKeyId):
        verify(leaked.sign(id_token_claims(), kid="leaked-1"), keyset)


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param({"alg": ["RS256"]}, id="alg-a-list"),
        pytest.param({"crv": ["P-256"], "kty": "EC"}, id="crv-a-list"),
        pytest.param({"kid": 7}, id="kid-a-number"),
        pytest.param({"use": ["sig"]}, id="use-a-list"),
        pytest.param({"kty": None}, id="kty-null"),
        pytest.param({"n": 12345}, id="modulus-a-number"),
        pytest.param({"e": None}, id="exponent-null"),
    ],
)
def test_a_malformed_key_in_the_jwks_costs_only_itself(keys: Keys, malformed: dict[str, Any]) -> None:
    broken = {**keys.rsa.public_jwk, "kid": "broken-1", **malformed}
    keyset = KeySet.from_jwks({"keys": [broken, keys.ps.public_jwk]})
    assert [jwk["kid"] for jwk in keyset.jwks] == ["ps-1"]
    assert verify(keys.ps.sign(id_token_claims(), kid="ps-1"), keyset)["sub"]


@pytest.mark.parametrize(
    ("key_ops", "kept"),
    [
        pytest.param(["verify"], True, id="verify"),
        pytest.param(["sign", "verify"], True, id="sign-and-verify"),
        pytest.param(["encrypt"], False, id="encrypt-only"),
        pytest.param([], False, id="none-listed"),
        pytest.param("verify", False, id="not-a-list"),
    ],
)
def test_a_key_whose_key_ops_leave_out_verify_never_verifies(keys: Keys, key_ops: object, kept: bool) -> None:
    # RFC 7517 section 4.3: like "use": "enc", key_ops without "verify" is no signature key
    jwk = {**keys.rsa.public_jwk, "key_ops": key_ops}
    keyset = KeySet.from_jwks({"keys": [jwk, keys.ps.public_jwk]})
    assert (keys.rsa.public_jwk["kid"] in [k["kid"] for k in keyset.jwks]) is kept


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({}, id="no-keys-member"),
        pytest.param({"keys": []}, id="empty"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, id="only-symmetric"),
        pytest.param({"keys": "nope"}, id="keys-not-a-list"),
    ],
)
def test_keyset_without_usable_keys_is_a_provider_problem(doc: dict[str, Any]) -> None:
    with pytest.raises(ProviderUnavailable):
        KeySet.from_jwks(doc)


def test_keyset_find_without_kid_returns_every_key_fitting_the_alg(keys: Keys) -> None:
    keyset = KeySet.from_jwks(jwks_of(keys.rsa, keys.ps, keys.ec))
    assert len(keyset.find(None, "RS256")) == 2
    assert len(keyset.find(None, "ES256")) == 1
    with pytest.raises(TokenInvalid, match="no key for alg EdDSA"):
        keyset.find(None, "EdDSA")


def test_a_key_that_cannot_be_built_for_the_alg_verifies_nothing() -> None:
    # a set made directly, not through from_jwks (which drops such keys): its modulus is no number
    keyset = KeySet([{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}])
    with pytest.raises(TokenInvalid) as caught:
        keyset.find("broken", "RS256")
    assert caught.value.reason == "unusable key for alg RS256"


def test_a_key_below_the_minimum_length_is_refused() -> None:
    # RFC 7518 section 3.3: RSA keys of 2048 bits or more; a 1024-bit provider key verifies nothing
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(weak.public_key())), "kid": "weak", "use": "sig", "alg": "RS256"}
    header, payload = _b64({"alg": "RS256", "kid": "weak"}), _b64(id_token_claims())
    signature = weak.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
    with pytest.raises(TokenInvalid) as caught:
        verify(token, KeySet.from_jwks({"keys": [jwk]}))
    assert caught.value.reason == "key too weak for RS256"


def test_a_key_verifies_only_under_the_alg_it_was_built_for(keys: Keys) -> None:
    # KeySet.find builds each key for the token's alg; this holds even if a key of another alg got through
    token = keys.ps.sign(id_token_claims(), alg="PS256")
    built_for_rs256 = jwt.PyJWK({**keys.ps.public_jwk, "alg": "RS256"}, "RS256")
    with pytest.raises(TokenInvalid) as caught:
        _verified_payload(token, {"alg": "PS256"}, "PS256", built_for_rs256)
    assert caught.value.reason == "alg not allowed: PS256"


def _segment_by_regex(segment: str) -> bytes | None:
    """The reading ``_segment`` must match: the URL-safe alphabet by regex, padding rules,
    urlsafe_b64decode and a canonical re-encoding; None where it is refused."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4)
        or len(stripped) % 4 == 1
        or not re.fullmatch(r"[A-Za-z0-9_-]*", stripped)
    ):
        return None
    decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    return decoded if base64.urlsafe_b64encode(decoded).rstrip(b"=") == stripped.encode("ascii") else None


@given(
    st.text(alphabet="AQgw09azAZ-_+/=. \n\u00e9", max_size=12)
    | st.binary(max_size=9).map(lambda data: base64.urlsafe_b64encode(data).decode())
    | st.binary(max_size=9).map(lambda data: base64.urlsafe_b64encode(data).decode().rstrip("="))
)
@example("")
@example("QQ")
@example("QR")
@example("QQ=")
@example("QQ==")
@example("QQ===")
@example("Q")
@example("a+b/")
@example("QQ==QQ")
def test_a_segment_is_read_exactly_as_the_strict_reading_defines(segment: str) -> None:
    expected = _segment_by_regex(segment)
    if expected is None:
        with pytest.raises(TokenInvalid, match="malformed token"):
            _segment(segment)
    else:
        assert _segment(segment) == expected
