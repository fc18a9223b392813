"""Set-Cookie fields (authproxy.sessions.cookie_field) are aiohttp's, byte for byte."""

from __future__ import annotations

import string
from http.cookies import CookieError
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from authproxy.sessions.cookie_field import set_cookie_field

SEALED = "ap1.Zm9vYmFyYmF6cXV4LWFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1Njc4OQ_-"
EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


def aiohttp_field(name: str, value: str, **attributes: Any) -> str:
    """The Set-Cookie field aiohttp writes for ``set_cookie(name, value, **attributes)``."""
    response = web.Response()
    response.set_cookie(name, value, **attributes)
    return response.cookies[name].output(header="")[1:]


@pytest.mark.parametrize(
    ("name", "value", "attributes"),
    [
        pytest.param(
            "authproxy_session",
            SEALED,
            {"path": "/", "httponly": True, "secure": True, "samesite": "Lax", "max_age": 86400},
            id="session-cookie",
        ),
        pytest.param(
            "authproxy_session_flow_abc",
            SEALED,
            {"path": "/", "httponly": True, "secure": False, "samesite": "Lax", "max_age": 600},
            id="flow-cookie-not-secure",
        ),
        pytest.param(
            "authproxy_session",
            SEALED,
            {
                "path": "/",
                "httponly": True,
                "secure": True,
                "samesite": "Strict",
                "domain": "example.com",
                "max_age": 1,
            },
            id="with-domain",
        ),
        pytest.param(
            "authproxy_session",
            "",
            {"expires": EXPIRED, "path": "/", "httponly": True, "secure": True, "samesite": "Lax", "max_age": 0},
            id="cleared",
        ),
        pytest.param("a", "needs quoting; here", {"path": "/", "max_age": 5}, id="value-quoted-by-http-cookies"),
        pytest.param("a", 'with "quotes" and ü', {"path": "/"}, id="value-escaped-by-http-cookies"),
        pytest.param("a", "v", {"path": "", "domain": "", "samesite": ""}, id="empty-attributes-left-out"),
    ],
)
def test_cookies_are_written_as_aiohttp_writes_them(name: str, value: str, attributes: dict[str, Any]) -> None:
    assert set_cookie_field(name, value, **attributes) == aiohttp_field(name, value, **attributes)


@pytest.mark.parametrize("name", ["path", "Max-Age", "bad name", "semi;colon", ""])
def test_a_name_aiohttp_refuses_is_refused(name: str) -> None:
    with pytest.raises(CookieError):
        aiohttp_field(name, "v")
    with pytest.raises(CookieError):
        set_cookie_field(name, "v")


NAME_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:"


@given(
    name=st.text(alphabet=NAME_CHARS, min_size=1, max_size=20).filter(
        lambda name: (
            name.lower()
            not in {"expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version", "samesite"}
        )
    ),
    value=st.text(max_size=40) | st.text(alphabet=NAME_CHARS + "=/", max_size=60),
    path=st.sampled_from(["/", "/app", ""]),
    domain=st.none() | st.sampled_from(["example.com", ""]),
    max_age=st.none() | st.integers(min_value=0, max_value=10**9),
    expires=st.none() | st.just(EXPIRED),
    secure=st.booleans(),
    httponly=st.booleans(),
    samesite=st.none() | st.sampled_from(["Lax", "Strict", "None"]),
)
def test_any_cookie_is_written_as_aiohttp_writes_it(name: str, value: str, **attributes: Any) -> None:
    assert set_cookie_field(name, value, **attributes) == aiohttp_field(name, value, **attributes)
