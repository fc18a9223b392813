"""Fuzzing the edges an attacker controls (SPEC sections 2-5), with hypothesis.

The real application (``authproxy.app.create_app``, memory store) runs in-process on its own
event loop thread in front of the development provider and an echo upstream; requests are sent
with the standard library's ``http.client`` so every byte is the test's choice. Properties:

- random session and login-flow cookies (junk, well-formed but unsigned tickets, one-character
  mutations of a real session cookie): never a 5xx, never a traceback, never a session (no 200
  on a protected route, no identity headers upstream on an optional one);
- random ``/oauth2/callback`` query strings: 4xx only, no session cookie, no token request;
- random ``rd`` through a whole (single sign-on) login: the browser always lands on this origin;
- random configuration texts: ``parse_config`` raises ``ConfigError`` and nothing else, and a
  configuration it accepts has only finite durations.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from authproxy.app import create_app
from authproxy.config import Config, parse_config
from authproxy.demo.provider import SESSION_COOKIE as PROVIDER_COOKIE
from authproxy.demo.provider import DemoClient, DemoProvider
from authproxy.errors import ConfigError
from authproxy.metrics import Metrics
from authproxy.oidc.flow import flow_cookie_name
from authproxy.sessions.ticket import new_ticket, seal_ticket
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.net import free_port
from tests.support.scripted_browser import parse_forms
from tests.support.upstream import Upstream

SECRET = "fuzz-tests-session-secret-0123456789abcdef"
COOKIE = "authproxy_session"
IDENTITY_HEADERS = frozenset(
    {"x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups"}
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set_cookies(self) -> dict[str, str]:
        found = {}
        for key, value in self.headers:
            if key.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                found[name.strip()] = rest.split(";", 1)[0]
        return found


def fetch(base: str, target: str, headers: dict[str, str] | None = None) -> Answer:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)
    try:
        connection.request("GET", target, headers={"User-Agent": f"fuzz-{uuid.uuid4()}", **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def assert_sane(answer: Answer) -> None:
    """No server error and nothing a user should never see."""
    assert answer.status < 500, answer
    assert b"Traceback" not in answer.body, answer.body[:500]
    assert not answer.set_cookies().get(COOKIE), "a session cookie was issued without a login"


@dataclass
class Stack:
    url: str
    provider: DemoProvider
    provider_url: str
    provider_session: str  # the demo provider's SSO cookie: later logins need no form
    session_cookie: str  # a real, signed-in session of this proxy


def _config(port: int, issuer: str, upstream: str) -> Config:
    text = yaml.safe_dump(
        {
            "server": {
                "listen": f"127.0.0.1:{port}",
                "public_url": f"http://127.0.0.1:{port}",
                "rate_limit": {"auth_per_minute": 1000000},
            },
            "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "5s"},
            "session": {"secrets": [SECRET], "cookie": {"secure": False}},
            "routes": [
                {"name": "optional", "match": {"path_prefix": "/optional"}, "upstream": upstream, "auth": "optional"},
                {"name": "app", "upstream": upstream},
            ],
        }
    )
    return parse_config(text, env={})


def _first_login(stack_url: str, provider_url: str) -> tuple[str, str]:
    """A login through the provider's form: its SSO cookie and the proxy's session cookie."""
    start = fetch(stack_url, "/oauth2/start?rd=/")
    flow = start.set_cookies()
    location = start.header("Location") or ""
    page = fetch(provider_url, location.removeprefix(provider_url))
    [form] = parse_forms(page.body.decode(), location)
    body = urlencode([*form.fields, ("username", "alice")])
    parts = urlsplit(provider_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)
    try:
        connection.request(
            "POST", urlsplit(form.action).path, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = connection.getresponse()
        answer = Answer(response.status, response.getheaders(), response.read())
    finally:
        connection.close()
    provider_session = answer.set_cookies()[PROVIDER_COOKIE]
    callback = (answer.header("Location") or "").removeprefix(stack_url)
    cookie = "; ".join(f"{k}={v}" for k, v in flow.items())
    done = fetch(stack_url, callback, {"Cookie": cookie})
    return provider_session, done.set_cookies()[COOKIE]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    provider_port = free_port(PROVIDER_HOST)
    provider_url = f"http://{PROVIDER_HOST}:{provider_port}"
    port = free_port()
    provider = DemoProvider(
        provider_url, [DemoClient(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"])]
    )
    with (
        serve_app(provider.create_app(), PROVIDER_HOST, provider_port),
        serve_app(Upstream().app()) as upstream_url,
    ):
        app, _services = create_app(_config(port, provider_url, upstream_url), Metrics())
        with serve_app(app, "127.0.0.1", port) as url:
            deadline = time.monotonic() + 10
            while fetch(url, "/oauth2/start").status != 302:
                assert time.monotonic() < deadline, "provider metadata never loaded"
                time.sleep(0.05)
            provider_session, session_cookie = _first_login(url, provider_url)
            yield Stack(url, provider, provider_url, provider_session, session_cookie)


def test_the_real_session_cookie_works(stack: Stack) -> None:
    """The control for the properties below: the same request with the real cookie is served."""
    answer = fetch(stack.url, "/app/x", {"Cookie": f"{COOKIE}={stack.session_cookie}", "Accept": "application/json"})
    assert answer.status == 200
    seen = {k.lower(): v for k, v in json.loads(answer.body)["headers"]}
    assert seen["x-forwarded-user"] == "alice"


# ---------------------------------------------------------------------------------------------- cookies

# header-safe text (http.client refuses CR, LF and NUL, and sends latin-1)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
)
b64url = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=107, max_size=107
)
cookie_values = st.one_of(
    header_text,
    b64url.map(lambda body: "v1." + body),  # well-formed, sealed by nobody
    st.builds(lambda: seal_ticket(new_ticket(), SECRET.encode())),  # sealed, but names no session
    st.sampled_from(["", "v1.", "v1", '""', "v1." + "A" * 106, "v1." + "=" * 107, "%76%31.", "v1.\\x00"]),
)


def assert_anonymous(stack: Stack, cookie_header: str) -> None:
    protected = fetch(stack.url, "/app/x?y=1", {"Cookie": cookie_header, "Accept": "application/json"})
    assert_sane(protected)
    assert protected.status == 401, protected
    browser = fetch(stack.url, "/app/x?y=1", {"Cookie": cookie_header, "Accept": "text/html"})
    assert_sane(browser)
    assert browser.status == 302 and (browser.header("Location") or "").startswith("/oauth2/start?rd=")
    optional = fetch(stack.url, "/optional/x", {"Cookie": cookie_header, "Accept": "application/json"})
    assert_sane(optional)
    assert optional.status == 200
    seen = {k.lower() for k, _ in json.loads(optional.body)["headers"]}
    assert not seen & IDENTITY_HEADERS, seen


@FUZZ
@given(
    value=cookie_values,
    extra=st.lists(st.tuples(st.sampled_from([COOKIE, "other", COOKIE + "_flow_x"]), header_text), max_size=3),
)
def test_random_session_cookies_are_no_session(stack: Stack, value: str, extra: list[tuple[str, str]]) -> None:
    cookies = [f"{COOKIE}={value}", *(f"{name}={v}" for name, v in extra)]
    assume(stack.session_cookie not in "; ".join(cookies))
    assert_anonymous(stack, "; ".join(cookies))


@FUZZ
@given(
    position=st.integers(min_value=0),
    replacement=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "),
)
def test_tampered_session_cookie_is_no_session(stack: Stack, position: int, replacement: str) -> None:
    real = stack.session_cookie
    index = position % len(real)
    tampered = real[:index] + replacement + real[index + 1 :]
    assume(tampered != real)
    assert_anonymous(stack, f"{COOKIE}={tampered}")


# ---------------------------------------------------------------------------------------------- callback

param_names = st.one_of(
    st.sampled_from(["state", "code", "error", "error_description", "iss", "session_state"]), header_text
)
param_values = st.one_of(header_text, st.sampled_from(["access_denied", "login_required", "", "x" * 2000]))


@FUZZ
@given(
    params=st.lists(st.tuples(param_names, param_values), max_size=6),
    raw=st.one_of(
        st.none(),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=200),
    ),
    flow_value=st.one_of(st.none(), cookie_values),
)
@example(params=[("state", "s"), ("code", "c")], raw=None, flow_value="v1." + "A" * 107)
@example(params=[("error", "access_denied"), ("state", "s")], raw=None, flow_value=None)
@example(params=[], raw="state=%00&code=%FF%FE&error=%ZZ", flow_value=None)
def test_random_callbacks_fail_cleanly_without_a_token_request(
    stack: Stack, params: list[tuple[str, str]], raw: str | None, flow_value: str | None
) -> None:
    query = raw if raw is not None else urlencode(params)
    state = dict(params).get("state", "")
    headers = {"Accept": "text/html"}
    if flow_value is not None:
        # the flow cookie this state's digest names, so the callback really tries to open it
        headers["Cookie"] = f"{flow_cookie_name(COOKIE, state)}={flow_value}; {COOKIE}_flow_0000={flow_value}"
    token_requests = stack.provider.stats.token_requests
    answer = fetch(stack.url, "/oauth2/callback?" + query, headers)
    assert_sane(answer)
    assert answer.status in (400, 403), answer
    assert answer.header("Location") is None
    assert stack.provider.stats.token_requests == token_requests


# ---------------------------------------------------------------------------------------------- rd


def lands_on_this_origin(base: str, location: str) -> bool:
    """Where a browser goes for ``Location: location``, read the lax way browsers read it."""
    if any(ord(c) < 0x20 or c.isspace() for c in location):
        return False
    candidates = [location]
    for _ in range(4):  # what an upstream that decodes the path would see too
        candidates.append(unquote(candidates[-1]))
    for candidate in candidates:
        # browsers drop tabs and newlines and read "\" as "/" in http(s) URLs
        cleaned = re.sub(r"[\t\n\r]", "", candidate).replace("\\", "/")
        if not cleaned.startswith("/") or cleaned.startswith("//"):
            return False
        if urlsplit(urljoin(base, cleaned)).netloc != urlsplit(base).netloc:
            return False
    return True


rd_values = st.one_of(
    st.text(max_size=200),
    st.from_regex(r"\A(/|//|/\\|\\\\|https?:|javascript:|%2[fF]|%5[cC]|\t|\s)*[a-z0-9./%?=&@:#-]{0,40}\Z"),
    st.sampled_from(
        [
            "//evil.example",
            "/\\evil.example",
            "/%2F%2Fevil.example",
            "/%252F%252Fevil",
            "https://evil.example/",
            "/\t/evil",
            "/\uff0f\uff0fevil",
            "/..//evil",
            "/app?x=1#frag",
        ]
    ),
)


@FUZZ
@given(rd=rd_values)
def test_random_rd_always_lands_on_this_origin(stack: Stack, rd: str) -> None:
    start = fetch(stack.url, "/oauth2/start?rd=" + quote(rd, safe=""))
    assert_sane(start)
    assert start.status == 302, start
    flow = start.set_cookies()
    authorize = (start.header("Location") or "").removeprefix(stack.provider_url)
    # the provider's single sign-on: straight back to the callback with a code
    answer = fetch(stack.provider_url, authorize, {"Cookie": f"{PROVIDER_COOKIE}={stack.provider_session}"})
    assert answer.status == 302, answer
    callback = (answer.header("Location") or "").removeprefix(stack.url)
    done = fetch(stack.url, callback, {"Cookie": "; ".join(f"{k}={v}" for k, v in flow.items())})
    assert done.status == 302, done
    location = done.header("Location") or ""
    assert lands_on_this_origin(stack.url, location), (rd, location)


# ---------------------------------------------------------------------------------------------- config

KEYS = [
    "server", "listen", "admin_listen", "public_url", "auth_prefix", "trusted_proxies", "tls", "cert_file",
    "key_file", "rate_limit", "auth_per_minute", "client_header_timeout", "shutdown_timeout", "provider", "issuer",
    "client_id", "client_secret", "client_secret_file", "client_auth_method", "private_key_file", "scopes",
    "extra_authorize_params", "allowed_algorithms", "clock_skew", "post_logout_redirect_uri", "bearer_audiences",
    "userinfo", "timeout", "ca_file", "session", "store", "redis", "url", "url_file", "sentinel", "master_name",
    "nodes", "cluster", "key_prefix", "secrets", "secrets_file", "cookie", "name", "secure", "same_site", "domain",
    "idle_timeout", "absolute_timeout", "refresh_before_expiry", "forward_auth", "pass_access_token",
    "identity_jwt", "signing_key_file", "ttl", "routes", "match", "host", "path_prefix", "upstream", "auth",
    "on_unauthenticated", "allow", "emails", "email_domains", "groups", "claims", "identity_headers",
    "pass_id_token", "bearer_tokens", "pass_host_header", "strip_path_prefix", "websocket",
]  # fmt: skip
SCALARS = [
    "90s", "5m", "8h", "7d", "0s", "-1s", "1e400s", "10", "-5", "0", ".nan", ".inf", "-.inf", "1e309", "true",
    "false", "null", "~", "''", '""', "2001-13-01", "2001-02-30", "2001-12-14t21:59:43.10-05:00", "0x1F", "0o17",
    "1_000", "http://127.0.0.1:1", "https://idp.example.com", "http://[::1", "http://h:99999", "redis://h:6379/0",
    "unix:///tmp/x", "127.0.0.1:4180", "::1:80", "a:b:c", "10.0.0.0/8", "10.0.0.0/99", "*.example.com",
    "/", "/oauth2", "//x", "${X}", "${X:-d}", "${UNSET}", "${", "$${X}", "memory", "redis", "none", "required",
    "optional", "lax", "strict", "RS256", "HS256", "none", "client_secret_basic", "private_key_jwt",
    "/nonexistent/file", "/", "/etc/hostname", "/bin/sh", "/proc/self/environ", "!!binary aGk=", "!!binary zz",
    "!!python/name:os.system", "!!set {a, b}", "!!omap [a: 1]", "&a [*a]", "*nope", "&a x", "? [a, b]", "[]",
    "{}", "[[[]]]", "{a: {b: {c: d}}}", "|\n  text", ">\n  folded", "'unterminated", "\"\\x00\"", "\"\\ud800\"",
    "é", "\u2028", "secret-" + "x" * 40,
]  # fmt: skip


def yaml_fragments() -> st.SearchStrategy[str]:
    """Text assembled from the schema's keys and scalars YAML finds hard: near-valid configurations."""
    scalar = st.sampled_from(SCALARS)
    key = st.sampled_from(KEYS)
    leaf = st.builds(lambda k, v: f"{k}: {v}", key, scalar)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(
                lambda k, items: f"{k}:\n" + "\n".join("  " + line for i in items for line in i.splitlines()),
                key,
                st.lists(inner, min_size=1, max_size=4),
            ),
            st.builds(
                lambda k, items: f"{k}:\n" + "\n".join("  - " + i.replace("\n", "\n    ") for i in items),
                key,
                st.lists(inner, min_size=1, max_size=3),
            ),
            st.builds(lambda k, vs: f"{k}: [{', '.join(vs)}]", key, st.lists(scalar, max_size=4)),
            st.builds(lambda items: "\n".join(items), st.lists(inner, min_size=1, max_size=4)),
        ),
        max_leaves=12,
    )


