"""Identity and access, end to end (SPEC sections 2, 3 and 4) through a real proxy process.

One proxy with a route per rule: ``allow`` (emails, email_domains, groups, claims, a
combination), ``auth: optional``, ``on_unauthenticated`` deny and redirect, passing tokens,
bearer tokens (RFC 6750 section 2.1, RFC 9068 section 4) and the signed ``X-Authproxy-Identity``
(RFC 7519, ES256 of RFC 7518 section 3.4, verified through ``/oauth2/jwks.json``, RFC 7517); plus
``/oauth2/userinfo`` and ``/oauth2/auth``. A second proxy on the same provider has
``forward_auth.pass_access_token`` on. The provider is the development provider on 127.0.0.2
with a ``department`` claim added, and ``acr``/``amr`` in ID tokens, so ``claims`` rules have
someone to admit and refuse.

Demo users: alice (admins, developers; alice@example.com; eng), bob (developers;
bob@example.com; sales), carol (no groups; carol@partner.example.org; eng); and dora, in 3,000
groups (dora@example.com; eng), whose groups no upstream would take in one header.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict

from authproxy.demo.provider import DemoClient, DemoProvider, Grant, b64url, generate_signing_key
from authproxy.demo.users import DEMO_USERS, DemoUser
from authproxy.headers import MAX_IDENTITY_FIELD
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.logs import logged_line, logs_when
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Page, ScriptedBrowser, login_demo
from tests.support.upstream import Upstream

SECRET: Final = "identity-access-session-secret-0123456789abcdef"
IDLE_TIMEOUT: Final = 3600
IDENTITY_TTL: Final = 90
DEPARTMENTS: Final = {"alice": "eng", "bob": "sales", "carol": "eng", "dora": "eng", "erin": "ops"}
# as large directories have: comma-joined, some 30 KB, beyond any upstream's field limit
CROWDED_GROUPS: Final = tuple(f"team-{i:04d}" for i in range(3000))
# erin's provider sends her one group as a string (OpenID Connect leaves the claim's shape open)
ERIN_GROUP: Final = "superadmins"
USERS: Final = (
    *DEMO_USERS,
    DemoUser("dora", "dora@example.com", "Dora Many-Groups", CROWDED_GROUPS),
    DemoUser("erin", "erin@example.com", "Erin One-Group"),
)
# how each signed in (OpenID Connect Core 1.0 section 2, RFC 8176): alice with a second factor
AUTHENTICATION: Final = {
    "alice": {"acr": "mfa", "amr": ["pwd", "otp"]},
    "bob": {"acr": "pwd", "amr": ["pwd"]},
    "carol": {"acr": "pwd", "amr": ["pwd"]},
    "dora": {"acr": "pwd", "amr": ["pwd"]},
    "erin": {"acr": "pwd", "amr": ["pwd"]},
}
JSON: Final = {"Accept": "application/json"}
HTML: Final = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


class DepartmentProvider(DemoProvider):
    """The development provider with a ``department`` claim in ID and access tokens, and ``acr``
    and ``amr`` in ID tokens."""

    def id_token_claims(self, grant: Grant, *, access_token: str, now: float) -> dict[str, Any]:
        claims = super().id_token_claims(grant, access_token=access_token, now=now)
        claims["department"] = DEPARTMENTS[grant.user.username]
        claims.update(AUTHENTICATION[grant.user.username])
        if grant.user.username == "erin":
            claims["groups"] = ERIN_GROUP
        return claims

    def access_token_claims(self, grant: Grant, *, jti: str, now: float) -> dict[str, Any]:
        claims = super().access_token_claims(grant, jti=jti, now=now)
        claims["department"] = DEPARTMENTS[grant.user.username]
        return claims


def route(name: str, prefix: str, upstream: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": upstream, **options}


def proxy_config(port: int, issuer: str, upstream: str, *, pass_access_token: bool = False) -> dict[str, Any]:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "5s"},
        "session": {"secrets": [SECRET], "cookie": {"secure": False}, "idle_timeout": f"{IDLE_TIMEOUT}s"},
        "forward_auth": {"pass_access_token": pass_access_token},
        "identity_jwt": {"ttl": f"{IDENTITY_TTL}s"},
        "routes": [
            route("app", "/", upstream),
            route("emails", "/emails", upstream, allow={"emails": ["alice@example.com"]}),
            route("domains", "/domains", upstream, allow={"email_domains": ["example.com"]}),
            route("groups", "/groups", upstream, allow={"groups": ["admins"]}),
            route("claims", "/claims", upstream, allow={"claims": {"department": ["eng"]}}),
            route(
                "combined",
                "/combined",
                upstream,
                allow={"email_domains": ["example.com"], "claims": {"department": ["eng"]}},
            ),
            route("mfa", "/mfa", upstream, allow={"claims": {"acr": ["mfa"], "amr": ["otp", "hwk"]}}),
            route("optional", "/optional", upstream, auth="optional"),
            route("deny", "/deny", upstream, on_unauthenticated="deny"),
            route("redirect", "/redirect", upstream, on_unauthenticated="redirect"),
            route("tokens", "/tokens", upstream, pass_access_token=True, pass_id_token=True),
            route("bearer", "/bearer", upstream, bearer_tokens=True),
            route("bearer-admins", "/bearer-admins", upstream, bearer_tokens=True, allow={"groups": ["admins"]}),
            route("signed", "/signed", upstream, identity_jwt=True),
        ],
    }


@dataclass
class Stack:
    proxy: ProxyProcess
    token_proxy: ProxyProcess  # forward_auth.pass_access_token: true
    provider: DepartmentProvider

    @property
    def url(self) -> str:
        return self.proxy.url


@contextmanager
def start_stack(directory: Path) -> Iterator[Stack]:
    provider_port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = DepartmentProvider(issuer, [], USERS)
    port, token_port = free_port(), free_port()
    provider.register_client(
        DemoClient(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{p}/oauth2/callback" for p in (port, token_port)])
    )
    with serve_app(provider.create_app(), PROVIDER_HOST, provider_port), serve_app(Upstream().app()) as upstream:
        proxy = start_proxy(proxy_config(port, issuer, upstream), directory)
        try:
            token_proxy = start_proxy(proxy_config(token_port, issuer, upstream, pass_access_token=True), directory)
            try:
                yield Stack(proxy, token_proxy, provider)
            finally:
                token_proxy.kill()
        finally:
            proxy.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("identity")) as started:
        yield started


def browser() -> ScriptedBrowser:
    # a User-Agent of its own: the login-loop guard counts per client IP and User-Agent
    return ScriptedBrowser(user_agent=f"identity-test-{uuid.uuid4()}")


@asynccontextmanager
async def signed_in(base_url: str, username: str) -> AsyncIterator[ScriptedBrowser]:
    """A browser signed in as ``username``; the login lands on the app route."""
    async with browser() as b:
        page = await login_demo(b, base_url + "/oauth2/start?rd=/landing", username)
        assert page.status == 200 and urlsplit(page.url).path == "/landing", page
        yield b


def upstream_headers(page: Page) -> list[tuple[str, str]]:
    """The header pairs the upstream received (its echo), names lower-cased, in order."""
    assert page.status == 200, (page, page.text[:500])
    return [(name.lower(), value) for name, value in page.json()["headers"]]


def seen(page: Page) -> dict[str, str]:
    return dict(upstream_headers(page))


def is_json(page: Page) -> bool:
    return page.headers.get("Content-Type", "").startswith("application/json")


def is_html(page: Page) -> bool:
    return page.headers.get("Content-Type", "").startswith("text/html")


# ---------------------------------------------------------------------------------------------- allow rules

ALLOW_CASES: Final = [
    pytest.param("emails", "alice", 200, id="emails-listed-address"),
    pytest.param("emails", "bob", 403, id="emails-other-address"),
    pytest.param("domains", "bob", 200, id="domains-listed-domain"),
    pytest.param("domains", "carol", 403, id="domains-other-domain"),
    pytest.param("groups", "alice", 200, id="groups-member"),
    pytest.param("groups", "bob", 403, id="groups-not-member"),
    pytest.param("claims", "carol", 200, id="claims-value-listed"),
    pytest.param("claims", "bob", 403, id="claims-value-not-listed"),
    pytest.param("combined", "alice", 200, id="combined-both-kinds-pass"),
    pytest.param("combined", "bob", 403, id="combined-domain-passes-claim-fails"),
    pytest.param("combined", "carol", 403, id="combined-claim-passes-domain-fails"),
    # acr and amr of the ID token: how the user signed in, which a rule may ask about
    pytest.param("mfa", "alice", 200, id="claims-acr-and-amr-of-the-login"),
    pytest.param("mfa", "bob", 403, id="claims-acr-and-amr-not-met"),
]


@pytest.mark.parametrize(("route_name", "user", "status"), ALLOW_CASES)
async def test_allow_rule_admits_or_refuses(stack: Stack, route_name: str, user: str, status: int) -> None:
    async with signed_in(stack.url, user) as b:
        page = await b.get(f"{stack.url}/{route_name}/page", headers=JSON)
        assert page.status == status, (page, page.text[:300])
        if status == 200:
            assert seen(page)["x-forwarded-user"] == user
        else:
            assert is_json(page) and page.json()["error"] == "forbidden"


async def test_refusal_is_an_html_page_for_browsers_and_json_for_api_clients(stack: Stack) -> None:
    async with signed_in(stack.url, "bob") as b:
        page = await b.get(stack.url + "/groups/page", headers=HTML)
        assert page.status == 403 and is_html(page)
        assert "Access denied" in page.text and "x-forwarded-user" not in page.text.lower()
        api = await b.request("GET", stack.url + "/groups/api", headers=JSON, navigation=False)
        assert api.status == 403 and is_json(api)
        assert api.json()["error"] == "forbidden" and api.json()["request_id"]


async def test_refusal_names_the_rule_and_offers_sign_out_and_another_account(stack: Stack) -> None:
    async with signed_in(stack.url, "bob") as b:
        page = await b.get(stack.url + "/groups/page?x=1", headers=HTML)
        assert page.status == 403 and is_html(page)
        assert "requires group admins" in page.text
        links = re.findall(r'href="([^"]+)"', page.text)
        assert "/oauth2/sign_out" in links
        switch = next(link for link in links if link.startswith("/oauth2/start"))
        assert parse_qs(urlsplit(html.unescape(switch)).query) == {"rd": ["/groups/page?x=1"], "prompt": ["login"]}
        api = await b.request("GET", stack.url + "/groups/api", headers=JSON, navigation=False)
        assert api.json()["rule"] == "groups" and api.json()["requirement"] == "requires group admins"
        # an emails rule says what it needs without naming whom it admits
        emails = await b.request("GET", stack.url + "/emails/api", headers=JSON, navigation=False)
        assert emails.status == 403 and emails.json()["rule"] == "emails"
        assert "alice" not in emails.text
    await logged_line(stack.proxy, '"access_denied"', '"user":"bob"', '"kind":"groups"')


async def test_switch_account_link_asks_the_provider_for_a_new_login(stack: Stack) -> None:
    async with signed_in(stack.url, "bob") as b:
        refused = await b.request("GET", stack.url + "/groups/api", headers=JSON, navigation=False)
        # the provider is asked to log in again (prompt=login), not to reuse bob's provider session
        start = await b.get(stack.url + refused.json()["switch_account_url"], follow_redirects=False)
        assert parse_qs(urlsplit(start.location or "").query)["prompt"] == ["login"]
        page = await login_demo(b, stack.url + refused.json()["switch_account_url"], "alice")
        assert page.status == 200 and seen(page)["x-forwarded-user"] == "alice"
        # other prompt values are not passed on from /start's query
        other = await b.get(stack.url + "/oauth2/start?rd=/&prompt=none", follow_redirects=False)
        assert "prompt" not in parse_qs(urlsplit(other.location or "").query)


# ------------------------------------------------------------------------------------------- optional, deny, redirect


# a GET is served by the fast path, a POST by aiohttp's: each decides on the route's auth itself
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_optional_route_passes_anonymous_without_identity_and_signed_in_with_it(
    stack: Stack, method: str
) -> None:
    async with browser() as anonymous:
        page = await anonymous.request(method, stack.url + "/optional/x", headers=HTML)
        names = {name for name, _ in upstream_headers(page)}
        assert not names & {"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups"}
    async with signed_in(stack.url, "bob") as b:
        headers = seen(await b.request(method, stack.url + "/optional/x", headers=HTML))
        assert headers["x-forwarded-user"] == "bob"
        assert headers["x-forwarded-email"] == "bob@example.com"
        assert headers["x-forwarded-groups"] == "developers"


# a GET is served by the fast path, a POST by aiohttp's: each marks an answer the upstream left
# without Cache-Control as private when, and only when, it went with an identity
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_only_an_answer_for_a_signed_in_user_is_kept_out_of_shared_caches(stack: Stack, method: str) -> None:
    async with browser() as anonymous:
        page = await anonymous.request(method, stack.url + "/optional/cached", headers=HTML)
        assert page.status == 200 and "Cache-Control" not in page.headers
    async with signed_in(stack.url, "bob") as b:
        page = await b.request(method, stack.url + "/optional/cached", headers=HTML)
        assert page.status == 200 and page.headers.getall("Cache-Control") == ["private"]
        own = await b.request(method, stack.url + "/optional/cached?cc=no-cache", headers=HTML)
        assert own.status == 200 and own.headers.getall("Cache-Control") == ["no-cache"]


async def test_one_connection_taking_turns_signed_in_and_anonymous_gets_each_its_own_caching(stack: Stack) -> None:
    # the fast path keeps the last answer's head for the next alike one: never across an identity
    async with signed_in(stack.url, "bob") as b:
        cookie = b.cookies.get("authproxy_session", "127.0.0.1")
    assert cookie is not None
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), cookie_jar=aiohttp.DummyCookieJar()
    ) as client:
        for turn in ("anonymous", "signed-in", "anonymous", "signed-in"):
            fields = {"Cookie": f"authproxy_session={cookie}"} if turn == "signed-in" else {}
            async with client.get(stack.url + "/optional/cached", headers=fields) as answer:
                await answer.read()
                assert answer.status == 200
                assert answer.headers.getall("Cache-Control", []) == (["private"] if turn == "signed-in" else []), turn


async def test_deny_answers_401_json_even_to_a_browser_navigation(stack: Stack) -> None:
    async with browser() as b:
        page = await b.get(stack.url + "/deny/page?x=1", headers=HTML, follow_redirects=False)
        assert page.status == 401 and page.location is None and is_json(page)
        body = page.json()
        assert body["error"] == "unauthenticated"
        login = urlsplit(body["login_url"])
        assert login.path == "/oauth2/start" and parse_qs(login.query)["rd"] == ["/deny/page?x=1"]


async def test_redirect_answers_302_even_to_an_xhr_get(stack: Stack) -> None:
    async with browser() as b:
        xhr = {**JSON, "X-Requested-With": "XMLHttpRequest"}
        page = await b.request(
            "GET", stack.url + "/redirect/data?id=7", headers=xhr, follow_redirects=False, navigation=False
        )
        assert page.status == 302
        location = urlsplit(page.location or "")
        assert location.path == "/oauth2/start" and parse_qs(location.query)["rd"] == ["/redirect/data?id=7"]
        # the same request on an auto route is an API call: 401, not a redirect
        auto = await b.request("GET", stack.url + "/data", headers=xhr, follow_redirects=False, navigation=False)
        assert auto.status == 401 and auto.location is None


# ---------------------------------------------------------------------------------------------- /oauth2/userinfo


async def test_userinfo_describes_the_session(stack: Stack) -> None:
    async with browser() as anonymous:
        page = await anonymous.get(stack.url + "/oauth2/userinfo", headers=JSON)
        assert page.status == 401 and is_json(page)
    async with signed_in(stack.url, "alice") as b:
        before = time.time()
        page = await b.get(stack.url + "/oauth2/userinfo", headers=JSON)
        assert page.status == 200 and is_json(page)
        body = page.json()
        expires_at = body.pop("expires_at")
        assert body == {
            "sub": "alice",
            "email": "alice@example.com",
            "preferred_username": "alice",
            "groups": ["admins", "developers"],
        }
        assert isinstance(expires_at, int)
        # idle_timeout (1 h) from the last use, the login a moment ago
        assert before + IDLE_TIMEOUT - 60 <= expires_at <= before + IDLE_TIMEOUT + 1


async def test_userinfo_groups_is_a_list_even_when_the_provider_sends_one_string(stack: Stack) -> None:
    # a script testing groups.includes("admins") must not match inside "superadmins"
    async with signed_in(stack.url, "erin") as b:
        page = await b.get(stack.url + "/oauth2/userinfo", headers=JSON)
        assert page.status == 200, page
        assert page.json()["groups"] == [ERIN_GROUP]


async def test_userinfo_expires_at_is_the_access_token_expiry_without_a_refresh_token(
    stack: Stack, run_proxy: Callable[..., ProxyProcess]
) -> None:
    # without offline_access the provider issues no refresh token, so the session ends with the
    # access token (SPEC section 5), long before idle_timeout: expires_at must say so
    port = free_port()
    client = stack.provider.clients[CLIENT_ID]
    stack.provider.register_client(
        replace(client, redirect_uris=[*client.redirect_uris, f"http://127.0.0.1:{port}/oauth2/callback"])
    )
    config = proxy_config(port, stack.provider.issuer, "http://127.0.0.1:9")
    config["provider"]["scopes"] = ["openid", "profile", "email"]
    proxy = run_proxy(config)
    async with browser() as b:
        before = time.time()
        page = await login_demo(b, proxy.url + "/oauth2/start?rd=/oauth2/userinfo", "alice")
        after = time.time()
        assert page.status == 200 and urlsplit(page.url).path == "/oauth2/userinfo", page
        access_token_ttl = stack.provider.access_token_ttl
        assert before + access_token_ttl - 1 <= page.json()["expires_at"] <= after + access_token_ttl + 1


# ---------------------------------------------------------------------------------------------- /oauth2/auth


AUTH_CASES: Final = [
    pytest.param("alice", "", 202, id="signed-in"),
    pytest.param("alice", "?allowed_groups=admins", 202, id="group-met"),
    pytest.param("bob", "?allowed_groups=admins", 403, id="group-not-met"),
    pytest.param("bob", "?allowed_groups=admins,developers", 202, id="one-of-the-groups-met"),
    pytest.param("bob", "?allowed_emails=alice@example.com", 403, id="email-not-met"),
    pytest.param("alice", "?allowed_emails=alice@example.com", 202, id="email-met"),
    pytest.param("alice", "?allowed_groups=admins&allowed_emails=bob@example.com", 403, id="group-met-email-not"),
]


@pytest.mark.parametrize(("user", "query", "status"), AUTH_CASES)
async def test_forward_auth_check(stack: Stack, user: str, query: str, status: int) -> None:
    async with signed_in(stack.url, user) as b:
        page = await b.get(stack.url + "/oauth2/auth" + query, headers=JSON)
        assert page.status == status, page
        if status == 202:
            assert page.headers["X-Auth-Request-User"] == user
            assert page.headers["X-Auth-Request-Email"] == f"{user}@example.com"
            assert page.headers["X-Auth-Request-Preferred-Username"] == user
        else:
            assert "X-Auth-Request-User" not in page.headers
        # forward_auth.pass_access_token is off on this proxy
        assert "X-Auth-Request-Access-Token" not in page.headers


async def test_forward_auth_joins_groups_with_commas(stack: Stack) -> None:
    async with signed_in(stack.url, "alice") as b:
        page = await b.get(stack.url + "/oauth2/auth")
        assert page.status == 202 and page.headers.getall("X-Auth-Request-Groups") == ["admins,developers"]


async def test_forward_auth_is_401_without_a_session(stack: Stack) -> None:
    async with browser() as b:
        for headers in (HTML, JSON):
            page = await b.get(stack.url + "/oauth2/auth", headers=headers, follow_redirects=False)
            assert page.status == 401 and page.location is None
            assert not [name for name in page.headers if name.lower().startswith("x-auth-request-")]
        forged = await b.get(stack.url + "/oauth2/auth", headers={"Cookie": "authproxy_session=forged.value"})
        assert forged.status == 401


async def test_forward_auth_passes_the_access_token_only_when_configured(stack: Stack) -> None:
    async with signed_in(stack.token_proxy.url, "bob") as b:
        page = await b.get(stack.token_proxy.url + "/oauth2/auth")
        assert page.status == 202
        token = page.headers["X-Auth-Request-Access-Token"]
    claims = verify_provider_jwt(stack.provider, token)
    assert claims["sub"] == "bob" and claims["aud"] == CLIENT_ID


def verify_provider_jwt(provider: DemoProvider, token: str) -> dict[str, Any]:
    """Claims of a token the provider signed (the upstream's view of a passed token)."""
    key = provider.signing_key
    claims: dict[str, Any] = jwt.decode(
        token, key.private_key.public_key(), algorithms=[key.alg], options={"verify_aud": False}
    )
    assert claims["iss"] == provider.issuer
    return claims


# ---------------------------------------------------------------------------------------------- passing tokens


async def test_pass_access_token_and_pass_id_token_deliver_the_tokens_upstream(stack: Stack) -> None:
    async with signed_in(stack.url, "carol") as b:
        headers = upstream_headers(await b.get(stack.url + "/tokens/x"))
        authorizations = [value for name, value in headers if name == "authorization"]
        id_tokens = [value for name, value in headers if name == "x-forwarded-id-token"]
        assert len(authorizations) == 1 and authorizations[0].startswith("Bearer ")
        access = verify_provider_jwt(stack.provider, authorizations[0].removeprefix("Bearer "))
        assert access["sub"] == "carol" and access["client_id"] == CLIENT_ID
        assert len(id_tokens) == 1
        id_claims = verify_provider_jwt(stack.provider, id_tokens[0])
        assert id_claims["sub"] == "carol" and id_claims["aud"] == CLIENT_ID and id_claims["nonce"]
        # routes without the options pass neither
        plain = dict(upstream_headers(await b.get(stack.url + "/x")))
        assert "authorization" not in plain and "x-forwarded-id-token" not in plain


# ---------------------------------------------------------------------------------------------- bearer tokens


async def access_token_of(stack: Stack, user: str) -> str:
    """A real access token the provider issued to ``user`` (as the /tokens route passes it on)."""
    async with signed_in(stack.url, user) as b:
        return seen(await b.get(stack.url + "/tokens/x"))["authorization"].removeprefix("Bearer ")


async def test_valid_bearer_token_passes_with_identity_headers(stack: Stack) -> None:
    token = await access_token_of(stack, "alice")
    async with browser() as api:  # no session cookie: the token alone
        page = await api.get(stack.url + "/bearer/items", headers={**JSON, "Authorization": f"Bearer {token}"})
        headers = seen(page)
        assert headers["x-forwarded-user"] == "alice"
        assert headers["x-forwarded-email"] == "alice@example.com"
        assert headers["x-forwarded-groups"] == "admins,developers"
        admins = await api.get(stack.url + "/bearer-admins/items", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert admins.status == 200
        # without the token the same client is anonymous: 401
        anonymous = await api.get(stack.url + "/bearer/items", headers=JSON, follow_redirects=False)
        assert anonymous.status == 401


async def test_an_answer_to_a_bearer_token_is_kept_out_of_shared_caches(stack: Stack) -> None:
    token = await access_token_of(stack, "alice")
    async with browser() as api:
        fields = {**JSON, "Authorization": f"Bearer {token}"}
        page = await api.get(stack.url + "/bearer/cached", headers=fields)
        assert page.status == 200 and page.headers.getall("Cache-Control") == ["private"]
        own = await api.get(stack.url + "/bearer/cached?cc=max-age=60", headers=fields)
        assert own.status == 200 and own.headers.getall("Cache-Control") == ["max-age=60"]


async def test_bearer_token_identity_meets_the_allow_rules(stack: Stack) -> None:
    token = await access_token_of(stack, "bob")
    async with browser() as api:
        page = await api.get(stack.url + "/bearer-admins/items", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert page.status == 403 and page.json()["error"] == "forbidden"


async def test_an_id_token_is_no_bearer_token_even_where_its_audience_is_accepted(stack: Stack) -> None:
    # the sign-out URL carries the ID token (id_token_hint): in browser history, provider logs;
    # its aud is the client id, which bearer_audiences accepts by default
    async with signed_in(stack.url, "alice") as b:
        id_token = seen(await b.get(stack.url + "/tokens/x"))["x-forwarded-id-token"]
        out = await b.get(stack.url + "/oauth2/sign_out", follow_redirects=False)
        assert parse_qs(urlsplit(out.location or "").query)["id_token_hint"] == [id_token]
    async with browser() as api:
        page = await api.get(
            stack.url + "/bearer-admins/items", headers={**JSON, "Authorization": f"Bearer {id_token}"}
        )
        assert page.status == 401 and page.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "second", [pytest.param("Bearer forged", id="another-bearer"), pytest.param("Basic Zm9vOmJhcg==", id="basic")]
)
async def test_a_second_authorization_header_is_refused_not_passed_on_unchecked(stack: Stack, second: str) -> None:
    # RFC 9110 section 11.6.2 allows one Authorization field: the upstream could read the one the
    # proxy did not check, beside the identity headers of the one it did (RFC 6750 section 3.1)
    token = await access_token_of(stack, "alice")
    async with browser() as api:
        for fields in ((f"Bearer {token}", second), (second, f"Bearer {token}")):
            headers = CIMultiDict([("Accept", "application/json"), *(("Authorization", value) for value in fields)])
            page = await api.get(stack.url + "/bearer/items", headers=headers, follow_redirects=False)
            assert page.status == 400, page
            assert page.json()["error"] == "invalid_request"
            assert 'error="invalid_request"' in page.headers["WWW-Authenticate"]


def _sign(provider: DemoProvider, claims: dict[str, Any]) -> str:
    key = provider.signing_key
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"typ": "at+jwt", "kid": key.kid})


