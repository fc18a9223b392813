"""Logout token validation (OpenID Connect Back-Channel Logout 1.0 section 2.6): every check SPEC
section 3 lists for `/backchannel_logout` has a row that fails if the check is removed. The jti
replay cache lives with the caller (the session store) and is tested there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from authproxy.errors import TokenInvalid, UnknownKeyId
from authproxy.oidc.tokens import KeySet, verify_logout_token
from tests.support.oidc_tokens import (
    ALL_ASYMMETRIC,
    CLIENT_ID,
    ISSUER,
    LOGOUT_EVENT,
    NONCE,
    NOW,
    SKEW,
    JwtKey,
    generate_key,
    jwks_of,
    logout_token_claims,
    unsigned_token,
)


@dataclass(frozen=True)
class Keys:
    provider: JwtKey
    forger: JwtKey

    def keyset(self) -> KeySet:
        return KeySet.from_jwks(jwks_of(self.provider))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(provider=generate_key("ES256", "op-1"), forger=generate_key("ES256", "op-1"))


def verify(raw: str, keys: Keys) -> dict[str, Any]:
    return verify_logout_token(
        raw,
        keys=keys.keyset(),
        issuer=ISSUER,
        client_id=CLIENT_ID,
        allowed_algorithms=ALL_ASYMMETRIC,
        now=NOW,
        skew=SKEW,
    )


FAULTS: list[Any] = [
    pytest.param(lambda k: k.forger.sign(logout_token_claims()), "bad signature", id="forged"),
    pytest.param(lambda k: unsigned_token(logout_token_claims()), "alg not allowed: none", id="alg-none"),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(iss="https://evil.example.com")), "iss mismatch", id="wrong-iss"
    ),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(aud="another-client")), "aud mismatch", id="wrong-aud"),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(aud=None)), "aud missing", id="missing-aud"),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(iat=None)), "iat missing", id="missing-iat"),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(iat=int(NOW + SKEW) + 1)), "iat in the future", id="iat-future"
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(exp=int(NOW - SKEW) - 1)), "token expired", id="expired"
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(nbf=int(NOW + SKEW) + 1)), "token not yet valid", id="nbf-future"
    ),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(jti=None)), "jti missing", id="missing-jti"),
    # an empty jti cannot be remembered against replay
    pytest.param(lambda k: k.provider.sign(logout_token_claims(jti="")), "jti missing", id="empty-jti"),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(jti=7)), "jti missing", id="jti-not-a-string"),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(nonce=NONCE)), "logout token carries a nonce", id="nonce-carrying"
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(events=None)), "back-channel logout event missing", id="no-events"
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(events={"http://schemas.example.com/other": {}})),
        "back-channel logout event missing",
        id="missing-event",
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(events={LOGOUT_EVENT: "yes"})),
        "back-channel logout event missing",
        id="event-not-an-object",
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(sid=None, sub=None)),
        "sid and sub missing",
        id="missing-sid-and-sub",
    ),
    pytest.param(lambda k: k.provider.sign(logout_token_claims(sid=12)), "sid malformed", id="sid-not-a-string"),
    # section 4.1: a token that says it is another kind is none, even with a logout token's claims
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(), typ="at+jwt"),
        "typ not accepted for a logout token",
        id="access-token-typ",
    ),
    pytest.param(
        lambda k: k.provider.sign(logout_token_claims(), typ="secevent+jwt"),
        "typ not accepted for a logout token",
        id="security-event-typ",
    ),
]


@pytest.mark.parametrize(("build", "reason"), FAULTS)
def test_logout_token_fault_is_refused(keys: Keys, build: Callable[[Keys], str], reason: str) -> None:
    with pytest.raises(TokenInvalid) as caught:
        verify(build(keys), keys)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(logout_token_claims(), id="sid-and-sub"),
        pytest.param(logout_token_claims(sub=None), id="sid-only"),
        pytest.param(logout_token_claims(sid=None), id="sub-only"),
        pytest.param(logout_token_claims(exp=int(NOW) + 120), id="with-exp"),
        pytest.param(logout_token_claims(aud=[CLIENT_ID, "other"]), id="aud-list"),
    ],
)
def test_valid_logout_token_is_accepted(keys: Keys, claims: dict[str, Any]) -> None:
    verified = verify(keys.provider.sign(claims, typ="logout+jwt"), keys)
    assert verified["jti"] == "jti-1"
    assert verified.get("sid") == claims.get("sid") and verified.get("sub") == claims.get("sub")


@pytest.mark.parametrize("typ", [None, "logout+jwt", "application/logout+jwt", "JWT"])
def test_a_logout_token_typed_as_one_or_generically_is_accepted(keys: Keys, typ: str | None) -> None:
    # Keycloak writes the generic "JWT"; older providers write no typ at all
    headers = {} if typ is None else {"typ": typ}
    assert verify(keys.provider.sign(logout_token_claims(), **headers), keys)["jti"] == "jti-1"


def test_logout_token_with_unknown_kid_raises_unknown_key_id(keys: Keys) -> None:
    with pytest.raises(UnknownKeyId):
        verify(keys.provider.sign(logout_token_claims(), kid="new-key"), keys)
