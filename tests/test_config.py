"""Configuration (SPEC section 2): every problem named by its YAML path, nothing half-valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authproxy.app import stop_bound
from authproxy.config import load_config, parse_config, parse_duration
from authproxy.errors import ConfigError

SECRET = "s" * 32
BASE = f"""
server: {{public_url: https://app.example.com}}
provider: {{issuer: https://idp.example.com, client_id: app, client_secret: x}}
session: {{secrets: ["{SECRET}"]}}
routes:
  - name: app
    upstream: "http://127.0.0.1:8080"
"""


def with_session(keys: str) -> str:
    """BASE with ``keys`` (flow-style YAML) added to its session section."""
    return BASE.replace('secrets: ["' + SECRET + '"]', f'secrets: ["{SECRET}"], {keys}')


def with_provider(keys: str) -> str:
    """BASE with ``keys`` (flow-style YAML) added to its provider section."""
    return BASE.replace("client_secret: x", f"client_secret: x, {keys}")


def problems_of(text: str, env: dict[str, str] | None = None, workers: int = 1) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {}, workers=workers)
    return info.value.problems


def test_minimal_config_is_valid_and_fills_defaults() -> None:
    config = parse_config(BASE, {})
    assert config.server.listen == "127.0.0.1:4180"
    assert config.session.idle_timeout == 8 * 3600
    assert config.session.cookie.full_name == "__Host-authproxy_session"
    assert config.routes[0].auth == "required"
    assert config.provider is not None and config.provider.scopes[0] == "openid"


def test_legacy_protection_keys_default_to_todays_behaviour() -> None:
    route = parse_config(BASE, {}).routes[0]
    assert (route.csrf_protection, route.csrf_trusted_origins) == (False, [])
    assert (route.preserve_post, route.preserve_post_max_bytes) == (False, 64 * 1024)


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        pytest.param(
            "https://*.example.com",
            "'https://*.example.com': wildcards are not supported; list each origin",
            id="wildcard",
        ),
        pytest.param(
            "https://bücher.example",
            "write the host name as browsers send it, in its xn-- form (xn--bcher-kva.example)",
            id="internationalised-name",
        ),
        pytest.param("https://exa mple.com", "'https://exa mple.com' names no host a browser could send", id="space"),
    ],
)
def test_a_trusted_origin_no_browser_can_send_is_refused(origin: str, problem: str) -> None:
    # browsers send one exact origin, its host in ASCII: such an entry would never match, and the
    # requests it was meant to let through would be refused with nothing at check time to say why
    problems = problems_of(BASE + f"    csrf_trusted_origins: ['{origin}']\n")
    assert any(p.startswith("routes[0].csrf_trusted_origins:") and problem in p for p in problems), problems


def test_trusted_origins_accept_what_browsers_send() -> None:
    origins = ["https://portal.example.com/", "http://127.0.0.1:8080", "http://[::1]:8080", "https://a_b.example.com"]
    route = parse_config(BASE + f"    csrf_trusted_origins: {origins}\n", {}).routes[0]
    assert route.csrf_trusted_origins == origins


def test_example_config_is_valid() -> None:
    load_config(Path(__file__).parent.parent / "config" / "authproxy.example.yaml", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE + "  - {name: b, upstream: 'http://x', tiemout: 5s}\n",
            "routes[1].tiemout: unknown key",
            id="unknown-key-in-list",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {listne: x, "),
            "server.listne: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "127.0.0.1:8080"),
            "routes[0].upstream:",
            id="bad-url",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "ftp://h/"),
            "routes[0].upstream:",
            id="bad-url-scheme",
        ),
        pytest.param(BASE + "    timeout: 10 minutes\n", "routes[0].timeout:", id="bad-duration"),
        pytest.param(BASE.replace(SECRET, "short"), "session.secrets[0]:", id="secret-too-short"),
        pytest.param(
            BASE.replace("client_id: app", "client_id: '${SSO_CLIENT_ID}'"),
            "provider.client_id: environment variable SSO_CLIENT_ID is not set",
            id="missing-env",
        ),
        pytest.param(
            with_provider("allowed_algorithms: [none]"),
            "provider.allowed_algorithms: 'none' is never an allowed algorithm",
            id="alg-none",
        ),
        pytest.param(
            with_provider("allowed_algorithms: [RS256, None]"),
            "provider.allowed_algorithms: 'none' is never an allowed algorithm",
            id="alg-none-capitalised",
        ),
        pytest.param(
            with_provider("allowed_algorithms: [RS257]"),
            "provider.allowed_algorithms: unknown algorithm 'RS257'",
            id="alg-unknown",
        ),
        pytest.param(
            with_provider("allowed_algorithms: []"),
            "provider.allowed_algorithms: at least one algorithm is needed",
            id="alg-list-empty",
        ),
        pytest.param(
            with_provider("scopes: [profile, email]"),
            "provider.scopes: scopes must include openid",
            id="scopes-without-openid",
        ),
        pytest.param(
            BASE.replace("client_secret: x", "client_auth_method: private_key_jwt"),
            "provider: client_auth_method private_key_jwt needs private_key_file",
            id="private-key-jwt-without-key",
        ),
        pytest.param(
            BASE.replace("issuer: https://idp.example.com", "issuer: 'https://idp.example.com/?tenant=a'"),
            "provider.issuer: the issuer has no query or fragment",
            id="issuer-with-query",
        ),
        pytest.param(
            BASE.replace("public_url: https://app.example.com", "public_url: https://app.example.com/app"),
            "server.public_url: public_url is an origin such as https://app.example.com (no path)",
            id="public-url-with-path",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://127.0.0.1:99999"),
            "routes[0].upstream: 'http://127.0.0.1:99999' has an invalid port",
            id="upstream-port-out-of-range",
        ),
        pytest.param(
            BASE.replace("session: {", "session: {store: redis, redis: {url: 'http://127.0.0.1:6379/0'}, "),
            "session.redis.url: expected a redis://, rediss:// or unix:// URL",
            id="redis-url-of-another-scheme",
        ),
        pytest.param(
            with_session("cache: {enabled: true, max_age: 0s}"),
            "session.cache.max_age: must be positive",
            id="cache-max-age-0",
        ),
        pytest.param(
            with_session("idle_timeout: 0s"),
            "session: idle_timeout and absolute_timeout must be positive",
            id="idle-timeout-0",
        ),
        pytest.param(
            with_session("absolute_timeout: 0s"),
            "session: idle_timeout and absolute_timeout must be positive",
            id="absolute-timeout-0",
        ),
        pytest.param(
            BASE.replace("client_secret: x", "client_auth_method: client_secret_post"),
            "provider:",
            id="secret-method-without-secret",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {trusted_proxies: [nonsense], "),
            "server.trusted_proxies:",
            id="bad-cidr",
        ),
        pytest.param(
            BASE + "  - {name: app, upstream: 'http://127.0.0.1:9', match: {path_prefix: /b}}\n",
            "routes[1].name:",
            id="duplicate-name",
        ),
        pytest.param(
            BASE + "  - {name: x, upstream: 'http://127.0.0.1:9', match: {path_prefix: /oauth2/x}}\n",
            "routes[1].match.path_prefix: /oauth2 is reserved",
            id="reserved-prefix",
        ),
        pytest.param(
            BASE.replace("server: {public_url: https://app.example.com}", "server: {}"),
            "server.public_url: required",
            id="public-url-required",
        ),
        pytest.param(BASE + "    match: {host: 'bad host'}\n", "routes[0].match.host:", id="bad-host"),
        pytest.param(
            BASE + "    match: {path_prefix: api}\n",
            "routes[0].match.path_prefix:",
            id="relative-prefix",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/admin/*'}\n",
            "routes[0].match.path_prefix: '/admin/*': wildcards are not supported",
            id="prefix-wildcard",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/caf%C3%A9'}\n",
            "routes[0].match.path_prefix: '/caf%C3%A9': write the path decoded",
            id="prefix-percent-encoded",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/a?b'}\n",
            "routes[0].match.path_prefix: '/a?b' is not a path a request is served under",
            id="prefix-query",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/a//b'}\n",
            "routes[0].match.path_prefix: '/a//b' is not a path a request is served under",
            id="prefix-double-slash",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/a;v=1'}\n",
            "routes[0].match.path_prefix: '/a;v=1' is not a path a request is served under",
            id="prefix-parameter",
        ),
        pytest.param(
            BASE + "    match: {path_prefix: '/a/../b'}\n",
            "routes[0].match.path_prefix: '/a/../b': paths with . or .. segments are refused",
            id="prefix-dot-segment",
        ),
        pytest.param(
            with_session("idle_timeout: 8d"),
            "session: idle_timeout cannot exceed",
            id="idle-beyond-absolute",
        ),
        pytest.param(
            with_provider("ca_file: /nonexistent/ca.pem"),
            "provider.ca_file: /nonexistent/ca.pem is not a readable file",
            id="missing-ca-file",
        ),
        pytest.param(
            BASE + "    csrf_trusted_origins: [https://ok.example, 'https://x.example/path']\n",
            "routes[0].csrf_trusted_origins:",
            id="trusted-origin-with-path",
        ),
        pytest.param(
            BASE + "    auth: optional\n    preserve_post: true\n",
            "routes[0].preserve_post: only an auth: required route",
            id="preserve-post-needs-required",
        ),
        pytest.param(BASE + "    preserve_post_max_bytes: 0\n", "routes[0].preserve_post_max_bytes:", id="kept-size-0"),
        pytest.param(
            BASE + "    preserve_post_max_bytes: 2000000\n", "routes[0].preserve_post_max_bytes:", id="kept-size-huge"
        ),
        pytest.param(
            with_session("cookie: {same_site: none, secure: false}"),
            "session.cookie: same_site: none requires secure: true",
            id="samesite-none-needs-secure",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {auth_prefix: oauth2/, "), "server.auth_prefix:", id="auth-prefix"
        ),
        pytest.param(
            BASE.replace("server: {", "server: {listen: nope, "),
            "server.listen: 'nope' is not host:port",
            id="listen-not-host-port",
        ),
        pytest.param(
            BASE.replace(
                "session: {",
                "session: {store: redis, redis: {cluster: true, sentinel: {master_name: m, "
                "nodes: ['127.0.0.1:26379']}}, ",
            ),
            "session.redis: choose either sentinel or cluster",
            id="sentinel-and-cluster",
        ),
        pytest.param(
            BASE.replace(
                'session: {secrets: ["',
                'session: {store: redis, redis: {url: "redis://127.0.0.1:7000/0?timeout=1", cluster: true}, '
                'secrets: ["',
            ),
            "session.redis.cluster: redis-py's cluster client does not take the option 'timeout' of session.redis.url",
            id="redis-url-option-the-cluster-client-does-not-take",
        ),
        pytest.param(
            BASE.replace("session: {", "session: {store: redis, redis: {url: 'redis:///0'}, "),
            "session.redis.url: the Redis URL names no host",
            id="redis-url-without-host",
        ),
        pytest.param(
            BASE + "  - name: app2\n    upstream: 'http://127.0.0.1:8081'\n",
            "routes[1].match: same host and path_prefix as routes[0]",
            id="two-routes-one-match",
        ),
        pytest.param(
            BASE + "    auth: none\n    allow: {groups: [a]}\n",
            "routes[0].auth: a public route (auth: none) cannot have allow rules",
            id="public-route-with-allow",
        ),
        pytest.param(
            BASE.replace("client_secret: x", "client_auth_method: none, allowed_algorithms: [HS256]"),
            "provider: HS* algorithms are verified with client_secret",
            id="hs-without-client-secret",
        ),
        pytest.param(
            with_provider("extra_authorize_params: {state: x}"),
            "provider.extra_authorize_params: these parameters are set by authproxy itself: state",
            id="reserved-authorize-param",
        ),
        pytest.param(
            with_provider("extra_authorize_params: {max_age: 5m}"),
            "provider.extra_authorize_params: max_age must be a whole number of seconds",
            id="max-age-not-seconds",
        ),
        pytest.param(
            with_session('cookie: {name: "a b"}'),
            "session.cookie.name:",
            id="cookie-name-with-space",
        ),
        pytest.param(
            with_session('cookie: {name: "__Host-x"}'),
            "session.cookie.name:",
            id="cookie-name-with-its-own-prefix",
        ),
        pytest.param(
            BASE + "    identity_headers: {'X User': sub}\n",
            "routes[0].identity_headers: 'X User' is not a valid header name",
            id="identity-header-name-with-space",
        ),
        pytest.param(
            BASE + '    identity_headers: {"X-User\\r\\nX-Admin": sub}\n',
            "routes[0].identity_headers: 'X-User\\r\\nX-Admin' is not a valid header name",
            id="identity-header-name-with-line-break",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://127.0.0.1:8080/?a=1"),
            "routes[0].upstream: an upstream URL has no query or fragment",
            id="upstream-with-query",
        ),
        pytest.param(BASE + "    timeout: 0s\n", "routes[0].timeout: timeout must be positive", id="route-timeout-0"),
        pytest.param("routes: [", "line ", id="broken-yaml"),
        pytest.param(
            "- a\n- b\n",
            "(top level): expected a mapping of sections (server, provider, session, routes, ...)",
            id="not-a-mapping",
        ),
        pytest.param("a: &x [*x]\n", "(file): more than 100000 values once YAML aliases", id="alias-cycle"),
        pytest.param("a: " + "[" * 60 + "]" * 60 + "\n", "(file): nested deeper than 32 levels", id="nested-too-deep"),
        pytest.param(
            # "billion laughs": nine levels of ten aliases each, 10**9 values from 400 bytes
            "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "(file): more than 100000 values once YAML aliases",
            id="alias-expansion",
        ),
        pytest.param(
            BASE.replace("https://app.example.com", "https://user:pw@app.example.com", 1),
            "server.public_url: a URL here carries no user name or password",
            id="public-url-userinfo",
        ),
        pytest.param(
            BASE.replace("https://app.example.com", "'https://app.example.com?'", 1),
            "server.public_url: public_url is an origin",
            id="public-url-empty-query",
        ),
        pytest.param(
            BASE.replace("https://app.example.com", "https://app.example.com#", 1),
            "server.public_url: public_url is an origin",
            id="public-url-empty-fragment",
        ),
        pytest.param(
            BASE.replace("https://idp.example.com", "https://idpuser:idppw@idp.example.com", 1),
            "provider.issuer: a URL here carries no user name or password",
            id="issuer-userinfo",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://svc:pw@127.0.0.1:8080"),
            "routes[0].upstream: a URL here carries no user name or password",
            id="upstream-userinfo",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://127.0.0.1:8080/a b"),
            "routes[0].upstream: a URL holds no spaces or control characters",
            id="upstream-space",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://127.0.0.1:8080/a\\r\\nX: y"),
            "routes[0].upstream: a URL holds no spaces or control characters",
            id="upstream-crlf",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://127.0.0.1:8080#"),
            "routes[0].upstream: an upstream URL has no query or fragment",
            id="upstream-empty-fragment",
        ),
        pytest.param(
            BASE + "    identity_headers: {Transfer-Encoding: email}\n",
            "routes[0].identity_headers: 'Transfer-Encoding' is a header HTTP or the proxy itself sets",
            id="identity-header-transfer-encoding",
        ),
        pytest.param(
            BASE + "    identity_headers: {host: sub}\n",
            "routes[0].identity_headers: 'host' is a header HTTP or the proxy itself sets",
            id="identity-header-host",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {auth_prefix: //evil.example, ", 1),
            "server.auth_prefix: auth_prefix is a path such as /oauth2",
            id="auth-prefix-scheme-relative",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {auth_prefix: '/o?x', ", 1),
            "server.auth_prefix: auth_prefix is a path such as /oauth2",
            id="auth-prefix-query",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {auth_prefix: '/oauth 2', ", 1),
            "server.auth_prefix: auth_prefix is a path such as /oauth2",
            id="auth-prefix-space",
        ),
        pytest.param(
            BASE.replace('session: {secrets: ["', 'session: {cookie: {domain: "example.com; Max-Age=9"}, secrets: ["'),
            "session.cookie.domain: a domain name such as example.com",
            id="cookie-domain-attribute-injection",
        ),
        pytest.param(
            BASE.replace('session: {secrets: ["', 'session: {cookie: {domain: other.example}, secrets: ["'),
            "session.cookie.domain: other.example does not cover app.example.com",
            id="cookie-domain-not-covering-public-url",
        ),
        pytest.param(
            BASE.replace(
                'session: {secrets: ["',
                'session: {store: redis, redis: {url: "redis://127.0.0.1:6379/0?foo=1"}, secrets: ["',
            ),
            "session.redis.url: the Redis URL option 'foo' is not one redis-py's redis:// connections take",
            id="redis-url-unknown-option",
        ),
        pytest.param(
            BASE.replace(
                'session: {secrets: ["',
                'session: {store: redis, redis: {url: "redis://127.0.0.1:6379/0?ssl_cert_reqs=none"}, secrets: ["',
            ),
            "session.redis.url: the Redis URL option 'ssl_cert_reqs' is not one redis-py's redis:// connections take",
            id="redis-url-tls-option-without-tls",
        ),
        pytest.param(
            BASE.replace(
                'session: {secrets: ["',
                'session: {store: redis, redis: {url: "rediss://127.0.0.1:6380/0?ssl_validate_ocsp=no"}, secrets: ["',
            ),
            "session.redis.url: the Redis URL option 'ssl_validate_ocsp' is not one redis-py's rediss:// "
            "connections take",
            id="redis-url-option-of-synchronous-connections-only",
        ),
        pytest.param(
            BASE.replace(
                'session: {secrets: ["',
                'session: {store: redis, redis: {url: "redis://127.0.0.1:6379/abc"}, secrets: ["',
            ),
            "session.redis.url: the Redis URL's path is a database number",
            id="redis-url-database-not-a-number",
        ),
    ],
)
def test_each_problem_names_its_yaml_path(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(p.startswith(expected) or expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE + "session: {secrets: ['" + SECRET + "']}\n",
            "session: given twice (lines 4 and 8)",
            id="section",
        ),
        pytest.param(
            BASE + "    upstream: http://127.0.0.1:9090\n",
            "routes[0].upstream: given twice (lines 7 and 8)",
            id="route-key",
        ),
        pytest.param(
            BASE.replace("client_secret: x}", "client_secret: x, client_id: other}"),
            "provider.client_id: given twice (lines 3 and 3)",
            id="flow-mapping",
        ),
    ],
)
def test_a_key_given_twice_is_refused_rather_than_silently_replaced(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems_of(text)), problems_of(text)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "http://admin:hunter2@127.0.0.1:99999"),
            "routes[0].upstream: 'http://admin:[redacted]@127.0.0.1:99999'",
            id="upstream-bad-port",
        ),
        pytest.param(
            BASE.replace("http://127.0.0.1:8080", "ftp://admin:hunter2@127.0.0.1/"),
            "routes[0].upstream: 'ftp://admin:[redacted]@127.0.0.1/'",
            id="upstream-other-scheme",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {sso_origins: ['https://admin:hunter2@wiki.example.org/x'], "),
            "server.sso_origins: ",
            id="sso-origin-with-path",
        ),
    ],
)
def test_a_refused_url_is_quoted_without_its_password(text: str, path: str) -> None:
    # `authproxy check` and `run` print these problems to the terminal and the container log
    problems = problems_of(text)
    assert any(p.startswith(path) for p in problems), problems
    assert not [p for p in problems if "hunter2" in p], problems


def test_a_key_beside_a_merge_overrides_it_without_complaint() -> None:
    text = BASE.replace(
        "server: {public_url: https://app.example.com}",
        ("server:\n  <<: {public_url: https://old.example.com}\n  public_url: https://app.example.com"),
    )
    assert parse_config(text, {}).server.public_url == "https://app.example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE.replace("server: {", "server: {client_header_timeout: 0s, "),
            "server.client_header_timeout: must be longer than 0s",
            id="header-timeout-0",
        ),
        pytest.param(
            with_provider("timeout: 0s"),
            "provider.timeout: must be longer than 0s",
            id="provider-timeout-0",
        ),
        pytest.param(
            BASE.replace("session: {", "session: {store: redis, redis: {timeout: 0ms}, "),
            "session.redis.timeout: must be longer than 0s",
            id="redis-timeout-0",
        ),
        pytest.param(
            BASE.replace("session: {", "session: {store: redis, redis: {url: 'redis://:pw@127.0.0.1:99999/0'}, "),
            "session.redis.url: the Redis URL's port is not a number",
            id="redis-port-out-of-range",
        ),
        pytest.param(BASE + "identity_jwt: {ttl: 500ms}\n", "identity_jwt.ttl: must be at least 1s", id="jwt-ttl"),
        pytest.param(
            BASE.replace("server: {", "server: {listen: '127.0.0.1:4180', admin_listen: '127.0.0.1:4180', "),
            "server.admin_listen: 127.0.0.1:4180 is also where server.listen serves",
            id="admin-on-the-public-address",
        ),
        pytest.param(
            BASE.replace("server: {", "server: {listen: '0.0.0.0:4180', admin_listen: '127.0.0.1:4180', "),
            "server.admin_listen:",
            id="admin-under-a-wildcard-public-listener",
        ),
    ],
)
def test_a_setting_that_would_switch_a_protection_off_or_fail_at_start_is_refused(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_admin_listener_may_share_a_host_on_another_port() -> None:
    text = BASE.replace("server: {", "server: {listen: '0.0.0.0:4180', admin_listen: '0.0.0.0:9180', ")
    assert parse_config(text, {}).server.admin_listen == "0.0.0.0:9180"


def test_every_problem_is_reported_at_once() -> None:
    text = BASE.replace("server: {", "server: {bogus: 1, ").replace("http://127.0.0.1:8080", "nope")
    problems = problems_of(text)
    assert any(p.startswith("server.bogus") for p in problems)
    assert any(p.startswith("routes[0].upstream") for p in problems)


def test_memory_store_with_several_workers_is_refused_with_the_reason() -> None:
    problems = problems_of(BASE, workers=2)
    assert any(p.startswith("session.store:") and "--workers 2" in p for p in problems)
    parse_config(BASE.replace("session: {", "session: {store: redis, "), {}, workers=2)


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("pre-${A}-post", {"A": "mid"}, "pre-mid-post"),
        ("${A:-}", {}, ""),
        pytest.param("${A:-fallback}", {"A": ""}, "fallback", id="empty-takes-the-default-as-in-the-shell"),
        pytest.param("${A}", {"A": ""}, "", id="empty-without-default-is-empty"),
        pytest.param("pa$${ss}", {}, "pa${ss}", id="escaped-literal"),
    ],
)
def test_environment_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    config = parse_config(BASE.replace("client_id: app", f'client_id: "{value}x"'), env)
    assert config.provider is not None and config.provider.client_id == expected + "x"


def test_a_variable_is_replaced_anywhere_in_the_file_flow_collections_included() -> None:
    # SPEC section 2's own example: secrets: [${AUTHPROXY_SESSION_SECRET}], unquoted
    text = """
server: {public_url: https://app.example.com, rate_limit: {auth_per_minute: ${RATE:-30}}}
provider: {issuer: https://idp.example.com, client_id: app, client_secret: x}
session:
  secrets: [${AUTHPROXY_SESSION_SECRET}]   # a ${VARIABLE_IN_A_COMMENT} is not one
routes:
  - {name: app, match: {host: ${HOST}}, upstream: "http://127.0.0.1:8080"}
"""
    # the value is text, never YAML: "a, b: c" is one secret, not a list or a mapping
    secret = "a, b: c # " + "s" * 32
    config = parse_config(text, {"AUTHPROXY_SESSION_SECRET": secret, "HOST": "app.example.com"})
    assert config.session.secrets == [secret]
    assert config.routes[0].match.host == "app.example.com"
    assert config.server.rate_limit.auth_per_minute == 30


def test_a_variable_in_a_key_is_replaced_and_an_unset_one_named() -> None:
    text = BASE.replace("client_secret: x", "client_secret: x, extra_authorize_params: {${PARAM}: login}")
    config = parse_config(text, {"PARAM": "prompt"})
    assert config.provider is not None and config.provider.extra_authorize_params == {"prompt": "login"}
    problems = problems_of(text)
    assert any("environment variable PARAM is not set" in p for p in problems), problems


def test_a_quoted_reference_keeps_yamls_escapes_in_its_default() -> None:
    text = BASE.replace("client_id: app", 'client_id: "${CLIENT:-auth\\\\proxy\\tapp}"')
    config = parse_config(text, {})
    assert config.provider is not None and config.provider.client_id == "auth\\proxy\tapp"


def test_no_problem_names_a_placeholder() -> None:
    # a reference in a flow mapping's key: the file is parsed with placeholders, reported without
    text = BASE.replace("client_secret: x", "client_secret: x, extra_authorize_params: {${PARAM}: login}")
    problems = problems_of(text)
    assert problems == [
        "provider.extra_authorize_params.${PARAM}: environment variable PARAM is not set (and has no ${PARAM:-default})"
    ]
    twice = "session: {${A:-x}: 1, ${B:-x}: 2}\n" + BASE
    assert all("__authproxy" not in p for p in problems_of(twice))


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?client_name=authproxy",
        "redis://127.0.0.1:6379/0?socket_timeout=2&health_check_interval=10",
        "rediss://127.0.0.1:6380/0?ssl_cert_reqs=required",
        "rediss://127.0.0.1:6380/0?socket_keepalive=true",
        "unix:///run/redis.sock?db=2",
        "redis://127.0.0.1:6379/0?max_connections=64&timeout=1",
    ],
)
def test_redis_url_options_redis_py_takes_are_accepted(url: str) -> None:
    text = BASE.replace('session: {secrets: ["', f'session: {{store: redis, redis: {{url: "{url}"}}, secrets: ["')
    assert parse_config(text, {}).session.redis.url == url


def test_redis_url_options_the_cluster_client_takes_are_accepted_with_cluster() -> None:
    url = "rediss://127.0.0.1:7000/0?socket_timeout=2&max_connections=64&ssl_ca_certs=/etc/redis/ca.pem"
    text = BASE.replace(
        'session: {secrets: ["', f'session: {{store: redis, redis: {{url: "{url}", cluster: true}}, secrets: ["'
    )
    assert parse_config(text, {}).session.redis.url == url


def test_a_yaml_error_is_placed_where_it_is_in_the_file_as_written() -> None:
    text = "server: {public_url: ${URL}, listen: [}\n"
    assert problems_of(text, {"URL": "https://app.example.com"})[0].startswith("line 1, column 39: not valid YAML")


def test_a_file_that_is_not_utf_8_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "authproxy.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [f"(file): {path} is not UTF-8 text (byte {len(BASE.encode()) + 5})"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("${A-legacy-default}", id="dash-without-colon"),
        pytest.param("${A:?must be set}", id="error-form"),
        pytest.param("${A:-${B}}", id="nested"),
        pytest.param("${BAD-NAME}", id="not-a-name"),
        pytest.param("s3cr3t${unclosed", id="unclosed"),
    ],
)
def test_a_reference_this_file_does_not_understand_is_an_error_not_a_literal_value(value: str) -> None:
    # most often a secret meant to be filled in: kept as text it would become the secret
    problems = problems_of(BASE.replace(f'secrets: ["{SECRET}"]', f'secrets: ["{value}"]'))
    assert problems == ["session.secrets[0]: a ${ that is not ${VAR} or ${VAR:-default} (write $${ for a literal ${)"]
    assert all(value not in p for p in problems)  # the value itself may be a secret


def test_secret_files_replace_their_keys_without_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("from-file\n")
    # blank lines are skipped; a line starting with # is a secret like any other
    (tmp_path / "secrets").write_text(f"{'n' * 40}\n\n#{'o' * 40}\n")
    text = BASE.replace("client_secret: x", f"client_secret_file: {tmp_path / 'client'}").replace(
        f'secrets: ["{SECRET}"]', f"secrets_file: {tmp_path / 'secrets'}"
    )
    config = parse_config(text, {})
    assert config.provider is not None and config.provider.client_secret == "from-file"
    assert config.session.secrets == ["n" * 40, "#" + "o" * 40]


def test_secret_file_problems_name_the_path(tmp_path: Path) -> None:
    missing = BASE.replace("client_secret: x", f"client_secret_file: {tmp_path / 'absent'}")
    assert any(p.startswith("provider.client_secret_file: cannot read") for p in problems_of(missing))
    both = BASE.replace("client_secret: x", f"client_secret: x, client_secret_file: {tmp_path}")
    assert any("either client_secret or client_secret_file" in p for p in problems_of(both))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("8h", 28800),
        ("7d", 604800),
        ("500ms", 0.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_numbers_from_python_code_are_seconds() -> None:
    assert parse_duration(30) == 30 and parse_duration(1.5) == 1.5


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("ten", "is not a duration", id="word"),
        pytest.param("5 minutes", "is not a duration", id="unit-in-words"),
        pytest.param("-5s", "is not a duration", id="negative-text"),
        pytest.param("", "is not a duration", id="empty"),
        pytest.param(True, "expected a duration such as", id="boolean"),
        pytest.param("5", "has no unit", id="bare-number-text"),
        pytest.param("36501d", "cannot be longer than 36500d", id="beyond-a-century"),
        pytest.param("9" * 400 + "s", "must be a finite number of seconds", id="infinite-text"),
        pytest.param(float("nan"), "must be a finite number of seconds", id="nan"),
        pytest.param(10**400, "too large to be useful", id="integer-beyond-a-float"),
        pytest.param(-5, "cannot be negative", id="negative-number"),
    ],
)
def test_bad_durations(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_duration(value)


def test_a_duration_beyond_a_century_is_refused_by_its_path() -> None:
    # a session store cannot expire a key that late (Redis refused each write: every sign-in a 503)
    assert parse_duration("36500d") == 36500 * 86400
    text = with_session("absolute_timeout: 999999999999999d")
    assert "session.absolute_timeout: a duration cannot be longer than 36500d (100 years)" in problems_of(text)


@pytest.mark.parametrize("value", ["90", "90.0", "'90'"], ids=["yaml-integer", "yaml-float", "yaml-string"])
def test_a_bare_number_for_a_duration_is_refused_with_the_expected_form(value: str) -> None:
    text = with_session(f"idle_timeout: {value}")
    assert (
        f"session.idle_timeout: {value.strip(chr(39))} has no unit: write the duration with one, such as "
        f"{value.strip(chr(39))}s, 5m, 8h or 7d" in problems_of(text)
    )


@pytest.mark.parametrize(
    ("typo", "where", "suggestion"),
    [
        pytest.param("server: {listne: '127.0.0.1:1'}\n", "server.listne", "listen", id="server"),
        pytest.param("session: {idle_timout: 8h}\n", "session.idle_timout", "idle_timeout", id="session"),
        pytest.param(
            "provider: {clinet_secret_file: /x}\n", "provider.clinet_secret_file", "client_secret_file", id="file"
        ),
        pytest.param(
            "routes: [{name: a, upstream: 'http://127.0.0.1:1', alow: {}}]\n", "routes[0].alow", "allow", id="route"
        ),
    ],
)
def test_an_unknown_key_suggests_the_closest_valid_one(typo: str, where: str, suggestion: str) -> None:
    problems = problems_of(typo)
    assert any(p.startswith(f"{where}: unknown key (did you mean {suggestion!r}?)") for p in problems), problems


def test_an_unknown_key_far_from_any_valid_one_gets_no_suggestion() -> None:
    problems = problems_of("server: {zzzzqqq: 1}\n")
    assert any(p.startswith("server.zzzzqqq: unknown key;") for p in problems), problems


def test_bare_numbers_are_found_in_nested_sections_and_lists() -> None:
    text = BASE + "    timeout: 30\n" + "  - name: b\n    upstream: http://127.0.0.1:1\n    timeout: 5\n"
    text = text.replace("session: {", "session: {cache: {max_age: 10}, ")
    problems = problems_of(text)
    for where in ("routes[0].timeout", "routes[1].timeout", "session.cache.max_age"):
        assert any(p.startswith(f"{where}: ") and "has no unit" in p for p in problems), (where, problems)


def test_common_type_errors_are_in_plain_words() -> None:
    problems = problems_of("routes: [{upstream: 'http://127.0.0.1:1', websocket: maybe}]\n")
    assert "routes[0].name: required, but not given" in problems
    assert "routes[0].websocket: expected true or false" in problems


def test_public_routes_need_no_provider_or_secret() -> None:
    config = parse_config("routes: [{name: web, upstream: 'http://127.0.0.1:1', auth: none}]", {})
    assert config.provider is None


def test_protected_route_without_provider_is_refused() -> None:
    problems = problems_of("routes: [{name: web, upstream: 'http://127.0.0.1:1'}]")
    assert any(p.startswith("routes[0].auth:") for p in problems)


def test_forward_auth_only_deployment_needs_no_routes() -> None:
    text = BASE[: BASE.index("routes:")]
    assert parse_config(text, {}).routes == []


def test_a_process_may_take_the_drain_and_then_a_refresh_let_finish_to_stop() -> None:
    # the --workers supervisor kills a worker only past this: a refresh still at the provider
    # when the drain ends must not be cut, or the refresh token the provider rotated is lost
    config = parse_config(with_provider("timeout: 7s").replace("public_url:", "shutdown_timeout: 20s, public_url:"), {})
    assert stop_bound(config) == 20 + 7 + 5
    without_provider = parse_config(
        "server: {shutdown_timeout: 20s}\nroutes: [{name: app, upstream: 'http://127.0.0.1:8080', auth: none}]\n", {}
    )
    assert stop_bound(without_provider) == 20
