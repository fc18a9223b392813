"""The ``X-Authproxy-Identity`` assertion and ``/oauth2/jwks.json`` (SPEC sections 2, 3 and 4).

Verification is done the way an upstream would: with nothing but the published JWK Set (after a
JSON round trip, as if fetched over HTTP) and PyJWT, against the real clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from jwt.utils import base64url_decode, base64url_encode

from authproxy.app import Services, build_services
from authproxy.config import IdentityJWTConfig, parse_config
from authproxy.errors import ConfigError
from authproxy.identity_jwt import CACHE_MAX_ENTRIES, IdentitySigner, jwk_thumbprint, load_signing_key, public_jwk
from authproxy.metrics import Metrics

ISSUER = "https://app.example.com"
TTL = 60.0
USER: dict[str, Any] = {
    "sub": "u-1",
    "email": "alice@example.com",
    "groups": ["admins", "eng"],
    "preferred_username": "alice",
    "email_verified": True,
}

# A fixed key and its RFC 7638 thumbprint as computed by an independent implementation
# (panva/jose calculateJwkThumbprint, Node 20): importPKCS8(PEM of FIXED_D) -> exportJWK -> thumbprint.
FIXED_D = 0x1F2E3D4C5B6A79880123456789ABCDEF0FEDCBA9876543210A1B2C3D4E5F6071
FIXED_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "w3xGUQAYE4L_tCY7W4fEdRmmjW1pka29WTo--hEUIig",
    "y": "oTT_JryY6TM_hK1xUA9QzKiHCqvCkCIUIZH8G_JKD9M",
}
FIXED_KID = "bphYiaLUOIk9XCinXmVFC_VMEfZ0AZRz-XESirFv-XQ"


def fixed_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(FIXED_D, ec.SECP256R1())


def pem(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


def write_key(tmp_path: Path, data: bytes, name: str = "identity.pem") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def signer() -> IdentitySigner:
    return IdentitySigner(fixed_key(), ISSUER, TTL)


def verify(token: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    """What an upstream does: pick the key by kid from the fetched JWKS, verify with PyJWT."""
    key_set = jwt.PyJWKSet.from_dict(json.loads(json.dumps(jwks)))
    kid = jwt.get_unverified_header(token)["kid"]
    decoded: dict[str, Any] = jwt.decode(
        token,
        key_set[kid],
        algorithms=["ES256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "iat", "exp", "sub"]},
    )
    return decoded


# ----------------------------------------------------------------------------- verification


def test_upstream_verifies_with_the_jwks_alone(signer: IdentitySigner) -> None:
    now = time.time()
    token = signer.sign(USER, "legacy-app", now)
    decoded = verify(token, signer.jwks(), "legacy-app")
    assert decoded == {
        "iss": ISSUER,
        "aud": "legacy-app",
        "sub": "u-1",
        "email": "alice@example.com",
        "groups": ["admins", "eng"],
        "iat": int(now),
        "exp": int(now + TTL),
    }


def test_header_names_the_key(signer: IdentitySigner) -> None:
    header = jwt.get_unverified_header(signer.sign(USER, "legacy-app", time.time()))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": FIXED_KID}


def test_wrong_audience_fails(signer: IdentitySigner) -> None:
    token = signer.sign(USER, "legacy-app", time.time())
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, signer.jwks(), "other-app")


def test_expired_assertion_fails(signer: IdentitySigner) -> None:
    token = signer.sign(USER, "legacy-app", time.time() - TTL - 5)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token, signer.jwks(), "legacy-app")


def test_another_proxys_key_does_not_verify(signer: IdentitySigner) -> None:
    other = IdentitySigner(ec.generate_private_key(ec.SECP256R1()), ISSUER, TTL)
    token = other.sign(USER, "legacy-app", time.time())
    # the upstream knows only our JWKS: the kid is unknown, and forcing our key fails the signature
    with pytest.raises(KeyError):
        verify(token, signer.jwks(), "legacy-app")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, jwt.PyJWK(signer.jwks()["keys"][0]), algorithms=["ES256"], audience="legacy-app")


def test_tampered_payload_fails(signer: IdentitySigner) -> None:
    token = signer.sign(USER, "legacy-app", time.time())
    header, _, signature = token.split(".")
    forged = base64url_encode(json.dumps({**USER, "groups": ["root"], "aud": "legacy-app"}).encode())
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{forged.decode()}.{signature}", signer.jwks(), "legacy-app")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param({"sub": "u-1"}, {"sub": "u-1"}, id="sub-only"),
        pytest.param({"sub": "u-1", "email": "a@b.c"}, {"sub": "u-1", "email": "a@b.c"}, id="no-groups"),
        pytest.param({"sub": "u-1", "groups": "admins"}, {"sub": "u-1", "groups": ["admins"]}, id="groups-string"),
        pytest.param({"sub": "u-1", "groups": []}, {"sub": "u-1", "groups": []}, id="groups-empty"),
        pytest.param(
            {"sub": "u-1", "groups": ["a", 7, None, "b"]}, {"sub": "u-1", "groups": ["a", "b"]}, id="groups-mixed"
        ),
        pytest.param({"sub": "u-1", "email": 5, "groups": {"a": 1}}, {"sub": "u-1"}, id="malformed-dropped"),
        pytest.param(
            {"sub": "u-1", "name": "Alice", "access_token": "at-secret", "aud": "client", "iss": "https://idp"},
            {"sub": "u-1"},
            id="other-claims-never-copied",
        ),
    ],
)
def test_identity_claims_present_only_when_the_user_has_them(
    signer: IdentitySigner, user: dict[str, Any], expected: dict[str, Any]
) -> None:
    now = time.time()
    decoded = verify(signer.sign(user, "app", now), signer.jwks(), "app")
    assert decoded == {**expected, "iss": ISSUER, "aud": "app", "iat": int(now), "exp": int(now + TTL)}


# ----------------------------------------------------------------------------- JWKS and kid


def test_jwks_publishes_only_the_public_key(signer: IdentitySigner) -> None:
    assert signer.jwks() == {"keys": [{**FIXED_JWK, "use": "sig", "alg": "ES256", "kid": FIXED_KID}]}


def test_jwks_copy_cannot_change_the_signer(signer: IdentitySigner) -> None:
    signer.jwks()["keys"][0]["kid"] = "changed"
    signer.jwks()["keys"].clear()
    assert signer.jwks()["keys"][0]["kid"] == FIXED_KID


def test_kid_is_the_rfc_7638_thumbprint() -> None:
    jwk = public_jwk(fixed_key().public_key())
    assert jwk == FIXED_JWK
    assert jwk_thumbprint(jwk) == FIXED_KID
    # extra members do not change a thumbprint (RFC 7638 section 3.2)
    assert jwk_thumbprint({**jwk, "use": "sig", "alg": "ES256"}) == FIXED_KID


def test_coordinates_keep_leading_zero_bytes() -> None:
    # RFC 7518 section 6.2.1.2: x and y are always 32 bytes; find a key with a short coordinate
    for _ in range(2000):
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        if numbers.x < 1 << 248 or numbers.y < 1 << 248:
            break
    else:
        pytest.fail("no key with a leading zero byte in 2000 tries")
    jwk = public_jwk(key.public_key())
    assert len(base64url_decode(jwk["x"])) == 32
    assert len(base64url_decode(jwk["y"])) == 32
    signer = IdentitySigner(key, ISSUER, TTL)
    assert verify(signer.sign(USER, "app", time.time()), signer.jwks(), "app")["sub"] == "u-1"


# ----------------------------------------------------------------------------- key file


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "sec1-ec-private-key"],
)
def test_key_file_is_loaded(tmp_path: Path, fmt: serialization.PrivateFormat) -> None:
    cfg = IdentityJWTConfig(signing_key_file=write_key(tmp_path, pem(fixed_key(), fmt)), ttl=TTL)
    signer = IdentitySigner.from_config(cfg, ISSUER)
    assert signer.generated is False
    assert signer.kid == FIXED_KID
    assert verify(signer.sign(USER, "app", time.time()), signer.jwks(), "app")["sub"] == "u-1"


def test_kid_is_stable_across_loads_and_replicas(tmp_path: Path) -> None:
    cfg = IdentityJWTConfig(signing_key_file=write_key(tmp_path, pem(ec.generate_private_key(ec.SECP256R1()))))
    first, second = IdentitySigner.from_config(cfg, ISSUER), IdentitySigner.from_config(cfg, ISSUER)
    assert first.kid == second.kid
    assert first.jwks() == second.jwks()
    # an assertion from one replica verifies with the JWKS another replica serves
    assert verify(first.sign(USER, "app", time.time()), second.jwks(), "app")["sub"] == "u-1"


def test_without_a_key_file_a_key_is_generated() -> None:
    first = IdentitySigner.from_config(IdentityJWTConfig(), ISSUER)
    second = IdentitySigner.from_config(IdentityJWTConfig(), ISSUER)
    assert first.generated and second.generated
    # this is why the caller warns: two replicas would each publish a different key
    assert first.kid != second.kid
    assert verify(first.sign(USER, "app", time.time()), first.jwks(), "app")["sub"] == "u-1"


def _services_for(route_asks: bool, key_file: str | None) -> Services:
    key = f"identity_jwt: {{signing_key_file: {key_file}}}\n" if key_file else ""
    config = parse_config(
        "server: {public_url: 'https://app.example.test'}\n"
        "provider: {issuer: 'https://id.example.test', client_id: app, client_secret: s3cret-s3cret}\n"
        f"session: {{secrets: ['{'s' * 32}']}}\n"
        + key
        + f"routes: [{{name: a, upstream: 'http://127.0.0.1:1', auth: none, identity_jwt: {str(route_asks).lower()}}}]",
        {},
    )
    return build_services(config, Metrics())


async def test_no_key_is_made_when_no_route_asks_for_assertions_and_none_is_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # else /oauth2/jwks.json would publish a key nothing signs with, and start would warn of it
    assert _services_for(route_asks=False, key_file=None).signer is None
    assert "a key was generated" not in caplog.text


async def test_a_key_is_made_for_a_route_that_asks_and_loaded_when_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generated = _services_for(route_asks=True, key_file=None).signer
    assert generated is not None and generated.generated
    assert "a key was generated at start" in caplog.text
    loaded = _services_for(route_asks=False, key_file=write_key(tmp_path, pem(fixed_key()))).signer
    assert loaded is not None and not loaded.generated


def test_ttl_comes_from_the_config(tmp_path: Path) -> None:
    cfg = IdentityJWTConfig.model_validate({"signing_key_file": write_key(tmp_path, pem(fixed_key())), "ttl": "5m"})
    decoded = jwt.decode(
        IdentitySigner.from_config(cfg, ISSUER).sign(USER, "app", 1000.0),
        options={"verify_signature": False},
    )
    assert decoded["exp"] - decoded["iat"] == 300


def _encrypted_p256() -> bytes:
    return fixed_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def _public_only() -> bytes:
    return (
        fixed_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("make_pem", "says"),
    [
        pytest.param(lambda: pem(ec.generate_private_key(ec.SECP384R1())), "secp384r1", id="ec-p384"),
        pytest.param(lambda: pem(ec.generate_private_key(ec.SECP256K1())), "secp256k1", id="ec-secp256k1"),
        pytest.param(lambda: pem(rsa.generate_private_key(65537, 2048)), "RSA", id="rsa"),
        pytest.param(lambda: pem(ed25519.Ed25519PrivateKey.generate()), "Ed25519", id="ed25519"),
        # a key-agreement key loads as a private key but signs nothing
        pytest.param(lambda: pem(x25519.X25519PrivateKey.generate()), "a key of another type", id="x25519"),
        pytest.param(_encrypted_p256, "encrypted", id="encrypted"),
        pytest.param(_public_only, "not a PEM private key", id="public-key-only"),
        pytest.param(lambda: b"not a key\n", "not a PEM private key", id="garbage"),
        pytest.param(lambda: b"", "not a PEM private key", id="empty"),
    ],
)
def test_unusable_key_file_is_refused(tmp_path: Path, make_pem: Any, says: str) -> None:
    cfg = IdentityJWTConfig(signing_key_file=write_key(tmp_path, make_pem()))
    with pytest.raises(ConfigError) as caught:
        IdentitySigner.from_config(cfg, ISSUER)
    [problem] = caught.value.problems
    assert problem.startswith("identity_jwt.signing_key_file: ")
    assert says in problem


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pem")
    with pytest.raises(ConfigError) as caught:
        IdentitySigner.from_config(IdentityJWTConfig(signing_key_file=missing), ISSUER)
    [problem] = caught.value.problems
    assert problem.startswith("identity_jwt.signing_key_file: cannot read ")
    assert missing in problem


@pytest.mark.parametrize("ttl", ["0s", "500ms"], ids=["zero", "under-a-second"])
def test_ttl_under_a_second_is_refused(ttl: str) -> None:
    # NumericDates are whole seconds: a shorter ttl would make exp == iat
    with pytest.raises(ConfigError) as caught:
        parse_config(
            f"identity_jwt: {{ttl: {ttl}}}\nroutes: [{{name: a, upstream: 'http://127.0.0.1:1', auth: none}}]", {}
        )
    assert caught.value.problems == ["identity_jwt.ttl: must be at least 1s"]


def test_load_signing_key_error_carries_no_key_material() -> None:
    secret_pem = pem(rsa.generate_private_key(65537, 2048))
    with pytest.raises(ConfigError) as caught:
        load_signing_key(secret_pem)
    body = secret_pem.decode().splitlines()[1]
    assert body not in str(caught.value)


def test_signer_repr_shows_no_key(signer: IdentitySigner) -> None:
    text = repr(signer)
    assert FIXED_KID in text
    assert str(FIXED_D) not in text and hex(FIXED_D)[2:].lower() not in text.lower()


# ----------------------------------------------------------------------------- cache

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("later", "reused"),
    [
        pytest.param(0.0, True, id="same-instant"),
        pytest.param(10.0, True, id="within-window"),
        pytest.param(TTL / 2, True, id="exactly-half-remaining"),
        pytest.param(TTL / 2 + 0.001, False, id="under-half-remaining"),
        pytest.param(TTL - 1, False, id="nearly-expired"),
        pytest.param(TTL + 1, False, id="expired"),
        pytest.param(-5.0, False, id="clock-stepped-back"),
    ],
)
def test_cached_assertion_keeps_at_least_half_its_lifetime(signer: IdentitySigner, later: float, reused: bool) -> None:
    first = signer.sign(USER, "app", NOW)
    second = signer.sign(USER, "app", NOW + later)
    assert (first == second) is reused
    decoded = jwt.decode(second, options={"verify_signature": False})
    assert decoded["exp"] - (NOW + later) >= TTL / 2
    assert decoded["iat"] <= NOW + later


@pytest.mark.parametrize(
    ("changes", "audience"),
    [
        pytest.param({}, "other-app", id="other-route"),
        pytest.param({"sub": "u-2"}, "app", id="other-user"),
        pytest.param({"email": "new@example.com"}, "app", id="email-changed"),
        pytest.param({"groups": ["admins"]}, "app", id="groups-changed"),
        pytest.param({"groups": ...}, "app", id="groups-removed"),
    ],
)
def test_cache_never_serves_another_identity(signer: IdentitySigner, changes: dict[str, Any], audience: str) -> None:
    first = signer.sign(USER, "app", NOW)
    user = {k: v for k, v in {**USER, **changes}.items() if v is not ...}
    second = signer.sign(user, audience, NOW + 1)
    assert second != first
    decoded = jwt.decode(second, options={"verify_signature": False}, audience=audience)
    assert decoded["aud"] == audience
    for name in ("sub", "email", "groups"):
        assert decoded.get(name) == user.get(name)


def test_claims_other_than_identity_do_not_defeat_the_cache(signer: IdentitySigner) -> None:
    assert signer.sign(USER, "app", NOW) == signer.sign({**USER, "preferred_username": "x", "exp": 1}, "app", NOW + 1)


def test_cache_is_bounded(signer: IdentitySigner) -> None:
    first = signer.sign({"sub": "u-0"}, "app", NOW)
    for i in range(1, CACHE_MAX_ENTRIES + 1):
        signer.sign({"sub": f"u-{i}"}, "app", NOW)
    # the oldest entry was evicted: signing again makes a new assertion (ES256 signatures are randomised)
    assert signer.sign({"sub": "u-0"}, "app", NOW) != first
