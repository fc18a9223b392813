"""Anti-spoofing, end to end (SPEC section 4): the upstream can trust every header the proxy sets.

A client sends every header name the proxy could set (the default identity headers, another
route's custom ``identity_headers``, ``X-Forwarded-Id-Token``, the ``X-Auth-Request-*`` and
``X-Authproxy-*`` families, and ``Authorization`` where ``pass_access_token`` is on) in mixed
case, twice, and in the underscore spellings CGI-style stacks read as the same variable
(RFC 3875 section 4.1.18). None of them reaches the upstream on a public route, on an optional
route anonymously, nor on a protected route after login, where only the proxy's own values
appear, exactly once. A claim carrying CR/LF (header injection, RFC 9110 section 5.5) yields no
header and no broken response, and so does one the upstream's parser would read as another user's
(surrounding whitespace, which RFC 9110 section 5.5 strips). The session cookie never reaches the
upstream; other cookies do, untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import pytest
from multidict import CIMultiDict

from authproxy.demo.provider import DemoClient, DemoProvider, Grant
from authproxy.demo.users import DEMO_USERS, DemoUser
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Page, ScriptedBrowser, login_demo
from tests.support.upstream import Upstream

SECRET: Final = "spoofing-tests-session-secret-0123456789abcdef"
COOKIE: Final = "authproxy_session"
SPOOF: Final = "spoofed"

# Every name the proxy of this config could set; X-Remote-* are the "custom" route's own names.
SPOOFABLE: Final = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Remote-User",
    "X-Remote-Team",
    "X-Forwarded-Id-Token",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Access-Token",
    "X-Auth-Request-Anything-Else",
    "X-Authproxy-Identity",
    "X-Authproxy-Future-Header",
)
NORMALIZED: Final = frozenset(name.lower() for name in SPOOFABLE)

# carol's claims carry header injections; the other users are as the demo defines them
INJECTED_CLAIMS: Final = {
    "preferred_username": "carol\r\nX-Injected: username",
    "groups": ["partners", "evil\r\nX-Injected: group", "nul\x00group"],
    "department": "eng\nX-Injected: department",
}
# mallory's claims differ from alice's only by whitespace around them, which an HTTP parser
# strips from a field value (RFC 9110 section 5.5) and list readers from each entry
MALLORY: Final = DemoUser("mallory", "mallory@example.com", "Mallory", ("partners",))
LOOKALIKE_CLAIMS: Final = {
    "preferred_username": " alice\t",
    "groups": ["partners", " admins", "developers "],
    "department": "eng ",
}
# trent is in a group whose name holds a comma, which a reader of the comma-joined list splits
TRENT: Final = DemoUser("trent", "trent@example.com", "Trent", ("partners", "sales,admins"))
# wendy's claims hold lone surrogates: JSON escapes them ("\\ud800"), UTF-8 has no bytes for them
WENDY: Final = DemoUser("wendy", "wendy@example.com", "Wendy", ("partners",))
UNENCODABLE_CLAIMS: Final = {"preferred_username": "wendy\ud800", "groups": ["partners", "\udcff"], "department": "eng"}
CLAIMS_OF: Final = {
    "carol": INJECTED_CLAIMS,
    "mallory": LOOKALIKE_CLAIMS,
    "trent": {"department": "eng"},
    "wendy": UNENCODABLE_CLAIMS,
}


class InjectingProvider(DemoProvider):
    """The development provider, giving carol claims with CR, LF and NUL in them and mallory
    claims padded with whitespace."""

    def id_token_claims(self, grant: Grant, *, access_token: str, now: float) -> dict[str, Any]:
        claims = super().id_token_claims(grant, access_token=access_token, now=now)
        claims.update(CLAIMS_OF.get(grant.user.username, {"department": "eng"}))
        return claims


def mixed_case(name: str) -> str:
    """``X-Forwarded-User`` -> ``x-FoRwArDeD-uSeR``: neither the canonical nor a plain case."""
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))


def spoofing_headers(*, authorization: bool) -> CIMultiDict[str]:
    """Each spoofable name in mixed case twice, then in two underscore spellings.

    The spellings of one name differ by more than case: aiohttp's client keeps repeats of one
    exact spelling but lets a later case variant replace an earlier one.
    """
    headers: CIMultiDict[str] = CIMultiDict()
    for name in SPOOFABLE:
        headers.add(mixed_case(name), f"{SPOOF}-1")
        headers.add(mixed_case(name), f"{SPOOF}-2")
        headers.add(name.replace("-", "_"), f"{SPOOF}-3")  # X_Forwarded_User
        headers.add(name.lower().replace("-", "_", 1), f"{SPOOF}-4")  # x_forwarded-user
    if authorization:
        headers.add("authorization", f"Bearer {SPOOF}-5")
        headers.add("authorization", f"Bearer {SPOOF}-6")
    headers["Accept"] = "application/json"
    return headers


def route(name: str, prefix: str, upstream: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": upstream, **options}


def proxy_config(port: int, issuer: str, upstream: str) -> dict[str, Any]:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "5s"},
        "session": {"secrets": [SECRET], "cookie": {"secure": False}},
        "routes": [
            route("app", "/", upstream, pass_access_token=True, pass_id_token=True, identity_jwt=True),
            route("public", "/public", upstream, auth="none"),
            route("optional", "/optional", upstream, auth="optional", pass_access_token=True),
            route(
                "custom", "/custom", upstream, identity_headers={"X-Remote-User": "sub", "X-Remote-Team": "department"}
            ),
            route("silent", "/silent", upstream, identity_headers={}, identity_jwt=True),
        ],
    }


@dataclass
class Stack:
    proxy: ProxyProcess
    provider: InjectingProvider
    upstream_url: str

    @property
    def url(self) -> str:
        return self.proxy.url


@contextmanager
def start_stack(directory: Path) -> Iterator[Stack]:
    provider_port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = InjectingProvider(issuer, [], (*DEMO_USERS, MALLORY, TRENT, WENDY))
    port = free_port()
    provider.register_client(DemoClient(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"]))
    with serve_app(provider.create_app(), PROVIDER_HOST, provider_port), serve_app(Upstream().app()) as upstream:
        proxy = start_proxy(proxy_config(port, issuer, upstream), directory)
        try:
            yield Stack(proxy, provider, upstream)
        finally:
            proxy.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("spoofing")) as started:
        yield started


def browser() -> ScriptedBrowser:
    return ScriptedBrowser(user_agent=f"spoofing-test-{uuid.uuid4()}")


@asynccontextmanager
async def signed_in(stack: Stack, username: str) -> AsyncIterator[ScriptedBrowser]:
    async with browser() as b:
        page = await login_demo(b, stack.url + "/oauth2/start?rd=/public/landing", username)
        assert page.status == 200, page
        yield b


def received(page: Page) -> list[tuple[str, str]]:
    """The header pairs the upstream received, names lower-cased with ``_`` read as ``-``."""
    assert page.status == 200, (page, page.text[:500])
    return [(name.lower().replace("_", "-"), value) for name, value in page.json()["headers"]]


def values_of(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in pairs if key == name]


def assert_nothing_spoofed(pairs: list[tuple[str, str]]) -> None:
    leaked = [(name, value) for name, value in pairs if SPOOF in value]
    assert not leaked, leaked


# ---------------------------------------------------------------------------------------------- stripping


async def test_control_every_spelling_reaches_an_upstream_without_the_proxy(stack: Stack) -> None:
    """The client and upstream used below do carry all these spellings: the proxy is what removes them."""
    async with browser() as b:
        pairs = received(await b.get(stack.upstream_url + "/x", headers=spoofing_headers(authorization=True)))
    assert len([value for _, value in pairs if SPOOF in value]) == 4 * len(SPOOFABLE) + 2
    assert {name for name, _ in pairs} >= NORMALIZED


async def test_public_route_receives_none_of_the_spoofed_headers(stack: Stack) -> None:
    async with browser() as b:
        headers = spoofing_headers(authorization=False)
        headers["Authorization"] = "Bearer the-clients-own-token"
        pairs = received(await b.get(stack.url + "/public/x", headers=headers))
    assert_nothing_spoofed(pairs)
    assert not NORMALIZED & {name for name, _ in pairs}
    # the route passes no token, so the client's own Authorization is its business
    assert values_of(pairs, "authorization") == ["Bearer the-clients-own-token"]


async def test_optional_route_anonymously_receives_none_of_the_spoofed_headers(stack: Stack) -> None:
    async with browser() as b:
        pairs = received(await b.get(stack.url + "/optional/x", headers=spoofing_headers(authorization=True)))
    assert_nothing_spoofed(pairs)
    assert not (NORMALIZED | {"authorization"}) & {name for name, _ in pairs}


async def test_optional_route_signed_in_receives_only_the_proxys_values(stack: Stack) -> None:
    async with signed_in(stack, "bob") as b:
        pairs = received(await b.get(stack.url + "/optional/x", headers=spoofing_headers(authorization=True)))
    assert_nothing_spoofed(pairs)
    assert values_of(pairs, "x-forwarded-user") == ["bob"]
    assert values_of(pairs, "x-forwarded-groups") == ["developers"]
    assert len(values_of(pairs, "authorization")) == 1


async def test_protected_route_receives_only_the_proxys_values_exactly_once(stack: Stack) -> None:
    async with signed_in(stack, "alice") as b:
        pairs = received(await b.get(stack.url + "/app/x", headers=spoofing_headers(authorization=True)))
    assert_nothing_spoofed(pairs)
    assert values_of(pairs, "x-forwarded-user") == ["alice"]
    assert values_of(pairs, "x-forwarded-email") == ["alice@example.com"]
    assert values_of(pairs, "x-forwarded-preferred-username") == ["alice"]
    assert values_of(pairs, "x-forwarded-groups") == ["admins,developers"]
    [authorization] = values_of(pairs, "authorization")
    [id_token] = values_of(pairs, "x-forwarded-id-token")
    [identity] = values_of(pairs, "x-authproxy-identity")
    key = stack.provider.signing_key.private_key.public_key()
    access = jwt.decode(authorization.removeprefix("Bearer "), key, algorithms=["RS256"], audience=CLIENT_ID)
    assert access["sub"] == "alice"
    assert jwt.decode(id_token, key, algorithms=["RS256"], audience=CLIENT_ID)["sub"] == "alice"
    assert jwt.decode(identity, options={"verify_signature": False})["sub"] == "alice"
    # names this route does not set are simply gone
    for name in ("x-remote-user", "x-remote-team", "x-auth-request-user", "x-authproxy-future-header"):
        assert not values_of(pairs, name), name


async def test_custom_identity_headers_replace_the_default_set(stack: Stack) -> None:
    async with signed_in(stack, "alice") as b:
        pairs = received(await b.get(stack.url + "/custom/x", headers=spoofing_headers(authorization=False)))
    assert_nothing_spoofed(pairs)
    assert values_of(pairs, "x-remote-user") == ["alice"]
    assert values_of(pairs, "x-remote-team") == ["eng"]
    assert not values_of(pairs, "x-forwarded-user") and not values_of(pairs, "x-forwarded-email")


async def test_empty_identity_headers_send_none_but_still_strip_the_clients(stack: Stack) -> None:
    # identity_headers: {} replaces the default set with nothing (an upstream that reads only the
    # signed assertion need not learn the email or groups in plain headers)
    async with signed_in(stack, "alice") as b:
        pairs = received(await b.get(stack.url + "/silent/x", headers=spoofing_headers(authorization=False)))
    assert_nothing_spoofed(pairs)
    assert NORMALIZED & {name for name, _ in pairs} == {"x-authproxy-identity"}
    [identity] = values_of(pairs, "x-authproxy-identity")
    assert jwt.decode(identity, options={"verify_signature": False})["sub"] == "alice"


async def test_forward_auth_answer_ignores_spoofed_request_headers(stack: Stack) -> None:
    async with browser() as anonymous:
        page = await anonymous.get(stack.url + "/oauth2/auth", headers=spoofing_headers(authorization=False))
        assert page.status == 401
    async with signed_in(stack, "bob") as b:
        page = await b.get(stack.url + "/oauth2/auth", headers=spoofing_headers(authorization=False))
        assert page.status == 202
        assert page.headers.getall("X-Auth-Request-User") == ["bob"]
        assert not [value for value in page.headers.values() if SPOOF in value]


# ---------------------------------------------------------------------------------------------- CR/LF in claims


async def test_claims_with_cr_lf_or_nul_yield_no_header_and_no_broken_response(stack: Stack) -> None:
    async with signed_in(stack, "carol") as b:
        pairs = received(await b.get(stack.url + "/app/x"))
        assert values_of(pairs, "x-forwarded-user") == ["carol"]
        assert not values_of(pairs, "x-forwarded-preferred-username")
        # in a list, only the unsafe entries are dropped
        assert values_of(pairs, "x-forwarded-groups") == ["partners"]
        custom = received(await b.get(stack.url + "/custom/x"))
        assert values_of(custom, "x-remote-user") == ["carol"] and not values_of(custom, "x-remote-team")
        for every in (pairs, custom):
            assert not values_of(every, "x-injected")
            assert not [value for _, value in every if "\r" in value or "\n" in value or "\x00" in value]

        auth = await b.get(stack.url + "/oauth2/auth")
        assert auth.status == 202
        assert auth.headers["X-Auth-Request-User"] == "carol"
        assert auth.headers["X-Auth-Request-Groups"] == "partners"
        assert "X-Auth-Request-Preferred-Username" not in auth.headers and "X-Injected" not in auth.headers

        userinfo = await b.get(stack.url + "/oauth2/userinfo", headers={"Accept": "application/json"})
        assert userinfo.status == 200 and "X-Injected" not in userinfo.headers
        assert userinfo.json()["preferred_username"] == INJECTED_CLAIMS["preferred_username"]


async def test_claims_the_upstream_would_read_as_another_users_yield_no_header(stack: Stack) -> None:
    # " alice\t" arrives as "alice": the upstream would take mallory for alice, and an entry
    # " admins" of a list header for the group admins
    async with signed_in(stack, "mallory") as b:
        pairs = received(await b.get(stack.url + "/app/x"))
        assert values_of(pairs, "x-forwarded-user") == ["mallory"]
        assert not values_of(pairs, "x-forwarded-preferred-username")
        assert values_of(pairs, "x-forwarded-groups") == ["partners"]
        custom = received(await b.get(stack.url + "/custom/x"))
        assert values_of(custom, "x-remote-user") == ["mallory"] and not values_of(custom, "x-remote-team")

        auth = await b.get(stack.url + "/oauth2/auth")
        assert auth.status == 202
        assert auth.headers["X-Auth-Request-Groups"] == "partners"
        assert "X-Auth-Request-Preferred-Username" not in auth.headers

        # the signed assertion carries the claims as they are, in JSON
        [identity] = values_of(pairs, "x-authproxy-identity")
        assert jwt.decode(identity, options={"verify_signature": False})["groups"] == LOOKALIKE_CLAIMS["groups"]


async def test_a_group_name_with_a_comma_is_not_read_upstream_as_two_groups(stack: Stack) -> None:
    # "sales,admins" joined into "partners,sales,admins" would make trent a member of admins
    async with signed_in(stack, "trent") as b:
        pairs = received(await b.get(stack.url + "/app/x"))
        assert values_of(pairs, "x-forwarded-groups") == ["partners"]
        auth = await b.get(stack.url + "/oauth2/auth")
        assert auth.status == 202 and auth.headers["X-Auth-Request-Groups"] == "partners"
        # the signed assertion's list keeps the group whole
        [identity] = values_of(pairs, "x-authproxy-identity")
        assert jwt.decode(identity, options={"verify_signature": False})["groups"] == list(TRENT.groups)


async def test_claims_with_lone_surrogates_yield_no_header_and_no_error(stack: Stack) -> None:
    async with signed_in(stack, "wendy") as b:
        # GET takes the fast path, POST aiohttp's
        for page in (await b.get(stack.url + "/app/x"), await b.post(stack.url + "/app/x", data={"a": "1"})):
            pairs = received(page)
            assert values_of(pairs, "x-forwarded-user") == ["wendy"]
            assert not values_of(pairs, "x-forwarded-preferred-username")
            assert values_of(pairs, "x-forwarded-groups") == ["partners"]
        auth = await b.get(stack.url + "/oauth2/auth")
        assert auth.status == 202 and auth.headers["X-Auth-Request-Groups"] == "partners"
        assert "X-Auth-Request-Preferred-Username" not in auth.headers


# ---------------------------------------------------------------------------------------------- cookies


@pytest.mark.parametrize("path", ["/app/x", "/public/x", "/optional/x"])
async def test_session_cookie_is_removed_and_other_cookies_pass_intact(stack: Stack, path: str) -> None:
    async with signed_in(stack, "bob") as b:
        session = b.cookies.get(COOKIE, "127.0.0.1")
        assert session
        cookie = f"theme=dark; {COOKIE}={session}; prefs=a=b|c; xauthproxy_session=kept; {COOKIE}s=kept-too"
        pairs = received(await b.get(stack.url + path, headers={"Cookie": cookie}))
    assert values_of(pairs, "cookie") == [
        "theme=dark; prefs=a=b|c; xauthproxy_session=kept; authproxy_sessions=kept-too"
    ]
    assert not [value for _, value in pairs if session in value]


async def test_a_browsers_own_cookie_header_loses_only_the_session_cookie(stack: Stack) -> None:
    async with signed_in(stack, "bob") as b:
        # the login landed on the upstream, whose echo sets "upstream=1": the jar holds both
        assert {c.name for c in b.cookies.all() if c.domain == "127.0.0.1"} >= {COOKIE, "upstream"}
        pairs = received(await b.get(stack.url + "/app/x"))
    assert values_of(pairs, "cookie") == ["upstream=1"]
    assert values_of(pairs, "x-forwarded-user") == ["bob"]