def _expired(provider: DemoProvider, claims: dict[str, Any]) -> str:
    now = int(time.time())
    # far beyond the default 60 s clock skew
    return _sign(provider, {**claims, "iat": now - 7200, "exp": now - 3600})


def _wrong_aud(provider: DemoProvider, claims: dict[str, Any]) -> str:
    return _sign(provider, {**claims, "aud": "some-other-api"})


def _wrong_iss(provider: DemoProvider, claims: dict[str, Any]) -> str:
    return _sign(provider, {**claims, "iss": "https://evil.example.com"})


def _bad_signature(provider: DemoProvider, claims: dict[str, Any]) -> str:
    # a key the provider never published, under the published kid
    rogue = generate_signing_key("RS256")
    headers = {"typ": "at+jwt", "kid": provider.signing_key.kid}
    return jwt.encode(claims, rogue.private_key, algorithm="RS256", headers=headers)


def _alg_none(provider: DemoProvider, claims: dict[str, Any]) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": provider.signing_key.kid}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def _tampered(provider: DemoProvider, claims: dict[str, Any]) -> str:
    # a genuine token whose payload was swapped for another user's
    head, _, signature = _sign(provider, claims).split(".")
    payload = b64url(json.dumps({**claims, "sub": "bob"}).encode())
    return f"{head}.{payload}.{signature}"


