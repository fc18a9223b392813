"""The development provider, driven directly as a relying party would (no proxy in between).

Requirements: the code flow with PKCE S256 (wrong verifier -> invalid_grant), single-use codes,
refresh rotation with reuse detection revoking the family, RFC 7009 revocation, end_session
clearing the SSO cookie, public clients, and no codes or tokens in its logs.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web

from authproxy.demo.provider import (
    SESSION_COOKIE,
    DemoClient,
    DemoProvider,
    generate_signing_key,
    parse_basic_auth,
    s256_challenge,
    scoped_claims,
    token_hash,
    verify_pkce,
)
from authproxy.demo.users import DEMO_USERS, find_user
from tests.support.fault_provider import FaultProviderServer, serve_app
from tests.support.net import free_port
from tests.support.scripted_browser import Page, ScriptedBrowser, cancel_demo_login, login_demo

WEB_SECRET = "web-client-secret-0123456789abcdefghij"
CALLBACK = "http://127.0.0.1:9/callback"
SIGNED_OUT = "http://127.0.0.1:9/signed-out"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    provider: DemoProvider
    issuer: str
    clock: FakeClock
    backchannel: list[str] = field(default_factory=list)
    receiver_url: str = ""


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return generate_signing_key("RS256")


@pytest.fixture
def served(rsa_key: Any) -> Iterator[Served]:
    port = free_port("127.0.0.2")
    issuer = f"http://127.0.0.2:{port}"
    clock = FakeClock()
    received: list[str] = []

    async def backchannel(request: web.Request) -> web.Response:
        received.append(str((await request.post())["logout_token"]))
        return web.Response()

    async def callback(request: web.Request) -> web.Response:
        return web.json_response(dict(request.query))

    receiver = web.Application()
    receiver.router.add_post("/backchannel", backchannel)
    receiver.router.add_get("/callback", callback)
    with serve_app(receiver) as receiver_url:
        clients = [
            DemoClient("rp", WEB_SECRET, [receiver_url + "/callback"]),
            DemoClient(
                "web", WEB_SECRET, [CALLBACK], [SIGNED_OUT], backchannel_logout_uri=receiver_url + "/backchannel"
            ),
            DemoClient("basic-only", WEB_SECRET, [CALLBACK], auth_methods=["client_secret_basic"]),
            DemoClient("spa", None, [CALLBACK]),
        ]
        provider = DemoProvider(issuer, clients, keys=[rsa_key], clock=clock)
        with serve_app(provider.create_app(), "127.0.0.2", port):
            yield Served(provider, issuer, clock, received, receiver_url)


@pytest.fixture
async def rp() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def browser() -> AsyncIterator[ScriptedBrowser]:
    async with ScriptedBrowser() as scripted:
        yield scripted


@dataclass
class Login:
    code: str
    state: str
    nonce: str
    verifier: str


def authorize_url(served: Served, client: str, **extra: str) -> tuple[str, dict[str, str]]:
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": client,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid profile email offline_access",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    return served.provider.endpoint("authorize") + "?" + urlencode(params), {**params, "verifier": verifier}


def redirect_params(page: Page) -> dict[str, str]:
    assert page.status in (302, 303), page
    location = page.location
    assert location is not None and location.startswith(CALLBACK + "?"), location
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


async def log_in(
    browser: ScriptedBrowser, served: Served, client_id: str = "web", user: str = "alice", **extra: str
) -> Login:
    url, params = authorize_url(served, client_id, **extra)
    page = await browser.get(url, follow_redirects=False)
    if page.status == 200:
        assert "Development provider: not for production" in page.text
        page = await browser.submit(page, button=("username", user), follow_redirects=False)
    answer = redirect_params(page)  # straight back when the provider's SSO session is live
    assert answer["state"] == params["state"] and answer["iss"] == served.issuer
    return Login(answer["code"], answer["state"], params["nonce"], params["verifier"])


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def token_request(
    rp: aiohttp.ClientSession, served: Served, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with rp.post(served.provider.endpoint("token"), data=form, headers=headers) as answer:
        return answer.status, await answer.json()


async def exchange(
    rp: aiohttp.ClientSession, served: Served, login: Login, *, verifier: str | None = None
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "authorization_code",
        "code": login.code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier or login.verifier,
    }
    return await token_request(rp, served, form, basic("web", WEB_SECRET))


async def refresh(rp: aiohttp.ClientSession, served: Served, refresh_token: str) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await token_request(rp, served, form, basic("web", WEB_SECRET))


async def verify(rp: aiohttp.ClientSession, served: Served, token: str, audience: str) -> dict[str, Any]:
    async with rp.get(served.provider.endpoint("jwks")) as answer:
        jwks = jwt.PyJWKSet.from_dict(await answer.json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=served.issuer,
        options={"verify_exp": False, "verify_iat": False},
    )
    return claims


# -- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verifier", "challenge", "ok"),
    [
        # RFC 7636 appendix B
        ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", True),
        ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", False),
        ("short", s256_challenge("short"), False),
        ("a" * 129, s256_challenge("a" * 129), False),
        ("bad char " + "a" * 40, s256_challenge("bad char " + "a" * 40), False),
    ],
    ids=["rfc7636-example", "one-char-off", "too-short", "too-long", "outside-unreserved-set"],
)
def test_pkce_s256_verification(verifier: str, challenge: str, ok: bool) -> None:
    assert verify_pkce(verifier, challenge) is ok


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + base64.b64encode(b"web:s3cret").decode(), ("web", "s3cret")),
        # RFC 6749 2.3.1: form-urlencoded before base64
        ("Basic " + base64.b64encode(b"a%3Ab:p%40ss+word").decode(), ("a:b", "p@ss word")),
        ("basic " + base64.b64encode(b"web:").decode(), ("web", "")),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        (None, None),
    ],
    ids=["plain", "urlencoded", "lowercase-scheme-empty-secret", "bearer", "not-base64", "no-colon", "absent"],
)
def test_basic_client_authentication_parsing(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic_auth(header) == expected


@pytest.mark.parametrize(
    ("scope", "present", "absent"),
    [
        (["openid"], {"sub", "groups"}, {"email", "name", "preferred_username"}),
        (["openid", "email"], {"email", "email_verified"}, {"name"}),
        (["openid", "profile"], {"name", "preferred_username"}, {"email"}),
    ],
    ids=["openid-only", "email", "profile"],
)
def test_claims_released_by_scope(scope: list[str], present: set[str], absent: set[str]) -> None:
    user = find_user(DEMO_USERS, "alice")
    assert user is not None
    claims = scoped_claims(user, scope)
    assert present <= claims.keys() and not absent & claims.keys()


def test_at_hash_is_left_half_of_sha256() -> None:
    # OpenID Connect Core 1.0 section 3.1.3.6, computed independently
    import hashlib

    digest = hashlib.sha256(b"token-value").digest()[:16]
    assert token_hash("token-value") == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- the flow -------------------------------------------------------------------------------------


async def test_discovery_and_jwks(served: Served, rp: aiohttp.ClientSession) -> None:
    async with rp.get(served.issuer + "/.well-known/openid-configuration") as answer:
        metadata = await answer.json()
    assert metadata["issuer"] == served.issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["token_endpoint"] == served.issuer + "/token"
    async with rp.get(metadata["jwks_uri"]) as answer:
        keys = (await answer.json())["keys"]
    assert [key["kid"] for key in keys] == [served.provider.signing_key.kid]
    assert all("d" not in key for key in keys)  # public halves only


async def test_code_flow_issues_verified_tokens(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    status, tokens = await exchange(rp, served, login)
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300 and tokens["refresh_token"]
    claims = await verify(rp, served, tokens["id_token"], "web")
    assert claims["nonce"] == login.nonce
    assert claims["at_hash"] == token_hash(tokens["access_token"])
    assert (claims["sub"], claims["email"], claims["groups"]) == (
        "alice",
        "alice@example.com",
        ["admins", "developers"],
    )
    assert {"iat", "exp", "auth_time", "sid", "preferred_username", "name", "email_verified"} <= claims.keys()
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
    access = await verify(rp, served, tokens["access_token"], "web")
    assert access["client_id"] == "web" and "offline_access" in access["scope"].split()
    async with rp.get(
        served.provider.endpoint("userinfo"), headers={"Authorization": "Bearer " + tokens["access_token"]}
    ) as answer:
        assert answer.status == 200
        assert (await answer.json())["sub"] == "alice"
    assert served.provider.stats.code_grants == 1 and served.provider.stats.token_requests == 1


async def test_wrong_pkce_verifier_is_invalid_grant_and_spends_the_code(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    status, body = await exchange(rp, served, login, verifier=secrets.token_urlsafe(48))
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await exchange(rp, served, login)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_is_single_use_and_reuse_revokes_its_tokens(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    status, tokens = await exchange(rp, served, login)
    assert status == 200
    status, body = await exchange(rp, served, login)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await refresh(rp, served, tokens["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_expires(served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession) -> None:
    login = await log_in(browser, served)
    served.clock.now += 61
    status, body = await exchange(rp, served, login)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_redirect_uri_must_match_at_the_token_endpoint(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK + "x",
            "code_verifier": login.verifier}  # fmt: skip
    status, body = await token_request(rp, served, form, basic("web", WEB_SECRET))
    assert (status, body["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("client_id", "form_extra", "headers"),
    [
        ("web", {}, basic("web", "wrong-secret")),
        ("web", {"client_id": "web", "client_secret": "wrong-secret"}, {}),
        ("web", {"client_id": "web"}, {}),  # a confidential client cannot use "none"
        ("basic-only", {"client_id": "basic-only", "client_secret": WEB_SECRET}, {}),  # method not registered
        ("spa", {"client_id": "spa", "client_secret": "anything"}, {}),
        ("nobody", {"client_id": "nobody"}, {}),
    ],
    ids=["basic-wrong-secret", "post-wrong-secret", "confidential-without-secret", "unregistered-method",
         "public-with-secret", "unknown-client"],
)  # fmt: skip
async def test_client_authentication_failures_are_invalid_client(
    served: Served,
    browser: ScriptedBrowser,
    rp: aiohttp.ClientSession,
    client_id: str,
    form_extra: dict[str, str],
    headers: dict[str, str],
) -> None:
    login = await log_in(browser, served, client_id if client_id != "nobody" else "web")
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier, **form_extra}  # fmt: skip
    status, body = await token_request(rp, served, form, headers)
    assert (status, body["error"]) == (401, "invalid_client")
    assert served.provider.stats.code_grants == 0


async def test_client_secret_post_and_public_client(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier, "client_id": "web", "client_secret": WEB_SECRET}  # fmt: skip
    status, _ = await token_request(rp, served, form)
    assert status == 200
    login = await log_in(browser, served, "spa")
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier, "client_id": "spa"}  # fmt: skip
    status, tokens = await token_request(rp, served, form)
    assert status == 200
    assert (await verify(rp, served, tokens["id_token"], "spa"))["nonce"] == login.nonce


async def test_token_endpoint_refusals_name_their_reason(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier}  # fmt: skip
    assertion = {"client_id": "web", "client_assertion": "a.b.c",
                 "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}  # fmt: skip
    as_web, as_rp = basic("web", WEB_SECRET), basic("rp", WEB_SECRET)
    refusals = [
        ({**form, "grant_type": "password"}, as_web, "unsupported_grant_type", "use authorization_code"),
        ({**form, **assertion}, None, "invalid_client", "private_key_jwt is not supported"),
        ({**form, "client_id": "rp"}, as_web, "invalid_client", "client_id does not match"),
        # the last: it spends the code
        (form, as_rp, "invalid_grant", "the code was issued to another client"),
    ]
    for sent, headers, error, description in refusals:
        status, body = await token_request(rp, served, sent, headers)
        assert (status, body["error"]) == (401 if error == "invalid_client" else 400, error), sent
        assert body["error_description"].startswith(description)
    assert served.provider.stats.code_grants == 0


async def test_a_refresh_token_of_another_client_unknown_or_expired_is_invalid_grant(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    _, tokens = await exchange(rp, served, await log_in(browser, served))
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    for sent, client in [(form, "rp"), ({**form, "refresh_token": "never-issued"}, "web")]:
        status, body = await token_request(rp, served, sent, basic(client, WEB_SECRET))
        assert (status, body["error"], body["error_description"]) == (400, "invalid_grant", "unknown refresh token")
    lifetime = served.provider.refresh_token_ttl
    assert lifetime is not None
    served.clock.now += lifetime + 1
    status, body = await refresh(rp, served, tokens["refresh_token"])
    assert (status, body["error_description"]) == (400, "the refresh token has expired")
    assert served.provider.stats.refresh_grants == 0


async def test_userinfo_refuses_expired_foreign_and_id_tokens(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    _, tokens = await exchange(rp, served, login)

    async def userinfo_status(token: str) -> int:
        headers = {"Authorization": "Bearer " + token}
        async with rp.get(served.provider.endpoint("userinfo"), headers=headers) as answer:
            return answer.status

    assert await userinfo_status(tokens["access_token"]) == 200
    assert await userinfo_status(tokens["id_token"]) == 401  # signed by the provider, but no access token
    assert await userinfo_status("not-a-token") == 401
    served.clock.now += served.provider.access_token_ttl + 1
    assert await userinfo_status(tokens["access_token"]) == 401


def test_demo_clients_and_keys_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="unsupported client auth methods: \\['private_key_jwt'\\]"):
        DemoClient("c", "secret", [CALLBACK], auth_methods=["private_key_jwt"])
    with pytest.raises(ValueError, match="a client without a secret can only use the auth method none"):
        DemoClient("c", None, [CALLBACK], auth_methods=["client_secret_basic"])
    with pytest.raises(ValueError, match="unsupported demo key algorithm: HS256"):
        generate_signing_key("HS256")


async def test_refresh_rotates_and_reuse_revokes_the_family(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    _, first = await exchange(rp, served, login)
    first_claims = await verify(rp, served, first["id_token"], "web")
    served.clock.now += 100
    status, second = await refresh(rp, served, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    refreshed = await verify(rp, served, second["id_token"], "web")
    # OIDC Core 12.2: same auth_time and sub, no nonce
    assert refreshed["auth_time"] == first_claims["auth_time"] and refreshed["sub"] == "alice"
    assert "nonce" not in refreshed and refreshed["iat"] == first_claims["iat"] + 100
    status, body = await refresh(rp, served, first["refresh_token"])  # reuse of the rotated token
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await refresh(rp, served, second["refresh_token"])  # the family is gone
    assert (status, body["error"]) == (400, "invalid_grant")
    async with rp.get(
        served.provider.endpoint("userinfo"), headers={"Authorization": "Bearer " + second["access_token"]}
    ) as answer:
        assert answer.status == 401
    assert (served.provider.stats.refresh_grants, served.provider.stats.refresh_reuses) == (1, 1)


async def test_refresh_cannot_widen_scope_and_no_refresh_token_without_offline_access(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served, scope="openid email offline_access")
    _, tokens = await exchange(rp, served, login)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid profile"}
    status, body = await token_request(rp, served, form, basic("web", WEB_SECRET))
    assert (status, body["error"]) == (400, "invalid_scope")
    login = await log_in(browser, served, scope="openid email", prompt="login")
    status, tokens = await exchange(rp, served, login)
    assert status == 200 and "refresh_token" not in tokens


async def test_revocation(served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession) -> None:
    login = await log_in(browser, served)
    _, tokens = await exchange(rp, served, login)
    revoke = served.provider.endpoint("revoke")
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    async with rp.post(revoke, data={"token": tokens["access_token"]}, headers=basic("web", WEB_SECRET)) as answer:
        assert answer.status == 200
    async with rp.get(served.provider.endpoint("userinfo"), headers=bearer) as answer:
        assert answer.status == 401
    async with rp.post(revoke, data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
                       headers=basic("web", "wrong")) as answer:  # fmt: skip
        assert answer.status == 401  # RFC 7009 section 2.1: the client authenticates
    status, rotated = await refresh(rp, served, tokens["refresh_token"])
    assert status == 200  # the unauthenticated revocation revoked nothing
    async with rp.post(revoke, data={"token": rotated["refresh_token"]}, headers=basic("web", WEB_SECRET)) as answer:
        assert answer.status == 200
    status, body = await refresh(rp, served, rotated["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    async with rp.post(revoke, data={"token": "never-issued"}, headers=basic("web", WEB_SECRET)) as answer:
        assert answer.status == 200  # RFC 7009 section 2.2: unknown tokens are not an error
    assert served.provider.stats.revocations == 3


async def test_sso_is_silent_until_end_session(served: Served, browser: ScriptedBrowser) -> None:
    await log_in(browser, served)
    assert browser.cookies.get(SESSION_COOKIE, "127.0.0.2") is not None
    url, params = authorize_url(served, "web")
    answer = redirect_params(await browser.get(url, follow_redirects=False))
    assert answer["state"] == params["state"] and answer["code"]
    url, _ = authorize_url(served, "web", prompt="login")
    assert (await browser.get(url)).status == 200  # prompt=login forces the page
    end = (
        served.provider.endpoint("end_session")
        + "?"
        + urlencode({"client_id": "web", "post_logout_redirect_uri": SIGNED_OUT, "state": "after-logout"})
    )
    page = await browser.get(end, follow_redirects=False)
    assert (page.status, page.location) == (302, SIGNED_OUT + "?state=after-logout")
    assert browser.cookies.get(SESSION_COOKIE) is None
    page = await browser.get(authorize_url(served, "web")[0], follow_redirects=False)
    assert page.status == 200 and "Sign in" in page.text


async def test_end_session_without_registered_target_shows_signed_out_page(
    served: Served, browser: ScriptedBrowser
) -> None:
    await log_in(browser, served)
    end = (
        served.provider.endpoint("end_session") + "?" + urlencode({"post_logout_redirect_uri": "https://evil.example/"})
    )
    page = await browser.get(end, follow_redirects=False)
    assert page.status == 200 and "Signed out" in page.text and page.location is None
    url, _ = authorize_url(served, "web", prompt="none")
    assert redirect_params(await browser.get(url, follow_redirects=False))["error"] == "login_required"


async def test_end_session_sends_back_channel_logout(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession
) -> None:
    login = await log_in(browser, served)
    _, tokens = await exchange(rp, served, login)
    sid = (await verify(rp, served, tokens["id_token"], "web"))["sid"]
    end = served.provider.endpoint("end_session") + "?" + urlencode({"id_token_hint": tokens["id_token"]})
    assert (await browser.get(end)).status == 200
    assert len(served.backchannel) == 1
    claims = await verify(rp, served, served.backchannel[0], "web")
    assert claims["sid"] == sid and "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
    assert "nonce" not in claims


async def test_cancel_redirects_with_access_denied(served: Served, browser: ScriptedBrowser) -> None:
    url, params = authorize_url(served, "web")
    page = await browser.get(url)
    answer = redirect_params(await browser.submit(page, button="cancel", follow_redirects=False))
    assert (answer["error"], answer["state"]) == ("access_denied", params["state"])


@pytest.mark.parametrize(
    ("override", "outcome"),
    [
        ({"client_id": "nobody"}, 400),
        ({"redirect_uri": "http://127.0.0.1:9/elsewhere"}, 400),
        ({"redirect_uri": CALLBACK + "/"}, 400),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "profile email"}, "invalid_scope"),
    ],
    ids=["unknown-client", "other-redirect-uri", "redirect-uri-trailing-slash", "no-pkce", "pkce-plain",
         "implicit", "no-openid-scope"],
)  # fmt: skip
async def test_authorization_request_validation(
    served: Served, browser: ScriptedBrowser, override: dict[str, str], outcome: int | str
) -> None:
    url, _ = authorize_url(served, "web", **override)
    page = await browser.get(url, follow_redirects=False)
    if isinstance(outcome, int):
        # never a redirect to an unverified redirect_uri
        assert (page.status, page.location) == (outcome, None)
    else:
        assert redirect_params(page)["error"] == outcome


async def test_login_page_lists_demo_users_and_says_development(served: Served, browser: ScriptedBrowser) -> None:
    page = await browser.get(authorize_url(served, "web")[0])
    (form,) = page.forms
    assert [button.value for button in form.buttons] == ["alice", "bob", "carol", "1"]
    assert "Development provider: not for production" in page.text
    assert page.headers["Cache-Control"] == "no-store"


async def test_codes_and_tokens_never_logged(
    served: Served, browser: ScriptedBrowser, rp: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login = await log_in(browser, served)
    _, tokens = await exchange(rp, served, login)
    await refresh(rp, served, tokens["refresh_token"])
    await refresh(rp, served, tokens["refresh_token"])  # reuse: logged as a warning
    logged = "\n".join(record.getMessage() + str(getattr(record, "fields", "")) for record in caplog.records)
    assert "reused" in logged
    for secret in (login.code, tokens["access_token"], tokens["refresh_token"], tokens["id_token"], login.verifier):
        assert secret not in logged


# -- the misbehaving subclass (tests/support/fault_provider.py) ------------------------------------


async def fault_login(fault_provider: FaultProviderServer, http: aiohttp.ClientSession) -> tuple[Login, dict[str, Any]]:
    """A login and code exchange against the fault provider; (login, token response)."""
    served = Served(fault_provider.provider, fault_provider.issuer, FakeClock())
    async with ScriptedBrowser() as scripted:
        login = await log_in(scripted, served, fault_provider.client_id)
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier}  # fmt: skip
    status, tokens = await token_request(
        http, served, form, basic(fault_provider.client_id, fault_provider.client_secret)
    )
    assert status == 200, tokens
    return login, tokens


async def jwks_of(http: aiohttp.ClientSession, issuer: str) -> jwt.PyJWKSet:
    async with http.get(issuer + "/jwks") as answer:
        return jwt.PyJWKSet.from_dict(await answer.json())


def verified(token: str, keys: jwt.PyJWKSet) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token).get("kid")
    key = keys[kid] if kid else keys.keys[0]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False, "verify_iat": False}
    )
    return claims


ID_TOKEN_DEFECTS: dict[str, Callable[[dict[str, Any], Login, dict[str, Any], str], bool]] = {
    "wrong_iss": lambda claims, login, tokens, issuer: claims["iss"] != issuer,
    "wrong_aud": lambda claims, login, tokens, issuer: claims["aud"] == "some-other-client",
    "missing_aud": lambda claims, login, tokens, issuer: "aud" not in claims,
    "extra_aud_no_azp": lambda claims, login, tokens, issuer: len(claims["aud"]) == 2 and "azp" not in claims,
    "expired": lambda claims, login, tokens, issuer: claims["exp"] < time.time() - 600,
    "missing_iat": lambda claims, login, tokens, issuer: "iat" not in claims,
    "iat_future": lambda claims, login, tokens, issuer: claims["iat"] > time.time() + 600,
    "missing_sub": lambda claims, login, tokens, issuer: "sub" not in claims,
    "missing_nonce": lambda claims, login, tokens, issuer: "nonce" not in claims,
    "wrong_nonce": lambda claims, login, tokens, issuer: claims["nonce"] != login.nonce,
    "wrong_at_hash": lambda claims, login, tokens, issuer: claims["at_hash"] != token_hash(tokens["access_token"]),
}


@pytest.mark.parametrize("fault", sorted(ID_TOKEN_DEFECTS))
async def test_fault_breaks_exactly_its_claim(
    fault_provider: FaultProviderServer, rp: aiohttp.ClientSession, fault: str
) -> None:
    fault_provider.register_client([CALLBACK])
    good_login, good = await fault_login(fault_provider, rp)
    keys = await jwks_of(rp, fault_provider.issuer)
    good_claims = verified(good["id_token"], keys)
    fault_provider.set_fault(fault)
    login, tokens = await fault_login(fault_provider, rp)
    claims = verified(tokens["id_token"], keys)  # still properly signed
    assert ID_TOKEN_DEFECTS[fault](claims, login, tokens, fault_provider.issuer)
    # and the check does not hold on a well-behaved token, so the table cannot pass vacuously
    assert not ID_TOKEN_DEFECTS[fault](good_claims, good_login, good, fault_provider.issuer)


@pytest.mark.parametrize("fault", ["bad_signature", "alg_none", "hs256_client_secret", "no_kid", "rotate_keys"])
async def test_fault_signatures_and_keys(
    fault_provider: FaultProviderServer, rp: aiohttp.ClientSession, fault: str
) -> None:
    fault_provider.register_client([CALLBACK])
    before = await jwks_of(rp, fault_provider.issuer)
    fault_provider.set_fault(fault)
    _, tokens = await fault_login(fault_provider, rp)
    token = tokens["id_token"]
    header = jwt.get_unverified_header(token)
    if fault == "bad_signature":
        with pytest.raises(jwt.InvalidSignatureError):
            verified(token, before)
    elif fault == "alg_none":
        assert header["alg"] == "none" and token.endswith(".")
    elif fault == "hs256_client_secret":
        assert header["alg"] == "HS256"
        assert jwt.decode(token, fault_provider.client_secret, algorithms=["HS256"], audience=fault_provider.client_id)
    elif fault == "no_kid":
        after = await jwks_of(rp, fault_provider.issuer)
        assert "kid" not in header and len(after.keys) == 1 and after.keys[0].key_id is None
        assert verified(token, after)["sub"] == "alice"
    else:
        after = await jwks_of(rp, fault_provider.issuer)
        assert header["kid"] not in {key.key_id for key in before.keys}
        assert verified(token, after)["sub"] == "alice"


async def test_fault_userinfo_sub_mismatch(fault_provider: FaultProviderServer, rp: aiohttp.ClientSession) -> None:
    fault_provider.register_client([CALLBACK])
    fault_provider.set_fault("userinfo_sub_mismatch")
    _, tokens = await fault_login(fault_provider, rp)
    headers = {"Authorization": "Bearer " + tokens["access_token"]}
    async with rp.get(fault_provider.issuer + "/userinfo", headers=headers) as answer:
        assert (await answer.json())["sub"] == "someone-else"


async def test_fault_access_denied_makes_no_token_request(
    fault_provider: FaultProviderServer, browser: ScriptedBrowser
) -> None:
    fault_provider.register_client([CALLBACK])
    fault_provider.set_fault("access_denied")
    served = Served(fault_provider.provider, fault_provider.issuer, FakeClock())
    url, params = authorize_url(served, fault_provider.client_id)
    answer = redirect_params(await browser.get(url, follow_redirects=False))
    assert (answer["error"], answer["state"]) == ("access_denied", params["state"])
    assert fault_provider.provider.stats.token_requests == 0


async def test_fault_token_endpoint(fault_provider: FaultProviderServer, rp: aiohttp.ClientSession) -> None:
    fault_provider.register_client([CALLBACK])
    _, tokens = await fault_login(fault_provider, rp)
    served = Served(fault_provider.provider, fault_provider.issuer, FakeClock())
    auth = basic(fault_provider.client_id, fault_provider.client_secret)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    fault_provider.set_fault("invalid_grant_on_refresh")
    assert await token_request(rp, served, form, auth) == (
        400,
        {"error": "invalid_grant", "error_description": "fault"},
    )
    fault_provider.set_fault("token_endpoint_down")
    async with rp.post(served.provider.endpoint("token"), data=form, headers=auth) as answer:
        assert answer.status == 503
    fault_provider.set_fault("token_endpoint_slow", delay=0.3)
    started = time.monotonic()
    status, _ = await token_request(rp, served, form, auth)
    assert status == 200 and time.monotonic() - started >= 0.3  # the faults did not consume the token
    assert fault_provider.provider.stats.token_requests == 4


async def test_scripted_login_helpers_follow_through_to_the_relying_party(
    served: Served, browser: ScriptedBrowser
) -> None:
    callback = served.receiver_url + "/callback"
    url, params = authorize_url(served, "rp", redirect_uri=callback)
    page = await login_demo(browser, url, "bob")
    assert page.url.startswith(callback) and page.json()["state"] == params["state"] and page.json()["code"]
    assert [status for status, _ in page.history] == [303, 200]  # the login POST, then the callback
    url, params = authorize_url(served, "rp", redirect_uri=callback)
    page = await login_demo(browser, url, "bob")  # SSO-silent: no page, straight back
    assert [status for status, _ in page.history] == [302, 200] and page.json()["state"] == params["state"]
    url, params = authorize_url(served, "rp", redirect_uri=callback, prompt="login")
    page = await cancel_demo_login(browser, url)
    assert page.json()["error"] == "access_denied"
    url, _ = authorize_url(served, "rp", redirect_uri=callback, prompt="login")
    with pytest.raises(AssertionError, match="no user 'mallory'"):
        await login_demo(browser, url, "mallory")
