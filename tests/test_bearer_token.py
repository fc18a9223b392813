"""JWT access tokens from API clients (SPEC section 4 "Bearer tokens", RFC 9068 section 4):
provider JWKS signature, allow-listed alg, iss, exp (required), aud in bearer_audiences, sub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from authproxy.errors import TokenInvalid
from authproxy.oidc.tokens import KeySet, verify_bearer_token
from tests.support.oidc_tokens import (
    ALL_ASYMMETRIC,
    CLIENT_SECRET,
    ISSUER,
    LOGOUT_EVENT,
    NOW,
    SKEW,
    JwtKey,
    access_token_claims,
    generate_key,
    hmac_token,
    jwks_of,
    unsigned_token,
)

AUDIENCES = ("https://api.example.com", "https://other-api.example.com")
ID_TOKEN = "an ID token is not an access token"
LOGOUT_TOKEN = "a logout token is not an access token"


@dataclass(frozen=True)
class Keys:
    provider: JwtKey
    forger: JwtKey

    def keyset(self) -> KeySet:
        return KeySet.from_jwks(jwks_of(self.provider))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(provider=generate_key("RS256", "op-1"), forger=generate_key("RS256", "op-1"))


def verify(raw: str, keys: Keys, allowed: tuple[str, ...] = ALL_ASYMMETRIC) -> dict[str, Any]:
    return verify_bearer_token(
        raw, keys=keys.keyset(), issuer=ISSUER, audiences=AUDIENCES, allowed_algorithms=allowed, now=NOW, skew=SKEW
    )


FAULTS: list[Any] = [
    pytest.param(lambda k: k.forger.sign(access_token_claims()), "bad signature", id="bad-signature"),
    pytest.param(lambda k: unsigned_token(access_token_claims()), "alg not allowed: none", id="alg-none"),
    pytest.param(lambda k: hmac_token(access_token_claims(), CLIENT_SECRET), "alg not allowed: HS256", id="hs256"),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(exp=int(NOW - SKEW) - 1)), "token expired", id="expired"
    ),
    pytest.param(lambda k: k.provider.sign(access_token_claims(exp=None)), "exp missing", id="missing-exp"),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(aud="https://unrelated.example.com")),
        "aud mismatch",
        id="wrong-aud",
    ),
    pytest.param(lambda k: k.provider.sign(access_token_claims(aud=None)), "aud missing", id="missing-aud"),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(iss="https://evil.example.com")), "iss mismatch", id="wrong-iss"
    ),
    pytest.param(lambda k: k.provider.sign(access_token_claims(sub=None)), "sub missing", id="missing-sub"),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(nbf=int(NOW + SKEW) + 1)), "token not yet valid", id="nbf-future"
    ),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(iat=int(NOW + SKEW) + 1)), "iat in the future", id="iat-future"
    ),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(), typ="logout+jwt"),
        "typ not accepted for an access token",
        id="logout-token-typ",
    ),
    # an ID token (its aud passes when bearer_audiences is the client id) is not an access token
    pytest.param(lambda k: k.provider.sign(access_token_claims(nonce="n-1")), ID_TOKEN, id="id-token-nonce"),
    pytest.param(lambda k: k.provider.sign(access_token_claims(at_hash="x")), ID_TOKEN, id="id-token-at-hash"),
    pytest.param(lambda k: k.provider.sign(access_token_claims(c_hash="x")), ID_TOKEN, id="id-token-c-hash"),
    pytest.param(lambda k: k.provider.sign(access_token_claims(typ="ID")), ID_TOKEN, id="keycloak-id-token"),
    pytest.param(lambda k: k.provider.sign(access_token_claims(token_use="id")), ID_TOKEN, id="cognito-id-token"),
    # nor is a logout token, which Keycloak types no more than "JWT" and addresses to the client id
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(events={LOGOUT_EVENT: {}}), typ="JWT"),
        LOGOUT_TOKEN,
        id="logout-token-claims",
    ),
    pytest.param(
        lambda k: k.provider.sign(access_token_claims(events={LOGOUT_EVENT: {}}), typ="at+jwt"),
        LOGOUT_TOKEN,
        id="logout-token-typed-as-access-token",
    ),
]


@pytest.mark.parametrize(("build", "reason"), FAULTS)
def test_bearer_token_fault_is_refused(keys: Keys, build: Callable[[Keys], str], reason: str) -> None:
    with pytest.raises(TokenInvalid) as caught:
        verify(build(keys), keys)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("build"),
    [
        pytest.param(lambda k: k.provider.sign(access_token_claims(), typ="at+jwt"), id="valid-typ-at+jwt"),
        pytest.param(lambda k: k.provider.sign(access_token_claims(), typ="application/at+jwt"), id="valid-typ-media"),
        pytest.param(lambda k: k.provider.sign(access_token_claims(), typ="JWT"), id="valid-typ-jwt"),
        pytest.param(lambda k: k.provider.sign(access_token_claims()), id="valid-no-typ"),
        pytest.param(lambda k: k.provider.sign(access_token_claims(aud=AUDIENCES[1])), id="valid-second-audience"),
        pytest.param(lambda k: k.provider.sign(access_token_claims(iat=None)), id="valid-without-iat"),
        pytest.param(lambda k: k.provider.sign(access_token_claims(typ="Bearer")), id="valid-keycloak-access-token"),
        # Keycloak before 24 copies the login's nonce into access tokens, which say what they are
        pytest.param(
            lambda k: k.provider.sign(access_token_claims(typ="Bearer", nonce="n-1")), id="valid-keycloak-with-nonce"
        ),
        pytest.param(
            lambda k: k.provider.sign(access_token_claims(nonce="n-1"), typ="at+jwt"), id="valid-rfc-9068-with-nonce"
        ),
        pytest.param(lambda k: k.provider.sign(access_token_claims(token_use="access")), id="valid-cognito-access"),
        pytest.param(
            lambda k: k.provider.sign(access_token_claims(exp=int(NOW - SKEW) + 1)), id="valid-expired-within-skew"
        ),
    ],
)
def test_valid_bearer_token_is_accepted(keys: Keys, build: Callable[[Keys], str]) -> None:
    assert verify(build(keys), keys)["sub"] == "user-1"


def test_hs256_bearer_token_is_refused_even_when_hs256_is_listed(keys: Keys) -> None:
    # an access token is signed by the provider's keys, never with our client secret
    with pytest.raises(TokenInvalid, match="no client secret"):
        verify(hmac_token(access_token_claims(), CLIENT_SECRET), keys, allowed=("RS256", "HS256"))