BAD_BEARERS: Final = [
    pytest.param(_expired, id="expired"),
    pytest.param(_wrong_aud, id="wrong-aud"),
    pytest.param(_wrong_iss, id="wrong-iss"),
    pytest.param(_bad_signature, id="bad-signature"),
    pytest.param(_alg_none, id="alg-none"),
    pytest.param(_tampered, id="tampered-payload"),
]


@pytest.mark.parametrize("forge", BAD_BEARERS)
async def test_invalid_bearer_token_is_401_json_never_a_redirect(
    stack: Stack, forge: Callable[[DemoProvider, dict[str, Any]], str]
) -> None:
    genuine = jwt.decode(await access_token_of(stack, "alice"), options={"verify_signature": False})
    token = forge(stack.provider, genuine)
    async with browser() as b:
        # a browser navigation, which on this route would otherwise be sent to sign in
        page = await b.get(
            stack.url + "/bearer/items", headers={**HTML, "Authorization": f"Bearer {token}"}, follow_redirects=False
        )
        assert page.status == 401, page
        assert page.location is None and is_json(page)
        assert page.json()["error"] == "invalid_token"
        assert "invalid_token" in page.headers["WWW-Authenticate"]


# ---------------------------------------------------------------------------------------------- X-Authproxy-Identity


