"""``server.sso_origins`` (docs/multi-domain.md): origins only, each once, and every route reachable."""

from __future__ import annotations

import pytest

from authproxy.config import parse_config
from authproxy.errors import ConfigError

SECRET = "s" * 32


def config_text(server: str, routes: str = "", cookie: str = "") -> str:
    return f"""
server: {{public_url: https://app.example.com, {server}}}
provider: {{issuer: https://idp.example.com, client_id: app, client_secret: x}}
session: {{secrets: ["{SECRET}"]{cookie}}}
routes:
  - {{name: app, match: {{host: app.example.com}}, upstream: "http://127.0.0.1:8080"}}
  - {{name: wiki, match: {{host: wiki.example.org}}, upstream: "http://127.0.0.1:8081"}}
{routes}"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    return info.value.problems


def test_sso_origins_are_normalised() -> None:
    config = parse_config(config_text("sso_origins: ['HTTPS://Wiki.Example.org:443/']"), {})
    assert config.server.sso_origins == ["https://wiki.example.org"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(config_text("sso_origins: [https://wiki.example.org/app]"), "server.sso_origins: ",
                     id="a-path-is-not-an-origin"),
        pytest.param(config_text("sso_origins: [wiki.example.org]"), "is not an origin", id="no-scheme"),
        pytest.param(config_text("sso_origins: [https://wiki.example.org, 'http://wiki.example.org:8080']"),
                     "wiki.example.org is listed twice", id="one-host-twice"),
        pytest.param(config_text("sso_origins: ['https://wiki.bücher.example']"),
                     "write the host name as browsers send it, in its xn-- form (wiki.xn--bcher-kva.example)",
                     id="an-internationalised-name-browsers-never-send"),
        pytest.param(config_text("sso_origins: [https://wiki.example.org, https://app.example.com]"),
                     "server.sso_origins[1]: app.example.com is the host of server.public_url",
                     id="the-authenticating-origin-again"),
        pytest.param(config_text("sso_origins: [https://wiki.example.org, https://reports.example.com]",
                                 cookie=", cookie: {domain: example.com}"),
                     "server.sso_origins[1]: reports.example.com already shares the session cookie",
                     id="inside-the-cookie-domain"),
        pytest.param(config_text("sso_origins: [https://wiki.example.org]",
                                 "  - {name: t, match: {host: tickets.example.net}, upstream: 'http://127.0.0.1:1'}"),
                     "routes[2].match.host: tickets.example.net is neither the host of server.public_url nor in "
                     "server.sso_origins", id="route-on-an-unlisted-host"),
    ],
)  # fmt: skip
def test_sso_origin_problems_name_their_path(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in problem for problem in problems), problems


def test_public_routes_and_wildcards_on_other_hosts_are_allowed() -> None:
    routes = (
        "  - {name: pub, match: {host: cdn.example.net}, upstream: 'http://127.0.0.1:1', auth: none}\n"
        "  - {name: any, match: {host: '*.example.io'}, upstream: 'http://127.0.0.1:2'}\n"
    )
    parse_config(config_text("sso_origins: [https://wiki.example.org]", routes), {})


def test_sso_origins_need_a_provider() -> None:
    text = """
server: {public_url: https://app.example.com, sso_origins: [https://wiki.example.org]}
routes: [{name: app, upstream: "http://127.0.0.1:8080", auth: none}]
"""
    assert any(p.startswith("server.sso_origins:") for p in problems_of(text))