def valid_tree() -> dict[str, Any]:
    return {
        "server": {"public_url": "https://app.example.com"},
        "provider": {"issuer": "https://idp.example.com", "client_id": "c", "client_secret": "s"},
        "session": {"secrets": ["x" * 32]},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:8080"}],
    }


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.sampled_from(SCALARS)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """A valid configuration with one value replaced by something else (dumped as YAML)."""
    tree = valid_tree()
    node: Any = tree
    path = draw(st.lists(st.sampled_from([*KEYS, 0, 1]), min_size=1, max_size=4))
    for step in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(step, {}) if isinstance(step, str) else node
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
    last = path[-1]
    replaceable = (isinstance(node, dict) and isinstance(last, str)) or (
        isinstance(node, list) and isinstance(last, int) and last < len(node)
    )
    if replaceable:
        node[last] = draw(json_values)
    return yaml.safe_dump(tree)


def durations(config: Config) -> list[float]:
    values = [
        config.server.client_header_timeout, config.server.shutdown_timeout, config.session.idle_timeout,
        config.session.absolute_timeout, config.session.refresh_before_expiry, config.session.redis.timeout,
        config.identity_jwt.ttl, *(route.timeout for route in config.routes),
    ]  # fmt: skip
    if config.provider is not None:
        values += [config.provider.clock_skew, config.provider.timeout]
    return values


def check_config_text(text: str) -> None:
    try:
        config = parse_config(text, env={"X": "1", "EMPTY": ""})
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    # accepted: then every duration is a usable number of seconds
    assert all(math.isfinite(value) and value >= 0 for value in durations(config)), durations(config)


@FUZZ
@given(text=st.one_of(st.text(max_size=400), yaml_fragments(), mutated_configs()))
@example(text="a: 2001-13-01")
@example(text="provider:\n  client_secret_file: /bin/sh")
@example(text='session:\n  secrets_file: "a\\0b"')
@example(text="a: &x [*x]")
@example(text="a: " + "[" * 1000 + "]" * 1000)
@example(text=yaml.safe_dump({**valid_tree(), "session": {"secrets": ["x" * 32], "idle_timeout": float("nan")}}))
def test_parse_config_raises_only_config_error(text: str) -> None:
    check_config_text(text)


def test_valid_config_still_parses() -> None:
    """The control for the property above: the base of the mutations is itself valid."""
    assert parse_config(yaml.safe_dump(valid_tree()), env={}).routes[0].name == "app"
    check_config_text(yaml.safe_dump(valid_tree()))