async def test_upstream_verifies_the_identity_assertion_with_the_jwks_alone(stack: Stack) -> None:
    async with signed_in(stack.url, "alice") as b:
        before = int(time.time())
        assertion = seen(await b.get(stack.url + "/signed/x"))["x-authproxy-identity"]
        # the other routes do not get one
        assert "x-authproxy-identity" not in seen(await b.get(stack.url + "/x"))
    # what an upstream does: fetch the JWKS (no cookie, no secret), pick the key by kid, verify
    async with aiohttp.ClientSession() as http, http.get(stack.url + "/oauth2/jwks.json") as answer:
        assert answer.status == 200
        jwks = jwt.PyJWKSet.from_dict(await answer.json())
    kid = jwt.get_unverified_header(assertion)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        assertion,
        key,
        algorithms=["ES256"],
        audience="signed",
        issuer=stack.url,
        options={"require": ["iss", "aud", "sub", "iat", "exp"]},
    )
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins", "developers"]
    assert claims["exp"] - claims["iat"] == IDENTITY_TTL and before - 1 <= claims["iat"] <= time.time() + 1
    assert jwt.get_unverified_header(assertion)["alg"] == "ES256"
    # bound to its route: another upstream (audience) refuses it
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(assertion, key, algorithms=["ES256"], audience="app", issuer=stack.url)


