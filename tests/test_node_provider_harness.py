"""The oidc-provider harness: the real certified provider starts and behaves as docs/testing.md says.

This test is the relying party itself (aiohttp + PyJWT): discovery, a scripted devInteractions
login with PKCE for each client authentication method, the code exchange with a refresh token,
rotation on every refresh, reuse -> invalid_grant, revocation, the test counters, and back-channel
logout reaching a relying party on 127.0.0.1 (the relaxed SSRF guard).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import jwt
import pytest
from aiohttp import web

from authproxy.demo.provider import s256_challenge, token_hash
from tests.support.fault_provider import serve_app
from tests.support.node_provider import NodeProvider
from tests.support.scripted_browser import (
    CookieStore,
    ScriptedBrowser,
    confirm_node_provider_logout,
    login_node_provider,
    parse_forms,
)


@dataclass
class RelyingParty:
    """A callback server on 127.0.0.1 that records what the provider sends it."""

    url: str
    backchannel: list[str] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return self.url + "/callback"


@pytest.fixture
def relying_party() -> Iterator[RelyingParty]:
    received: list[str] = []

    async def callback(request: web.Request) -> web.Response:
        return web.json_response(dict(request.query))

    async def backchannel(request: web.Request) -> web.Response:
        received.append(str((await request.post())["logout_token"]))
        return web.Response()

    app = web.Application()
    app.router.add_get("/callback", callback)
    app.router.add_get("/signed-out", callback)
    app.router.add_post("/backchannel", backchannel)
    with serve_app(app) as url:
        yield RelyingParty(url, received)


@pytest.fixture
def op(node_provider: Callable[..., NodeProvider], relying_party: RelyingParty) -> NodeProvider:
    return node_provider(
        redirect_uris=[relying_party.callback],
        post_logout_redirect_uris=[relying_party.url + "/signed-out"],
        backchannel_logout_uri=relying_party.url + "/backchannel",
        access_token_ttl=5,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def metadata_of(http: aiohttp.ClientSession, op: NodeProvider) -> dict[str, Any]:
    async with http.get(op.issuer + "/.well-known/openid-configuration") as answer:
        assert answer.status == 200
        document: dict[str, Any] = await answer.json()
    return document


def client_auth(client: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, form fields) authenticating ``client`` by its registered method."""
    method = client["token_endpoint_auth_method"]
    if method == "client_secret_basic":
        pair = f"{quote(client['client_id'], safe='')}:{quote(client['client_secret'], safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}, {}
    if method == "client_secret_post":
        return {}, {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    return {}, {"client_id": client["client_id"]}


async def token_call(
    http: aiohttp.ClientSession, endpoint: str, client: dict[str, Any], form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    headers, auth_fields = client_auth(client)
    async with http.post(endpoint, data={**form, **auth_fields}, headers=headers) as answer:
        body = await answer.json() if answer.content_type == "application/json" else {}
        return answer.status, body


@dataclass
class Login:
    tokens: dict[str, Any]
    nonce: str


async def log_in(
    http: aiohttp.ClientSession, op: NodeProvider, rp: RelyingParty, client: dict[str, Any], browser: ScriptedBrowser
) -> Login:
    metadata = await metadata_of(http, op)
    verifier, state, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {
        "client_id": client["client_id"],
        "redirect_uri": rp.callback,
        "response_type": "code",
        "scope": "openid email profile groups offline_access",
        "state": state,
        "nonce": nonce,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
    }
    page = await login_node_provider(browser, metadata["authorization_endpoint"] + "?" + urlencode(params), "alice")
    assert page.status == 200 and page.url.startswith(rp.callback), page
    answer = page.json()
    assert answer["state"] == state and answer["iss"] == op.issuer, answer
    form = {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": rp.callback,
            "code_verifier": verifier}  # fmt: skip
    status, tokens = await token_call(http, metadata["token_endpoint"], client, form)
    assert status == 200, tokens
    return Login(tokens, nonce)


async def verify_id_token(http: aiohttp.ClientSession, op: NodeProvider, token: str, audience: str) -> dict[str, Any]:
    async with http.get((await metadata_of(http, op))["jwks_uri"]) as answer:
        keys = jwt.PyJWKSet.from_dict(await answer.json())
    header = jwt.get_unverified_header(token)
    claims: dict[str, Any] = jwt.decode(
        token, keys[header["kid"]], algorithms=["RS256"], audience=audience, issuer=op.issuer
    )
    return claims


async def test_discovery(op: NodeProvider, http: aiohttp.ClientSession) -> None:
    metadata = await metadata_of(http, op)
    assert metadata["issuer"] == op.issuer and op.issuer.startswith("http://127.0.0.2:")
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["backchannel_logout_supported"] is True
    for endpoint in ("revocation_endpoint", "end_session_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert metadata[endpoint].startswith(op.issuer)


@pytest.mark.parametrize("kind", ["basic", "post", "public"])
async def test_login_exchange_refresh_rotation_and_counters(
    op: NodeProvider, relying_party: RelyingParty, http: aiohttp.ClientSession, kind: str
) -> None:
    client = op.client(kind)
    async with ScriptedBrowser() as browser:
        login = await log_in(http, op, relying_party, client, browser)
    tokens = login.tokens
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 5
    assert tokens["refresh_token"]  # issued without prompt=consent (issueRefreshToken)
    claims = await verify_id_token(http, op, tokens["id_token"], client["client_id"])
    assert claims["nonce"] == login.nonce and claims["sub"] == "alice"
    assert (claims["email"], claims["groups"]) == ("alice@example.com", ["admins", "developers"])
    # at_hash is optional in the code flow; oidc-provider may leave it out
    assert claims.get("at_hash", token_hash(tokens["access_token"])) == token_hash(tokens["access_token"])

    token_endpoint = (await metadata_of(http, op))["token_endpoint"]
    # no scope on refresh (docs/testing.md: naming offline_access again is invalid_scope)
    status, rotated = await token_call(
        http, token_endpoint, client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert status == 200, rotated
    assert rotated["refresh_token"] != tokens["refresh_token"]  # rotateRefreshToken: every refresh
    status, reused = await token_call(
        http, token_endpoint, client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert (status, reused["error"]) == (400, "invalid_grant")
    status, revoked = await token_call(
        http, token_endpoint, client, {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
    )
    assert (status, revoked["error"]) == (400, "invalid_grant")  # the reuse revoked the whole grant
    counters = op.counters()
    assert (counters["code_grants"], counters["refresh_grants"], counters["token_requests"]) == (1, 1, 4)


async def test_userinfo_and_revocation_counted(
    op: NodeProvider, relying_party: RelyingParty, http: aiohttp.ClientSession
) -> None:
    client = op.client("basic")
    async with ScriptedBrowser() as browser:
        tokens = (await log_in(http, op, relying_party, client, browser)).tokens
    metadata = await metadata_of(http, op)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    async with http.get(metadata["userinfo_endpoint"], headers=bearer) as answer:
        assert answer.status == 200
        assert (await answer.json())["groups"] == ["admins", "developers"]
    status, _ = await token_call(http, metadata["revocation_endpoint"], client, {"token": tokens["refresh_token"]})
    assert status == 200
    status, body = await token_call(
        http,
        metadata["token_endpoint"],
        client,
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    counters = op.counters()
    assert (counters["revocations"], counters["userinfo_requests"]) == (1, 1)
    op.reset_counters()
    assert set(op.counters().values()) == {0}


async def test_back_channel_logout_reaches_loopback_relying_party(
    op: NodeProvider, relying_party: RelyingParty, http: aiohttp.ClientSession
) -> None:
    client = op.client("basic")
    async with ScriptedBrowser() as browser:
        tokens = (await log_in(http, op, relying_party, client, browser)).tokens
        sid = (await verify_id_token(http, op, tokens["id_token"], client["client_id"]))["sid"]
        end = (await metadata_of(http, op))["end_session_endpoint"] + "?" + urlencode(
            {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": relying_party.url + "/signed-out",
             "state": "bye"}
        )  # fmt: skip
        page = await confirm_node_provider_logout(browser, await browser.get(end))
    assert page.url.startswith(relying_party.url + "/signed-out") and page.json() == {"state": "bye"}
    assert len(relying_party.backchannel) == 1
    logout = jwt.decode(relying_party.backchannel[0], options={"verify_signature": False})
    assert logout["sid"] == sid and "http://schemas.openid.net/event/backchannel-logout" in logout["events"]
    counters = op.counters()
    assert (counters["backchannel_logouts"], counters["end_sessions"]) == (1, 1)


# -- the scripted browser's cookie rules (oidc-provider deletes its cookies with a 1970 Expires) ---

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("set_at", "headers", "request_url", "context", "sent"),
    [
        ("http://127.0.0.2:1/a", ["s=1; Path=/"], "http://127.0.0.2:2/b", {}, "s=1"),
        ("http://127.0.0.2:1/", ["s=1; Path=/", "s=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"],
         "http://127.0.0.2:1/", {}, None),
        ("http://127.0.0.2:1/", ["s=1", "s=; Max-Age=0"], "http://127.0.0.2:1/", {}, None),
        ("http://127.0.0.2:1/", ["s=1; Max-Age=10; Expires=Thu, 01 Jan 1970 00:00:00 GMT"],
         "http://127.0.0.2:1/", {}, "s=1"),
        ("http://127.0.0.2:1/", ["s=1"], "http://127.0.0.1:1/", {}, None),
        ("http://127.0.0.2:1/", ["s=1; Domain=127.0.0.1"], "http://127.0.0.1:1/", {}, None),
        ("https://a.example.com/", ["s=1; Domain=example.com"], "https://b.example.com/", {}, "s=1"),
        ("https://a.example.com/", ["s=1"], "https://b.example.com/", {}, None),
        ("http://127.0.0.1/", ["s=1; Secure"], "http://127.0.0.1/", {}, None),
        ("https://app.example.com/", ["s=1; Secure"], "http://app.example.com/", {}, None),
        ("https://app.example.com/", ["__Host-s=1; Secure; Path=/"], "https://app.example.com/", {}, "__Host-s=1"),
        ("https://app.example.com/", ["__Host-s=1; Secure; Path=/x"], "https://app.example.com/x", {}, None),
        ("http://127.0.0.1/oauth2/start", ["s=1"], "http://127.0.0.1/oauth2/callback", {}, "s=1"),
        ("http://127.0.0.1/", ["s=1; Path=/oauth2"], "http://127.0.0.1/oauth2x", {}, None),
        ("http://127.0.0.1/", ["s=1; SameSite=Strict"], "http://127.0.0.1/", {"cross_site": True}, None),
        ("http://127.0.0.1/", ["s=1; SameSite=Lax"], "http://127.0.0.1/", {"cross_site": True}, "s=1"),
        ("http://127.0.0.1/", ["s=1"], "http://127.0.0.1/", {"cross_site": True, "method": "POST"}, None),
        ("http://127.0.0.1/", ["a=1; Path=/", "b=2; Path=/x"], "http://127.0.0.1/x/y", {}, "b=2; a=1"),
    ],
    ids=["ports-ignored", "deleted-by-1970-expires", "deleted-by-max-age-0", "max-age-beats-expires",
         "host-only-per-host", "foreign-domain-rejected", "domain-cookie-to-subdomain", "host-only-not-subdomain",
         "secure-not-set-over-http", "secure-not-sent-over-http", "host-prefix-ok", "host-prefix-needs-root-path",
         "default-path-is-directory", "path-match-on-segment", "strict-not-cross-site", "lax-on-cross-site-get",
         "default-lax-not-cross-site-post", "longest-path-first"],
)  # fmt: skip
def test_scripted_browser_cookie_rules(
    set_at: str, headers: list[str], request_url: str, context: dict[str, Any], sent: str | None
) -> None:
    store = CookieStore(clock=lambda: NOW)
    store.receive(set_at, headers)
    assert store.header_for(request_url, **context) == sent


def test_scripted_browser_forms_include_detached_buttons() -> None:
    html = (
        '<form id="f" method="post" action="/submit"><input type="hidden" name="xsrf" value="t"/>'
        '<input type="checkbox" name="c" checked><input type="checkbox" name="d"><textarea name="t">x</textarea>'
        '<select name="s"><option value="1">one</option><option value="2" selected>two</option></select></form>'
        '<button type="submit" form="f" name="logout" value="yes">Yes</button>'
    )
    (form,) = parse_forms(html, "http://127.0.0.2:5/page")
    assert (form.action, form.method) == ("http://127.0.0.2:5/submit", "POST")
    assert form.fields == [("xsrf", "t"), ("c", "on"), ("t", "x"), ("s", "2")]
    assert form.button(("logout", "yes")) is not None and form.button("Yes") is not None
