"""The echo upstream: shows what it received, identity headers first, credentials redacted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authproxy.demo.echo import create_echo_app, fingerprint, is_identity_header, redact_header, wants_json

ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
COOKIE_VALUE = "v1.sessionticketvalue0123456789"


EchoClient = TestClient[web.Request, web.Application]


@pytest.fixture
async def echo() -> AsyncIterator[EchoClient]:
    client = TestClient(TestServer(create_echo_app(), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("X-Forwarded-User", True),
        ("x-forwarded-groups", True),
        ("X_Forwarded_Email", True),
        ("X-Authproxy-Identity", True),
        ("X-Auth-Request-Preferred-Username", True),
        ("X-Forwarded-For", False),
        ("X-Forwarded-Host", False),
        ("Accept", False),
    ],
    ids=["user", "groups-lowercase", "underscore-spelling", "authproxy-prefix", "auth-request-prefix",
         "forwarded-for", "forwarded-host", "accept"],
)  # fmt: skip
def test_identity_header_classification(name: str, expected: bool) -> None:
    assert is_identity_header(name) is expected


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("Authorization", "Bearer abc.def", f"Bearer [redacted 7 chars, {fingerprint('abc.def')}]"),
        ("authorization", "Basic dXNlcjpwYXNz", f"Basic [redacted 12 chars, {fingerprint('dXNlcjpwYXNz')}]"),
        ("X-Forwarded-Id-Token", "id.token.value", f"[redacted 14 chars, {fingerprint('id.token.value')}]"),
        ("X-Auth-Request-Access-Token", "tok", f"[redacted 3 chars, {fingerprint('tok')}]"),
        ("Cookie", "a=1; session=secret", "a=[redacted]; session=[redacted]"),
        ("X-Forwarded-User", "alice", "alice"),
    ],
    ids=["bearer", "basic", "id-token", "access-token", "cookies", "plain"],
)
def test_redaction(name: str, value: str, shown: str) -> None:
    assert redact_header(name, value) == shown


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        ("application/json", None, True),
        ("text/html,application/xhtml+xml,*/*;q=0.8", None, False),
        ("*/*", None, False),
        ("text/html", "json", True),
        ("application/json", "html", False),
    ],
    ids=["json", "browser", "curl", "format-json", "format-html"],
)
def test_json_or_html(accept: str, query: str | None, expected: bool) -> None:
    assert wants_json(accept, query) is expected


async def test_echo_json_shows_request_with_identity_first(echo: EchoClient) -> None:
    headers = {
        "Accept": "application/json",
        "X-Forwarded-User": "alice",
        "X-Forwarded-Groups": "admins,developers",
        "X-Request-Id": "req-1",
        "Authorization": "Bearer " + ACCESS_TOKEN,
        "Cookie": f"theme=dark; authproxy_session={COOKIE_VALUE}",
    }
    answer = await echo.post("/some/path?a=1&a=2&b=x", data=b"x" * 1000, headers=headers)
    assert answer.status == 200
    body = await answer.json()
    assert (body["method"], body["path"], body["body_size"]) == ("POST", "/some/path", 1000)
    assert body["query"] == [["a", "1"], ["a", "2"], ["b", "x"]]
    assert body["identity_headers"] == [["X-Forwarded-User", "alice"], ["X-Forwarded-Groups", "admins,developers"]]
    others = {name.lower(): value for name, value in body["headers"]}
    assert others["x-request-id"] == "req-1"
    assert others["authorization"] == f"Bearer [redacted {len(ACCESS_TOKEN)} chars, {fingerprint(ACCESS_TOKEN)}]"
    assert others["cookie"] == "theme=[redacted]; authproxy_session=[redacted]"
    text = await answer.text()
    assert ACCESS_TOKEN not in text and COOKIE_VALUE not in text and "dark" not in text


async def test_echo_html_for_browsers(echo: EchoClient) -> None:
    headers = {
        "Accept": "text/html,*/*;q=0.8",
        "X-Forwarded-Email": "<script>alert(1)</script>@example.com",
        "Authorization": "Bearer " + ACCESS_TOKEN,
        "Cookie": f"authproxy_session={COOKIE_VALUE}",
    }
    answer = await echo.get("/page", headers=headers)
    text = await answer.text()
    assert answer.status == 200 and answer.content_type == "text/html"
    assert "Set by authproxy" in text and 'href="/oauth2/sign_out"' in text and "development only" in text
    assert text.index("X-Forwarded-Email") < text.index("Other request headers")
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text
    assert ACCESS_TOKEN not in text and COOKIE_VALUE not in text


async def test_echo_without_identity_says_so(echo: EchoClient) -> None:
    answer = await echo.delete("/x?format=json")
    body = await answer.json()
    assert body["identity_headers"] == [] and body["method"] == "DELETE"
    page = await (await echo.get("/x?format=html")).text()
    assert "No identity headers" in page