# ---------------------------------------------------------------------------------------------- too large

TOO_LARGE: Final = '"identity header too large: not sent"'


def forward_auth_warnings(logs: str) -> int:
    """How many too-large warnings ``/oauth2/auth`` answers caused."""
    return sum(1 for line in logs.splitlines() if TOO_LARGE in line and '"route":"_auth"' in line)


async def forward_auth_warnings_reaching(proxy: ProxyProcess, count: int) -> int:
    """How many there are once there are at least ``count``."""
    return forward_auth_warnings(await logs_when(proxy, lambda logs: forward_auth_warnings(logs) >= count))


async def too_large_warning(proxy: ProxyProcess, header: str, *marks: str) -> dict[str, Any]:
    """The warning the proxy logged for ``header`` left out of a request (the line with ``marks``)."""
    line = await logged_line(proxy, TOO_LARGE, f'"header":"{header}"', *marks)
    # its size, never its value
    assert "team-0001" not in line
    entry: dict[str, Any] = json.loads(line)
    assert entry["level"] == "warning" and entry["limit"] == MAX_IDENTITY_FIELD
    assert entry["bytes"] > MAX_IDENTITY_FIELD and entry["user"] == "dora"
    return entry


async def test_a_groups_header_too_large_for_upstreams_is_left_out_whole_and_logged_on_both_paths(
    stack: Stack,
) -> None:
    # nginx, Apache, gunicorn and aiohttp refuse a field line over 8190 bytes (400 or 431): sent,
    # it would fail every request of this user; cut short, it would be another list of groups
    async with signed_in(stack.url, "dora") as b:
        # plain GETs: the fast path (the second from what it kept of the session); a body: aiohttp's
        fast = [await b.get(stack.url + "/crowded/page", headers=JSON) for _ in range(2)]
        slow = await b.post(stack.url + "/crowded/form", b"a=1", headers=JSON)
    for page in (*fast, slow):
        headers = seen(page)
        assert headers["x-forwarded-user"] == "dora" and headers["x-forwarded-email"] == "dora@example.com"
        assert headers["x-forwarded-preferred-username"] == "dora"
        assert "x-forwarded-groups" not in headers
        # a warning for each request, naming it
        request_id = f'"request_id":"{headers["x-request-id"]}"'
        entry = await too_large_warning(stack.proxy, "X-Forwarded-Groups", request_id)
        assert entry["route"] == "app"
        assert entry["bytes"] == len("X-Forwarded-Groups: ") + len(",".join(CROWDED_GROUPS))


