"""The few responses people see from authproxy itself: error pages, sign-in problems, redirects.

Each is a short HTML page (everything escaped; a strict ``Content-Security-Policy``, no external
assets) or JSON ``{"error": code, "message": ..., "request_id": ...}``, chosen by ``Accept``
(RFC 9110 section 12.5.1): HTML only for clients that list ``text/html`` and do not prefer JSON;
API clients sending ``*/*`` or nothing get JSON. Users see a short message and the request id;
the detail goes to the logs, never a traceback.

``STATUS_BY_ERROR`` is the one table from the exception tree of :mod:`authproxy.errors` to HTTP
statuses (RFC 9110 section 15).
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from string import Template
from typing import Any, Final

from aiohttp import web

from authproxy import headers
from authproxy.errors import (
    AuthproxyError,
    ConfigError,
    FlowError,
    ListenError,
    ProviderError,
    ProviderUnavailable,
    SessionEnded,
    StoreError,
    StoreUnavailable,
    TokenEndpointError,
    TokenInvalid,
    UnknownKeyId,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# The request id of the request being answered; set once by the app's outermost middleware.
REQUEST_ID: Final = web.RequestKey("request_id", str)
# the signed-in user (sub) of a request, for the access log
USER: Final = web.RequestKey("user", str)
# the client's address behind trusted proxies (see client_ip_of)
CLIENT_IP: Final = web.RequestKey("client_ip", str)
# set once a WebSocket's 101 has gone out: aiohttp may cancel the handler as the connection ends,
# and the access log then shows the 101 the client got rather than a client abort (499)
UPGRADED: Final = web.RequestKey("upgraded", bool)
# set when the proxy cut off a client that stopped taking its answer: logged as a client abort (499)
CUT_OFF: Final = web.RequestKey("cut_off", bool)

# the route label of the endpoints under auth_prefix, in the access log and the metrics
AUTH_ROUTE_LABEL: Final = "_auth"
RETRY_AFTER_SECONDS: Final = 5
_TEMPLATE: Final = Template(resources.files("authproxy").joinpath("pages/error.html").read_text("utf-8"))
_SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_CODE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


@dataclass(frozen=True)
class ErrorText:
    """What a user is told about one kind of error."""

    status: int
    code: str
    title: str
    message: str


# Ordered from specific to general only for readability; lookup walks each error's MRO.
ERROR_TEXT: Final[Mapping[type[AuthproxyError], ErrorText]] = {
    UpstreamTimeout: ErrorText(
        504, "upstream_timeout", "Gateway timeout", "The application did not answer in time. Try again in a moment."
    ),
    UpstreamUnavailable: ErrorText(
        502, "upstream_unavailable", "Bad gateway", "The application could not be reached. Try again in a moment."
    ),
    UpstreamError: ErrorText(502, "upstream_error", "Bad gateway", "The application failed to answer."),
    ProviderUnavailable: ErrorText(
        503,
        "provider_unavailable",
        "Sign-in is unavailable",
        "The identity provider could not be reached. Try again in a moment.",
    ),
    TokenEndpointError: ErrorText(
        401, "session_expired", "Sign-in expired", "Your sign-in is no longer valid. Sign in again."
    ),
    ProviderError: ErrorText(
        503, "provider_error", "Sign-in is unavailable", "The identity provider failed. Try again in a moment."
    ),
    UnknownKeyId: ErrorText(401, "invalid_token", "Not signed in", "The credentials presented are not valid."),
    TokenInvalid: ErrorText(401, "invalid_token", "Not signed in", "The credentials presented are not valid."),
    FlowError: ErrorText(
        400, "invalid_flow", "This sign-in link is no longer valid", "Start the sign-in again from the application."
    ),
    SessionEnded: ErrorText(401, "session_ended", "Signed out", "Your session has ended. Sign in again."),
    StoreUnavailable: ErrorText(
        503, "session_store_unavailable", "Service unavailable", "Sessions are unavailable. Try again in a moment."
    ),
    StoreError: ErrorText(
        503, "session_store_error", "Service unavailable", "Sessions are unavailable. Try again in a moment."
    ),
    ConfigError: ErrorText(500, "internal_error", "Internal error", "Something went wrong in authproxy."),
    ListenError: ErrorText(500, "internal_error", "Internal error", "Something went wrong in authproxy."),
    AuthproxyError: ErrorText(500, "internal_error", "Internal error", "Something went wrong in authproxy."),
}

STATUS_BY_ERROR: Final[Mapping[type[AuthproxyError], int]] = {kind: text.status for kind, text in ERROR_TEXT.items()}


def error_text(error: AuthproxyError) -> ErrorText:
    """The user-facing text of ``error``: that of its nearest class in ``ERROR_TEXT``."""
    for kind in type(error).__mro__:
        text = ERROR_TEXT.get(kind)
        if text is not None:
            return text
    return ERROR_TEXT[AuthproxyError]


def status_for(error: AuthproxyError) -> int:
    """The HTTP status of ``error`` (``STATUS_BY_ERROR`` of its nearest class)."""
    return error_text(error).status


def parse_accept(accept: str | None) -> dict[str, float]:
    """Media range -> quality (RFC 9110 section 12.5.1); the highest q when a range repeats."""
    ranges: dict[str, float] = {}
    if not accept:
        return ranges
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value.strip())))
                except ValueError:
                    quality = 0.0
        ranges[media] = max(quality, ranges.get(media, 0.0))
    return ranges


def _html_quality(ranges: Mapping[str, float]) -> float:
    # the most specific range decides (RFC 9110 section 12.5.1); */* alone does not count as
    # asking for HTML: that is what API clients and curl send
    if "text/html" in ranges:
        return ranges["text/html"]
    return ranges.get("text/*", 0.0)


def _json_quality(ranges: Mapping[str, float]) -> float:
    json_like = [q for media, q in ranges.items() if media == "application/json" or media.endswith("+json")]
    if json_like:
        return max(json_like)
    return ranges.get("application/*", 0.0)


# a browser sends the same Accept value on every navigation: each distinct value is judged once,
# up to this length (a browser's is 100-200 characters; longer ones are judged every time, so
# that odd clients cannot fill the cache with kilobytes each)
ACCEPT_CACHED_MAX: Final = 512


def _judged_once(judge: Callable[[str | None], bool]) -> Callable[[str | None], bool]:
    cached = functools.lru_cache(maxsize=256)(judge)

    @functools.wraps(judge)
    def judged(accept: str | None) -> bool:
        return cached(accept) if accept is None or len(accept) <= ACCEPT_CACHED_MAX else judge(accept)

    judged.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return judged


@_judged_once
def prefers_html(accept: str | None) -> bool:
    """True when an ``Accept`` value lists HTML and does not rank JSON above it."""
    ranges = parse_accept(accept)
    html_q = _html_quality(ranges)
    return html_q > 0 and html_q >= _json_quality(ranges)


@_judged_once
def _lists_html(accept: str | None) -> bool:
    return parse_accept(accept).get("text/html", 0.0) > 0


def wants_html(request: web.BaseRequest) -> bool:
    """A browser navigation: GET or HEAD whose ``Accept`` includes ``text/html`` (SPEC section 4)."""
    return request.method in ("GET", "HEAD") and _lists_html(request.headers.get("Accept"))


# The name the gate uses; the same rule.
is_browser_navigation = wants_html


def client_ip_of(request: web.BaseRequest) -> str | None:
    """The client's address (``headers.client_address``) as the app's middleware found it, else
    the peer's: what rate limits count and logs name."""
    return request.get(CLIENT_IP) or request.remote


