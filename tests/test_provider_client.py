"""The provider client against a real in-process provider (tests/support/mini_provider.py):
discovery, client authentication as the token endpoint receives it (RFC 6749 section 2.3.1,
RFC 7523), the JWKS cache with its unknown-kid refetch and 10 s rate limit (SPEC section 3
`/callback`), and how failures are reported. Token responses and client assertions are checked
as pure functions at the end."""

from __future__ import annotations

import asyncio
import base64
import datetime
import errno
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer

from authproxy.errors import ConfigError, ProviderUnavailable, TokenEndpointError, TokenInvalid, UnknownKeyId
from authproxy.oidc import client as client_module
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.tokens import (
    CLIENT_ASSERTION_TYPE,
    AssertionKey,
    TokenSet,
    build_client_assertion,
    load_assertion_key,
    parse_token_response,
)
from authproxy.upstream_http import (
    UpstreamBadResponse,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamReset,
)
from tests.support.mini_provider import MiniProvider, RawAnswer, running_provider
from tests.support.net import free_port
from tests.support.oidc_tokens import (
    ALL_ASYMMETRIC,
    NONCE,
    JwtKey,
    access_token_claims,
    generate_key,
    id_token_claims,
    logout_token_claims,
)

CLIENT_ID = "my:client"  # a ":" that client_secret_basic must form-urlencode
CLIENT_SECRET = "p@ss word/é+"
START = 1_800_000_000.0


class Clock:
    """A settable clock for the client (the JWKS rate limit, token expiry)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key_a() -> JwtKey:
    return generate_key("RS256", "key-a")


@pytest.fixture(scope="module")
def key_b() -> JwtKey:
    return generate_key("ES256", "key-b")


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def ec_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
async def op(key_a: JwtKey) -> AsyncIterator[MiniProvider]:
    async with running_provider() as provider:
        provider.keys = [key_a]
        yield provider


MakeClient = Callable[..., Awaitable[ProviderClient]]


def client_arguments(issuer: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a ProviderClient for ``issuer`` (client_secret_basic, every asymmetric
    algorithm, 60 s skew, 5 s timeout, the system's CAs), with ``overrides``."""
    return {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "auth_method": "client_secret_basic",
        "private_key_pem": None,
        "allowed_algorithms": ALL_ASYMMETRIC,
        "clock_skew": 60.0,
        "timeout": 5.0,
        "ca_file": None,
    } | overrides


@pytest.fixture
async def make_client(op: MiniProvider) -> AsyncIterator[MakeClient]:
    """Started clients of ``op`` (discovery loaded unless ``load=False``), closed at teardown."""
    started: list[ProviderClient] = []

    async def make(*, load: bool = True, **overrides: Any) -> ProviderClient:
        client = ProviderClient(**client_arguments(op.issuer, **overrides))
        await client.start()
        started.append(client)
        if load:
            await client.load_metadata()
        return client

    yield make
    for client in started:
        await client.close()


def id_token(key: JwtKey, issuer: str, now: float, **claims: Any) -> str:
    return key.sign(id_token_claims(iss=issuer, aud=CLIENT_ID, iat=int(now), exp=int(now) + 300, **claims))


# ---------------------------------------------------------------------- discovery


async def test_discovery_loads_metadata_and_marks_ready(op: MiniProvider, make_client: MakeClient) -> None:
    client = await make_client(load=False)
    assert not client.ready
    with pytest.raises(ProviderUnavailable, match="not loaded"):
        client.metadata  # noqa: B018
    metadata = await client.load_metadata()
    assert client.ready and metadata.issuer == op.issuer
    assert metadata.token_endpoint == op.token_endpoint
    assert op.requests_to("/.well-known/openid-configuration")


async def test_discovery_naming_another_issuer_is_refused(op: MiniProvider, make_client: MakeClient) -> None:
    op.discovery_overrides["issuer"] = "https://evil.example.com"
    client = await make_client(load=False)
    with pytest.raises(ProviderUnavailable, match="differs from the configured issuer"):
        await client.load_metadata()
    assert not client.ready


@pytest.mark.parametrize("status", [404, 503])
async def test_a_document_the_provider_will_not_serve_is_unavailable_and_names_the_status(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, status: int
) -> None:
    op.discovery_status = status
    client = await make_client(load=False)
    with pytest.raises(ProviderUnavailable, match=f"discovery failed: .* answered HTTP {status}"):
        await client.load_metadata()
    op.discovery_status = 200
    await client.load_metadata()
    op.jwks_status = status
    with pytest.raises(ProviderUnavailable, match=f"JWKS fetch failed: .* answered HTTP {status}"):
        await client.verify_id_token(id_token(key_a, op.issuer, time.time()), NONCE)


async def test_discovery_of_an_unreachable_provider_is_unavailable() -> None:
    client = ProviderClient(**client_arguments(f"http://127.0.0.1:{free_port()}", timeout=2.0))
    await client.start()
    try:
        with pytest.raises(ProviderUnavailable, match="discovery"):
            await client.load_metadata()
    finally:
        await client.close()