async def test_an_identity_assertion_too_large_for_upstreams_is_left_out_and_logged(stack: Stack) -> None:
    # X-Authproxy-Identity carries the groups too, signed and base64url-encoded: larger still
    async with signed_in(stack.url, "dora") as b:
        for page in (await b.get(stack.url + "/signed/x"), await b.post(stack.url + "/signed/x", b"a=1")):
            headers = seen(page)
            assert headers["x-forwarded-user"] == "dora"
            assert "x-authproxy-identity" not in headers and "x-forwarded-groups" not in headers
            request_id = f'"request_id":"{headers["x-request-id"]}"'
            entry = await too_large_warning(stack.proxy, "X-Authproxy-Identity", request_id)
            assert entry["route"] == "signed"


async def test_forward_auth_leaves_out_a_groups_header_too_large_for_the_front_proxy(stack: Stack) -> None:
    # the rules are judged on the whole claim: only the answer's header is left out
    async with signed_in(stack.url, "dora") as b:
        for query in ("", "?allowed_groups=team-2999"):
            before = forward_auth_warnings(stack.proxy.logs())
            page = await b.get(stack.url + "/oauth2/auth" + query, headers=JSON)
            assert page.status == 202, page
            assert page.headers["X-Auth-Request-User"] == "dora"
            assert page.headers["X-Auth-Request-Email"] == "dora@example.com"
            assert "X-Auth-Request-Groups" not in page.headers
            # one warning for each answer
            assert await forward_auth_warnings_reaching(stack.proxy, before + 1) == before + 1
            entry = await too_large_warning(stack.proxy, "X-Auth-Request-Groups", '"route":"_auth"')
            assert entry["request_id"]
        refused = await b.get(stack.url + "/oauth2/auth?allowed_groups=admins", headers=JSON)
        assert refused.status == 403