def request_id_of(request: web.BaseRequest) -> str:
    """The id the app's middleware gave this request; a fresh one when there is none."""
    value = request.get(REQUEST_ID)
    if value is None:
        value = headers.request_id(None, trusted=False)
        request[REQUEST_ID] = value
    return value


def _safe_href(url: str) -> str | None:
    # only local paths and http(s) URLs become links: never javascript:, data: and the like
    if url.startswith("/") and not url.startswith(("//", "/\\")):
        return url
    if url.lower().startswith(("https://", "http://")):
        return url
    return None


def render_html(
    status: int,
    title: str,
    message: str,
    *,
    request_id: str,
    link: tuple[str, str] | None = None,
    hints: Sequence[str] = (),
    links: Sequence[tuple[str, str]] = (),
    kicker: str | None = None,
) -> str:
    """The HTML error page, every value escaped; ``link`` first, then ``links``, as buttons."""
    esc = html.escape
    hint_html = "".join(f"<li>{esc(h)}</li>" for h in hints)
    buttons = []
    for label, url in ([link] if link is not None else []) + list(links):
        href = _safe_href(url)
        if href is not None:
            buttons.append(f'<a class="action" href="{esc(href, quote=True)}">{esc(label)}</a>')
    action = f'<p class="actions">{" ".join(buttons)}</p>\n' if buttons else ""
    return _TEMPLATE.substitute(
        kicker=esc(kicker or f"Error {status}"),
        head_title=esc(title if kicker else f"{status} {title}"),
        title=esc(title),
        message=esc(message),
        hints=f"<ul>{hint_html}</ul>\n" if hint_html else "",
        action=action,
        request_id=esc(request_id),
    )