@pytest.fixture
async def not_http_port() -> AsyncIterator[int]:
    """A loopback server that answers whatever it receives with a line that is not HTTP."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"hello there\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("scheme", "words"),
    [
        pytest.param("http", "the answer is not valid HTTP", id="not-http"),
        pytest.param("https", "the TLS handshake failed", id="tls-to-a-plain-server"),
    ],
)
async def test_discovery_from_a_server_that_does_not_speak_the_protocol_says_so_in_words(
    not_http_port: int, scheme: str, words: str
) -> None:
    issuer = f"{scheme}://127.0.0.1:{not_http_port}"
    discovery = f"{issuer}/.well-known/openid-configuration"
    client = ProviderClient(**client_arguments(issuer, timeout=5.0))
    await client.start()
    try:
        with pytest.raises(ProviderUnavailable, match=re.escape(f"discovery failed: {discovery}: {words}") + "$"):
            await client.load_metadata()
    finally:
        await client.close()


async def test_discovery_that_redirects_in_a_loop_says_so_in_words(aiohttp_server: AiohttpServer) -> None:
    async def again(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", again)
    server = await aiohttp_server(app, host="127.0.0.1")
    client = ProviderClient(**client_arguments(str(server.make_url("")).rstrip("/"), timeout=5.0))
    await client.start()
    try:
        with pytest.raises(ProviderUnavailable, match=r"discovery failed: .*: too many redirects$"):
            await client.load_metadata()
    finally:
        await client.close()


# ---------------------------------------------------------------------- authorization URL


async def test_authorize_url_carries_pkce_s256_and_keeps_the_endpoint_query(make_client: MakeClient) -> None:
    client = await make_client()
    url = client.build_authorize_url(
        state="st",
        nonce="no",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        redirect_uri="https://app.example.com/oauth2/callback",
        scopes=["openid", "profile", "offline_access"],
        extra_params={"prompt": "login", "state": "attacker", "code_challenge_method": "plain"},
    )
    parts = urlsplit(url)
    assert parts.path == "/authorize"
    assert parse_qs(parts.query) == {
        "tenant": ["main"],
        "prompt": ["login"],
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": ["https://app.example.com/oauth2/callback"],
        "scope": ["openid profile offline_access"],
        "state": ["st"],
        "nonce": ["no"],
        "code_challenge": ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
        "code_challenge_method": ["S256"],
    }


# ---------------------------------------------------------------------- client authentication

CODE_FORM = {
    "grant_type": "authorization_code",
    "code": "the-code",
    "redirect_uri": "https://app.example.com/oauth2/callback",
    "code_verifier": "v" * 64,
}


async def exchange(client: ProviderClient) -> TokenSet:
    return await client.exchange_code(CODE_FORM["code"], CODE_FORM["redirect_uri"], CODE_FORM["code_verifier"])


async def test_client_secret_basic_form_urlencodes_before_base64(op: MiniProvider, make_client: MakeClient) -> None:
    await exchange(await make_client(auth_method="client_secret_basic"))
    (request,) = op.token_requests
    # "my:client" and "p@ss word/é+" form-urlencoded (RFC 6749 section 2.3.1), then base64
    expected = base64.b64encode(b"my%3Aclient:p%40ss+word%2F%C3%A9%2B").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.form == CODE_FORM


async def test_client_secret_post_sends_id_and_secret_in_the_body(op: MiniProvider, make_client: MakeClient) -> None:
    await exchange(await make_client(auth_method="client_secret_post"))
    (request,) = op.token_requests
    assert "Authorization" not in request.headers
    assert request.form == {**CODE_FORM, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


async def test_public_client_sends_only_its_id(op: MiniProvider, make_client: MakeClient) -> None:
    await exchange(await make_client(auth_method="none", client_secret=None))
    (request,) = op.token_requests
    assert "Authorization" not in request.headers
    assert request.form == {**CODE_FORM, "client_id": CLIENT_ID}


@pytest.mark.parametrize(("pem_fixture", "alg"), [("rsa_pem", "RS256"), ("ec_pem", "ES256")], ids=["rsa", "ec-p256"])
async def test_private_key_jwt_assertion_verifies_with_the_public_key(
    op: MiniProvider, make_client: MakeClient, request: pytest.FixtureRequest, pem_fixture: str, alg: str
) -> None:
    pem: bytes = request.getfixturevalue(pem_fixture)
    clock = Clock(time.time())
    await exchange(
        await make_client(auth_method="private_key_jwt", client_secret=None, private_key_pem=pem, clock=clock)
    )
    (received,) = op.token_requests
    assert "Authorization" not in received.headers
    form = dict(received.form)
    assertion = form.pop("client_assertion")
    assert form == {**CODE_FORM, "client_id": CLIENT_ID, "client_assertion_type": CLIENT_ASSERTION_TYPE}
    public_key = serialization.load_pem_private_key(pem, password=None).public_key()
    assert jwt.get_unverified_header(assertion)["alg"] == alg
    claims = jwt.decode(assertion, public_key, algorithms=[alg], audience=op.token_endpoint, issuer=CLIENT_ID)  # type: ignore[arg-type]
    assert claims["sub"] == CLIENT_ID
    assert claims["iat"] == int(clock.now) and claims["exp"] == int(clock.now) + 60
    assert claims["jti"]


async def test_refresh_sends_no_scope(op: MiniProvider, make_client: MakeClient) -> None:
    clock = Clock()
    tokens = await (await make_client(clock=clock)).refresh("rt-old", sub="user-1", earlier_id_token=None)
    (request,) = op.token_requests
    assert request.form == {"grant_type": "refresh_token", "refresh_token": "rt-old"}
    assert request.headers["Authorization"].startswith("Basic ")
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_at) == ("at-1", "rt-1", START + 300)


async def test_refresh_checks_a_new_id_token_against_the_session(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    earlier = id_token(key_a, op.issuer, clock.now - 600)
    renewed = id_token(key_a, op.issuer, clock.now, nonce=None)
    op.token_answer = (200, {"access_token": "at-2", "token_type": "Bearer", "id_token": renewed})
    tokens = await client.refresh("rt-1", sub="user-1", earlier_id_token=earlier)
    assert tokens.id_token == renewed
    with pytest.raises(TokenInvalid, match="sub differs"):
        await client.refresh("rt-1", sub="user-2", earlier_id_token=earlier)
    op.token_answer = (200, {"access_token": "at-2", "token_type": "Bearer", "id_token": renewed + "x"})
    with pytest.raises(TokenInvalid):
        await client.refresh("rt-1", sub="user-1", earlier_id_token=earlier)
    # the session's ID token (from sign-in on another worker, never seen here) had two audiences
    other_audiences = key_a.sign(
        id_token_claims(iss=op.issuer, aud=[CLIENT_ID, "api"], azp=CLIENT_ID, iat=int(clock.now) - 600)
    )
    op.token_answer = (200, {"access_token": "at-2", "token_type": "Bearer", "id_token": renewed})
    with pytest.raises(TokenInvalid, match="aud differs"):
        await client.refresh("rt-1", sub="user-1", earlier_id_token=other_audiences)


async def test_a_refresh_compares_with_the_claims_the_last_refresh_verified(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    first = id_token(key_a, op.issuer, clock.now, nonce=None, auth_time=int(clock.now) - 600)
    op.token_answer = (200, {"access_token": "at-2", "token_type": "Bearer", "id_token": first})
    await client.refresh("rt-1", sub="user-1", earlier_id_token=None)
    # the next refresh does not read the token it verified again: it kept its claims
    monkeypatch.setattr(client_module.tokens, "unverified_claims", None)
    second = id_token(key_a, op.issuer, clock.now + 1, nonce=None, auth_time=int(clock.now))
    op.token_answer = (200, {"access_token": "at-3", "token_type": "Bearer", "id_token": second})
    with pytest.raises(TokenInvalid, match="auth_time differs"):
        await client.refresh("rt-2", sub="user-1", earlier_id_token=first)


async def test_the_claims_kept_are_one_id_tokens_per_session_not_one_per_refresh(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    earlier = None
    for n in range(5):
        renewed = id_token(key_a, op.issuer, clock.now + n, nonce=None, jti=f"t{n}")
        op.token_answer = (200, {"access_token": f"at-{n}", "token_type": "Bearer", "id_token": renewed})
        await client.refresh("rt", sub="user-1", earlier_id_token=earlier)
        earlier = renewed
    assert list(client._verified) == [earlier]


async def test_refresh_without_the_providers_keys_keeps_the_rotated_tokens_but_not_the_id_token(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    op.jwks_status = 503
    renewed = id_token(key_a, op.issuer, clock.now, nonce=None)
    op.token_answer = (
        200,
        {"access_token": "at-2", "token_type": "Bearer", "refresh_token": "rt-2", "id_token": renewed},
    )
    tokens = await client.refresh("rt-1", sub="user-1", earlier_id_token=None)
    assert (tokens.access_token, tokens.refresh_token, tokens.id_token) == ("at-2", "rt-2", None)
    assert "cannot be checked without the provider's keys" in caplog.text
    assert renewed not in caplog.text


async def test_a_refreshed_id_token_under_a_new_key_the_rate_limit_keeps_out_keeps_the_rotated_tokens(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    # the provider signs with a key published after the last JWKS fetch, less than 10 s ago: the
    # ID token cannot be checked yet, as when the JWKS is down; the grant it rotated is not lost
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    op.keys = [key_a, key_b]
    clock.now += 5
    renewed = id_token(key_b, op.issuer, clock.now, nonce=None)
    op.token_answer = (
        200,
        {"access_token": "at-2", "token_type": "Bearer", "refresh_token": "rt-2", "id_token": renewed},
    )
    tokens = await client.refresh("rt-1", sub="user-1", earlier_id_token=None)
    assert (tokens.access_token, tokens.refresh_token, tokens.id_token) == ("at-2", "rt-2", None)
    assert op.jwks_requests == 1


async def test_a_jwt_access_token_without_expires_in_is_due_for_refresh_by_its_own_lifetime(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    # RFC 6749 section 5.1: expires_in is only RECOMMENDED; a JWT access token still says when it
    # ends, and one taken as never expiring would be forwarded long after the API refuses it
    clock = Clock()
    client = await make_client(clock=clock)
    access = key_a.sign(access_token_claims(iat=int(clock.now) - 5, exp=int(clock.now) + 300))
    op.token_answer = (200, {"access_token": access, "token_type": "Bearer", "refresh_token": "rt-2"})
    tokens = await client.refresh("rt-1", sub="user-1", earlier_id_token=None)
    assert tokens.expires_at == START + 300
    # a token the provider issued earlier and hands out again ends when it says, not a lifetime later
    access = key_a.sign(access_token_claims(iat=int(clock.now) - 3600, exp=int(clock.now) + 120))
    op.token_answer = (200, {"access_token": access, "token_type": "Bearer"})
    assert (await client.refresh("rt-2", sub="user-1", earlier_id_token=None)).expires_at == START + 120


# ---------------------------------------------------------------------- revocation and userinfo


async def test_revoke_authenticates_the_client(op: MiniProvider, make_client: MakeClient) -> None:
    await (await make_client(auth_method="client_secret_post")).revoke("rt-1", "refresh_token")
    (request,) = op.requests_to("/revoke")
    assert request.form == {
        "token": "rt-1",
        "token_type_hint": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


async def test_revoke_without_revocation_endpoint_does_nothing(op: MiniProvider, make_client: MakeClient) -> None:
    op.discovery_overrides["revocation_endpoint"] = None
    await (await make_client()).revoke("rt-1", "refresh_token")
    assert op.requests_to("/revoke") == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param((503, "busy"), ProviderUnavailable, id="503"),
        pytest.param((400, {"error": "unsupported_token_type"}), TokenEndpointError, id="oauth-error"),
    ],
)
async def test_revoke_failures(op: MiniProvider, make_client: MakeClient, answer: tuple[int, Any], error: type) -> None:
    op.revocation_answer = answer
    with pytest.raises(error):
        await (await make_client()).revoke("rt-1", "refresh_token")


async def test_userinfo_sends_the_access_token_as_bearer(op: MiniProvider, make_client: MakeClient) -> None:
    claims = await (await make_client()).fetch_userinfo("at-xyz")
    assert claims == {"sub": "user-1", "email": "alice@example.com"}
    (request,) = op.requests_to("/userinfo")
    assert request.headers["Authorization"] == "Bearer at-xyz"


async def test_userinfo_never_follows_a_redirect_with_the_access_token(
    op: MiniProvider, make_client: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    # a userinfo endpoint that answers 302 (even to its own origin, where an HTTP client keeps the
    # Authorization header) must not get the access token sent on to wherever it points
    received_elsewhere: list[dict[str, str]] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        received_elsewhere.append(dict(request.headers))
        return web.json_response({"sub": "user-1"})

    app = web.Application()
    app.router.add_get("/userinfo", moved)
    app.router.add_get("/elsewhere", elsewhere)
    server = await aiohttp_server(app, host="127.0.0.1")
    op.discovery_overrides["userinfo_endpoint"] = str(server.make_url("/userinfo"))

    with pytest.raises(ProviderUnavailable, match="HTTP 302"):
        await (await make_client()).fetch_userinfo("at-xyz")
    assert received_elsewhere == []


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        pytest.param((401, ""), TokenEndpointError, "refused the access token", id="401"),
        pytest.param((403, ""), TokenEndpointError, "refused the access token", id="403"),
        pytest.param((500, "oops"), ProviderUnavailable, "HTTP 500", id="500"),
        pytest.param((200, "<html>"), ProviderUnavailable, "not JSON", id="not-json"),
        pytest.param((200, '["sub"]'), ProviderUnavailable, "not a JSON object", id="not-an-object"),
        pytest.param(
            # a JWT is not JSON, but it is refused for what it is: signed answers are not read
            (200, RawAnswer("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "application/jwt")),
            ProviderUnavailable,
            "signed or encrypted answers are not supported",
            id="signed",
        ),
    ],
)
async def test_userinfo_failures(
    op: MiniProvider, make_client: MakeClient, answer: tuple[int, Any], error: type, match: str
) -> None:
    op.userinfo_answer = answer
    with pytest.raises(error, match=match):
        await (await make_client()).fetch_userinfo("at-xyz")


async def test_userinfo_of_a_provider_without_the_endpoint_is_unavailable_and_asks_nobody(
    op: MiniProvider, make_client: MakeClient
) -> None:
    op.discovery_overrides["userinfo_endpoint"] = None
    with pytest.raises(ProviderUnavailable, match="no userinfo endpoint"):
        await (await make_client()).fetch_userinfo("at-xyz")
    assert op.requests_to("/userinfo") == []


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        pytest.param((500, "Internal Server Error"), ProviderUnavailable, "HTTP 500", id="5xx"),
        pytest.param((502, {"error": "invalid_grant"}), ProviderUnavailable, "HTTP 502", id="5xx-with-json"),
        pytest.param((200, "<html>sign in</html>"), ProviderUnavailable, "not JSON", id="not-json"),
        pytest.param((200, '["access_token"]'), ProviderUnavailable, "not a JSON object", id="not-an-object"),
        # a JSON answer of 200 that cannot be used is final: the grant was spent, no retry may reuse it
        pytest.param((200, {"token_type": "Bearer"}), TokenInvalid, "no access_token", id="no-access-token"),
        pytest.param((200, {"access_token": "at", "token_type": "DPoP"}), TokenInvalid, "not Bearer", id="not-bearer"),
        pytest.param((401, "Unauthorized"), ProviderUnavailable, "HTTP 401", id="4xx-without-oauth-error"),
        pytest.param((400, "[" * 200_000), ProviderUnavailable, "HTTP 400", id="4xx-nested-past-any-parser"),
        pytest.param(
            (400, {"error": "invalid_grant", "error_description": "code the-code expired"}),
            TokenEndpointError,
            "invalid_grant",
            id="invalid-grant",
        ),
    ],
)
async def test_token_endpoint_failure_is_reported(
    op: MiniProvider, make_client: MakeClient, answer: tuple[int, Any], error: type, match: str
) -> None:
    op.token_answer = answer
    with pytest.raises(error, match=match):
        await exchange(await make_client())


async def test_oauth_error_keeps_error_and_description(op: MiniProvider, make_client: MakeClient) -> None:
    op.token_answer = (400, {"error": "invalid_grant", "error_description": "Token is not active"})
    with pytest.raises(TokenEndpointError) as caught:
        await (await make_client()).refresh("rt-secret-value", sub="user-1", earlier_id_token=None)
    assert (caught.value.error, caught.value.description) == ("invalid_grant", "Token is not active")
    assert "rt-secret-value" not in str(caught.value)


async def test_timeout_is_unavailable(op: MiniProvider, make_client: MakeClient) -> None:
    client = await make_client(timeout=0.3)
    op.delay = 2.0
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await exchange(client)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("document", ["discovery", "jwks", "userinfo"])
async def test_a_document_that_does_not_come_in_time_is_unavailable(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, document: str
) -> None:
    client = await make_client(timeout=0.3, load=document != "discovery")
    op.delay = 2.0
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"no answer from http://\S+ within 0.3s \(timed out\)"):
        if document == "discovery":
            await client.load_metadata()
        elif document == "jwks":
            await client.verify_id_token(id_token(key_a, op.issuer, time.time()), NONCE)
        else:
            await client.fetch_userinfo("at-xyz")
    assert time.monotonic() - started < 1.5


async def test_a_closed_client_refuses_to_send_anything(op: MiniProvider, make_client: MakeClient) -> None:
    client = await make_client()
    await client.close()
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        await exchange(client)
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        await client.fetch_userinfo("at-xyz")
    assert op.token_requests == [] and op.requests_to("/userinfo") == []


async def test_oversized_answer_is_unavailable(op: MiniProvider, make_client: MakeClient) -> None:
    op.token_answer = (200, "x" * (client_module.MAX_ANSWER_BYTES + 1))
    with pytest.raises(ProviderUnavailable, match="too large"):
        await exchange(await make_client())
    # the documents and userinfo come through aiohttp's client, bounded alike
    op.userinfo_answer = (200, "x" * (client_module.MAX_ANSWER_BYTES + 1))
    with pytest.raises(ProviderUnavailable, match="too large"):
        await (await make_client()).fetch_userinfo("at-1")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_growing_past_the_limit_is_refused_as_it_arrives(declared: bool) -> None:
    size = client_module.MAX_ANSWER_BYTES + 1

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if declared:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(size // 65536 + 1):
                writer.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    forms = UpstreamClient()
    try:
        origin = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        response = await forms.request(origin, "POST", "/token", CIMultiDict({"Content-Length": "0"}), content=b"")
        try:
            with pytest.raises(ProviderUnavailable, match="too large"):
                await client_module._read_all(response, "refresh")
        finally:
            response.release(delivered=False)
    finally:
        forms.close()
        server.close()


# ---------------------------------------------------------------------- JWKS cache


async def test_unknown_kid_refetches_once_and_succeeds_after_rotation(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    assert op.jwks_requests == 1
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    assert op.jwks_requests == 1  # cached

    op.keys = [key_b]  # the provider rotates its key
    clock.now += 11
    assert (await client.verify_id_token(id_token(key_b, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    assert op.jwks_requests == 2

    # a kid the provider does not have either: exactly one refetch, then UnknownKeyId
    clock.now += 11
    with pytest.raises(UnknownKeyId):
        await client.verify_id_token(key_b.sign(id_token_claims(iss=op.issuer), kid="nobody"), NONCE)
    assert op.jwks_requests == 3


async def test_refetch_is_rate_limited_to_once_every_10_seconds(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    assert op.jwks_requests == 1
    op.keys = [key_a, key_b]
    for advance in (5.0, 4.9):
        clock.now += advance
        with pytest.raises(UnknownKeyId):
            await client.verify_id_token(id_token(key_b, op.issuer, clock.now), NONCE)
        assert op.jwks_requests == 1  # 9.9 s after the last fetch: no new one
    clock.now += 0.1
    assert (await client.verify_id_token(id_token(key_b, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    assert op.jwks_requests == 2


async def test_concurrent_unknown_kids_share_one_refetch(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    op.keys = [key_b]
    clock.now += 11
    token = id_token(key_b, op.issuer, clock.now)
    results = await asyncio.gather(*(client.verify_id_token(token, NONCE) for _ in range(20)))
    assert {claims["sub"] for claims in results} == {"user-1"}
    assert op.jwks_requests == 2


async def test_failed_refetch_keeps_the_last_good_keys(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    op.jwks_status = 503
    clock.now += 11
    with pytest.raises(ProviderUnavailable, match="JWKS"):
        await client.verify_id_token(id_token(key_b, op.issuer, clock.now), NONCE)
    assert op.jwks_requests == 2
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    # an hour later the set is stale: a refresh is tried, fails, and the old keys still verify
    clock.now += client_module.JWKS_MAX_AGE
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    await client.keys_refreshed()
    assert op.jwks_requests == 3
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"


async def test_stale_keys_are_replaced(op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    op.keys = [key_b]  # key_a withdrawn by the provider
    clock.now += client_module.JWKS_MAX_AGE
    # the stale set serves while it is refreshed; once the refresh has landed, key_a is gone
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    await client.keys_refreshed()
    with pytest.raises(UnknownKeyId):
        await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    assert op.jwks_requests == 2
    assert (await client.verify_id_token(id_token(key_b, op.issuer, clock.now), NONCE))["sub"] == "user-1"


async def test_a_slow_refresh_of_stale_keys_delays_no_verification(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    op.delay = 3.0  # the JWKS endpoint is slow from now on
    clock.now += client_module.JWKS_MAX_AGE
    async with asyncio.timeout(1.5):
        for _ in range(5):
            assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
            await asyncio.sleep(0.1)
    assert op.jwks_requests == 2  # one refresh, in the background, for all five


async def test_without_any_keys_fetches_are_spaced(op: MiniProvider, make_client: MakeClient, key_a: JwtKey) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    op.jwks_status = 500
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE)
    assert op.jwks_requests == 1
    op.jwks_status = 200
    clock.now += client_module.JWKS_RETRY_WITHOUT_KEYS
    assert (await client.verify_id_token(id_token(key_a, op.issuer, clock.now), NONCE))["sub"] == "user-1"
    assert op.jwks_requests == 2


async def test_requests_waiting_for_a_failed_first_fetch_fail_with_it(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    client = await make_client(timeout=1.2)
    op.delay = 3.0  # the JWKS endpoint hangs: every fetch times out
    token = id_token(key_a, op.issuer, time.time())
    started = time.monotonic()
    results = await asyncio.gather(*(client.verify_id_token(token, NONCE) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(result, ProviderUnavailable) for result in results), results
    # one timeout for all four, not one more for each request that waited behind the last
    assert time.monotonic() - started < 2.0
    assert op.jwks_requests == 1


async def test_requests_waiting_for_a_failed_refetch_fail_with_it(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # provider.timeout (10 s by default) is as long as the refetch interval, so a hung refetch
    # outlasts it; both scaled down here
    monkeypatch.setattr(client_module, "JWKS_REFETCH_INTERVAL", 0.5)
    client = await make_client(timeout=0.6)
    now = time.time()
    await client.verify_id_token(id_token(key_a, op.issuer, now), NONCE)
    await asyncio.sleep(0.5)
    op.delay = 3.0  # the JWKS endpoint hangs from now on
    claims = access_token_claims(iss=op.issuer, aud=CLIENT_ID, iat=int(now), exp=int(now) + 60)
    bearer = key_b.sign(claims, typ="at+jwt")  # a kid the cached set does not hold
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.verify_bearer_token(bearer, [CLIENT_ID]) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(result, ProviderUnavailable) for result in results), results
    assert time.monotonic() - started < 1.2
    assert op.jwks_requests == 2


async def test_load_keys_fetches_and_counts_usable_keys(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    op.keys = [key_a, key_b]
    client = await make_client()
    assert await client.load_keys() == 2
    assert op.jwks_requests == 1
    op.jwks_status = 500
    with pytest.raises(ProviderUnavailable, match=r"JWKS fetch failed: .* answered HTTP 500"):
        await client.load_keys()


async def test_id_token_checks_apply_through_the_client(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    with pytest.raises(TokenInvalid, match="nonce mismatch"):
        await client.verify_id_token(id_token(key_a, op.issuer, clock.now), "another-nonce")
    with pytest.raises(TokenInvalid, match="token expired"):
        await client.verify_id_token(id_token(key_a, op.issuer, clock.now - 1000), NONCE)


async def test_logout_and_bearer_tokens_verify_with_the_cached_keys(
    op: MiniProvider, make_client: MakeClient, key_a: JwtKey, key_b: JwtKey
) -> None:
    clock = Clock()
    client = await make_client(clock=clock)
    logout = key_a.sign(logout_token_claims(iss=op.issuer, aud=CLIENT_ID, iat=int(clock.now)))
    assert (await client.verify_logout_token(logout))["sid"] == "session-1"
    op.keys = [key_a, key_b]
    clock.now += 11
    claims = access_token_claims(iss=op.issuer, aud=CLIENT_ID, iat=int(clock.now), exp=int(clock.now) + 60)
    bearer = key_b.sign(claims, typ="at+jwt")
    assert (await client.verify_bearer_token(bearer, [CLIENT_ID]))["sub"] == "user-1"
    with pytest.raises(TokenInvalid, match="aud mismatch"):
        await client.verify_bearer_token(bearer, ["https://unrelated.example.com"])
    assert op.jwks_requests == 2


# ---------------------------------------------------------------------- private CA


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authproxy test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def _connect_error(cause: OSError) -> UpstreamConnectError:
    try:
        raise UpstreamConnectError("cannot connect to the upstream") from cause
    except UpstreamConnectError as e:
        return e


async def test_private_ca_provider_needs_ca_file_for_documents_and_token_requests(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = write_tls_files(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with running_provider(server_context) as provider:
        for ca, expected in ((None, ProviderUnavailable), (str(ca_file), None)):
            client = ProviderClient(**client_arguments(provider.issuer, ca_file=ca))
            await client.start()
            try:
                if expected is None:
                    assert (await client.load_metadata()).issuer == provider.issuer
                    assert (await client.refresh("rt-0", sub="user-1", earlier_id_token=None)).access_token == "at-1"
                else:
                    with pytest.raises(expected):
                        await client.load_metadata()
            finally:
                await client.close()


@pytest.mark.parametrize("document", ["discovery", "jwks"])
async def test_an_https_providers_documents_are_never_taken_from_a_redirect_to_plain_http(
    tmp_path: Path, key_a: JwtKey, document: str
) -> None:
    # Discovery 1.0 section 3: the JWKS (and the endpoints the document names) are https URLs; a
    # redirect to http would let anyone on the path serve keys or endpoints of their own
    ca_file, cert_file, key_file = write_tls_files(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with running_provider(server_context) as provider, running_provider() as plain:
        provider.keys = plain.keys = [key_a]
        plain.discovery_overrides = provider.discovery_document()
        path = "/.well-known/openid-configuration" if document == "discovery" else "/jwks"
        provider.redirects[path] = plain.issuer + path
        client = ProviderClient(**client_arguments(provider.issuer, ca_file=str(ca_file)))
        await client.start()
        try:
            with pytest.raises(ProviderUnavailable, match="redirected to a URL that is not https"):
                await client.load_metadata()
                await client.load_keys()
        finally:
            await client.close()


async def test_an_https_providers_redirect_to_another_https_url_is_followed(tmp_path: Path, key_a: JwtKey) -> None:
    ca_file, cert_file, key_file = write_tls_files(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with running_provider(server_context) as provider:
        provider.keys = [key_a]
        provider.discovery_overrides["jwks_uri"] = provider.issuer + "/old-jwks"
        provider.redirects["/old-jwks"] = provider.issuer + "/jwks"
        client = ProviderClient(**client_arguments(provider.issuer, ca_file=str(ca_file)))
        await client.start()
        try:
            await client.load_metadata()
            assert await client.load_keys() == 1
        finally:
            await client.close()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        pytest.param(
            _connect_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), "connection refused", id="refused"
        ),
        pytest.param(_connect_error(socket.gaierror(-2, "Name or service not known")), "does not resolve", id="dns"),
        pytest.param(_connect_error(ssl.SSLCertVerificationError("bad cert")), "provider.ca_file", id="untrusted"),
        pytest.param(_connect_error(ssl.SSLError("bad handshake")), "TLS handshake failed", id="tls"),
        pytest.param(UpstreamBadResponse("garbage"), "not valid HTTP", id="garbage"),
        pytest.param(UpstreamReset("closed", before_response=True), "without answering", id="closed"),
        pytest.param(UpstreamReset("closed mid-body"), "cut off", id="cut-off"),
    ],
)
def test_token_request_failures_are_told_in_words(error: UpstreamHTTPError, words: str) -> None:
    assert words in client_module.describe_exchange_error(error)


# ---------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param(
            {"auth_method": "client_secret_jwt"}, "provider.client_auth_method: must be one of", id="unknown-method"
        ),
        pytest.param(
            {"client_secret": None},
            "provider.client_secret: required for client_secret_basic",
            id="basic-without-secret",
        ),
        pytest.param(
            {"auth_method": "private_key_jwt"},
            "provider.private_key_file: required for private_key_jwt",
            id="private-key-jwt-without-key",
        ),
        pytest.param(
            {"auth_method": "private_key_jwt", "private_key_pem": b"-----BEGIN NOTHING-----"},
            "provider.private_key_file: not an unencrypted PEM private key",
            id="private-key-not-pem",
        ),
        pytest.param({"ca_file": "/nonexistent/ca.pem"}, "provider.ca_file: cannot load", id="missing-ca-file"),
    ],
)
def test_bad_client_configuration_is_a_config_error(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ProviderClient(**client_arguments("https://idp.example.com", **overrides))
    assert caught.value.problems[0].startswith(problem)


# ---------------------------------------------------------------------- pure: token responses


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            {"access_token": "a", "token_type": "Bearer", "expires_in": 300},
            TokenSet("a", "Bearer", START + 300),
            id="minimal",
        ),
        pytest.param(
            {
                "access_token": "a",
                "token_type": "bearer",
                "expires_in": "60",
                "refresh_token": "r",
                "id_token": "i",
                "scope": "openid email",
            },
            TokenSet("a", "Bearer", START + 60, "r", "i", "openid email"),
            id="lowercase-bearer-string-expiry-all-fields",
        ),
        pytest.param({"access_token": "a", "token_type": "BEARER"}, TokenSet("a", "Bearer", None), id="no-expiry"),
        pytest.param(
            {"access_token": "a.b.c", "token_type": "Bearer"},
            TokenSet("a.b.c", "Bearer", None),
            id="no-expiry-not-a-jwt",
        ),
        pytest.param(
            {"access_token": "a", "token_type": "Bearer", "expires_in": -5},
            TokenSet("a", "Bearer", START),
            id="negative",
        ),
    ],
)
def test_token_response_is_parsed(doc: dict[str, Any], expected: TokenSet) -> None:
    assert parse_token_response(doc, START) == expected


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"token_type": "Bearer"}, id="no-access-token"),
        pytest.param({"access_token": "a"}, id="no-token-type"),
        pytest.param({"access_token": "a", "token_type": "mac"}, id="mac"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": "soon"}, id="expiry-not-a-number"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": True}, id="expiry-boolean"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": 10**400}, id="expiry-beyond-float"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "refresh_token": 5}, id="refresh-not-a-string"),
    ],
)
def test_unusable_token_response_is_refused_as_final(doc: dict[str, Any]) -> None:
    # TokenInvalid, not ProviderUnavailable: a refresh would otherwise keep the refresh token the
    # provider has just rotated, and present it again (a reuse, which revokes the grant)
    with pytest.raises(TokenInvalid):
        parse_token_response(doc, START)


def test_token_set_repr_hides_the_tokens() -> None:
    tokens = TokenSet("access-secret", "Bearer", START, "refresh-secret", "id-secret")
    assert "secret" not in repr(tokens)


# ---------------------------------------------------------------------- pure: client assertions


def test_client_assertion_claims(rsa_pem: bytes) -> None:
    key = load_assertion_key(rsa_pem)
    assertion = build_client_assertion(key, client_id="c", audience="https://idp/token", now=START, jti="j-1")
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims == {
        "iss": "c",
        "sub": "c",
        "aud": "https://idp/token",
        "jti": "j-1",
        "iat": int(START),
        "exp": int(START) + 60,
    }
    other = build_client_assertion(key, client_id="c", audience="https://idp/token", now=START)
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != "j-1"


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@pytest.mark.parametrize(
    "make_pem",
    [
        pytest.param(lambda: _pem(ec.generate_private_key(ec.SECP384R1())), id="p384"),
        pytest.param(lambda: _pem(ed25519.Ed25519PrivateKey.generate()), id="ed25519"),
        pytest.param(lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), id="rsa-1024"),
        pytest.param(lambda: b"not a key", id="garbage"),
    ],
)
def test_unsupported_assertion_key_is_a_config_error(make_pem: Callable[[], bytes]) -> None:
    with pytest.raises(ConfigError):
        load_assertion_key(make_pem())


def test_assertion_key_algorithms(rsa_pem: bytes, ec_pem: bytes) -> None:
    assert isinstance(load_assertion_key(rsa_pem), AssertionKey)
    assert (load_assertion_key(rsa_pem).algorithm, load_assertion_key(ec_pem).algorithm) == ("RS256", "ES256")