# ---------------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("endpoint", ["/start", "/callback", "/auth", "/userinfo", "/jwks.json"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_get_endpoints_answer_other_methods_405_with_allow(stack: Stack, endpoint: str, method: str) -> None:
    # the endpoint exists (RFC 9110 section 15.5.6), as sign_out and backchannel_logout say too
    async with signed_in(stack.url, "alice") as b:
        answer = await b.request(method, stack.url + "/oauth2" + endpoint, headers=JSON, follow_redirects=False)
        assert answer.status == 405, (answer, answer.text[:200])
        assert "GET" in answer.headers["Allow"].split(",")
        # and the wrong method left the session alone
        assert (await b.get(stack.url + "/oauth2/userinfo", headers=JSON)).status == 200


@pytest.mark.parametrize(("endpoint", "method"), [("/start", "POST"), ("/sign_out", "PUT")])
async def test_a_wrong_method_gets_an_authproxy_page_like_any_other_refusal(
    stack: Stack, endpoint: str, method: str
) -> None:
    # a form posted to an endpoint, an API client's PUT: JSON or HTML by Accept, with the request
    # id and the headers that keep every authproxy page from being framed, sniffed or cached
    async with browser() as b:
        api = await b.request(method, stack.url + "/oauth2" + endpoint, headers=JSON, follow_redirects=False)
        assert api.status == 405 and api.json()["error"] == "method_not_allowed", (api, api.text[:200])
        assert api.json()["request_id"] == api.headers["X-Request-Id"]
        page = await b.request(method, stack.url + "/oauth2" + endpoint, headers=HTML, follow_redirects=False)
        assert page.status == 405 and page.headers["Content-Type"].startswith("text/html"), (page, page.text[:200])
    for answer in (api, page):
        assert "GET" in answer.headers["Allow"].split(",")
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store"


async def test_unknown_endpoints_under_the_prefix_are_404_whatever_the_method(stack: Stack) -> None:
    async with browser() as b:
        for method in ("GET", "POST"):
            answer = await b.request(method, stack.url + "/oauth2/nothing-here", headers=JSON, follow_redirects=False)
            assert answer.status == 404