def error_response(
    request: web.BaseRequest,
    status: int,
    title: str,
    message: str,
    *,
    request_id: str,
    extra: Mapping[str, Any] | None = None,
    code: str | None = None,
    link: tuple[str, str] | None = None,
    hints: Sequence[str] = (),
    links: Sequence[tuple[str, str]] = (),
    kicker: str | None = None,
) -> web.Response:
    """A short error answer: HTML for browsers, JSON for everything else (see module docstring).

    ``extra`` adds keys to the JSON body; ``link`` and ``links`` (label, URL) and ``hints`` show on
    the HTML page.
    """
    error_code = code or _CODE_BY_STATUS.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    response_headers = {**_SECURITY_HEADERS, "X-Request-Id": request_id}
    if prefers_html(request.headers.get("Accept")):
        body = render_html(
            status, title, message, request_id=request_id, link=link, hints=hints, links=links, kicker=kicker
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=response_headers)
    payload: dict[str, Any] = {"error": error_code, "message": message, "request_id": request_id}
    for key, value in (extra or {}).items():
        payload.setdefault(key, value)
    return web.Response(
        status=status, text=json.dumps(payload), content_type="application/json", headers=response_headers
    )


def method_not_allowed(request: web.BaseRequest, allowed: Sequence[str], *, request_id: str) -> web.Response:
    """The 405 of an endpoint that exists for other methods (RFC 9110 section 15.5.6), with ``Allow``."""
    response = error_response(
        request, 405, "Method not allowed", "This address does not answer this method.", request_id=request_id
    )
    response.headers["Allow"] = ",".join(allowed)
    return response


def error_for_exception(request: web.BaseRequest, error: AuthproxyError, *, request_id: str) -> web.Response:
    """The answer for an error raised on purpose: its status and a fixed, safe message (never ``str(error)``)."""
    text = error_text(error)
    response = error_response(request, text.status, text.title, text.message, request_id=request_id, code=text.code)
    if text.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def login_error_page(
    request: web.BaseRequest, status: int, title: str, message: str, *, retry_url: str
) -> web.Response:
    """A sign-in that failed (SPEC section 3, /callback): the reason and a link to try again, no redirect."""
    return error_response(
        request,
        status,
        title,
        message,
        request_id=request_id_of(request),
        extra={"retry_url": retry_url},
        link=("Try again", retry_url),
    )


def login_loop_page(request: web.BaseRequest, cookie_name: str) -> web.Response:
    """The login loop guard's 400 (SPEC section 5): the cookie is not coming back; say why it may be."""
    return error_response(
        request,
        400,
        "Sign-in keeps starting over",
        f"This browser started several sign-ins without finishing one: the sign-in cookie "
        f"({cookie_name}) is not being stored or sent back. If you run this site, check:",
        request_id=request_id_of(request),
        code="login_loop",
        hints=(
            "session.cookie.secure: browsers drop Secure cookies on plain http; set it to false only "
            "for http development.",
            "server.trusted_proxies: behind a TLS-terminating load balancer, list it so its "
            "X-Forwarded-Proto is believed.",
            "session.cookie.same_site: strict keeps the cookie off the provider's redirect back; use lax.",
            "server.public_url and session.cookie.domain must match the address in the browser.",
        ),
    )


_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f\x7f]")


def redirect(location: str, status: int = 302) -> web.Response:
    """A redirect with no body and ``Cache-Control: no-store``; refuses control characters in ``location``."""
    if _CONTROL_CHARACTER.search(location):
        raise ValueError("control character in a redirect location")
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})
