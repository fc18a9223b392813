"""The pages authproxy answers with itself (authproxy.pages): whatever the page and whoever asks,
it cannot be framed by another site nor sniffed into another content type.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from authproxy import pages
from authproxy.errors import UpstreamTimeout

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
API = "application/json"


def csp_directives(response: web.Response) -> dict[str, str]:
    csp = response.headers["Content-Security-Policy"]
    return {name: value for name, _, value in (d.strip().partition(" ") for d in csp.split(";"))}


def error_pages(accept: str) -> list[web.Response]:
    """One answer of each kind authproxy builds, for a client sending ``accept``."""

    def request() -> web.Request:
        return make_mocked_request("GET", "/oauth2/callback", headers={"Accept": accept})

    return [
        pages.error_response(request(), 403, "Forbidden", "Not for you.", request_id="r1"),
        pages.error_for_exception(request(), UpstreamTimeout("slow"), request_id="r2"),
        pages.login_error_page(request(), 400, "Sign-in failed", "Try again.", retry_url="/oauth2/start?rd=/"),
        pages.login_loop_page(request(), "authproxy_session"),
    ]


@pytest.mark.parametrize("accept", [BROWSER, API], ids=["html", "json"])
def test_every_error_page_forbids_framing_and_content_sniffing(accept: str) -> None:
    for response in error_pages(accept):
        assert csp_directives(response)["frame-ancestors"] == "'none'", response
        assert response.headers["X-Content-Type-Options"] == "nosniff", response


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("/app\r\nSet-Cookie: session=forged", id="line-break"),
        pytest.param("/app\x00", id="nul"),
        pytest.param("/app\x1b[2J", id="escape"),
        pytest.param("/app\x7f", id="delete"),
    ],
)
def test_a_redirect_never_carries_a_control_character(location: str) -> None:
    with pytest.raises(ValueError, match="control character in a redirect location"):
        pages.redirect(location)
