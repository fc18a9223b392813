"""Keeping a browser's form POST across a re-login (``routes[].preserve_post``), like mod_auth_openidc's
``OIDCPreservePost``.

When a session has ended (or never existed) and a browser posts a form to an ``auth: required``
route with ``preserve_post: true``:

1. The cross-origin verdict of :mod:`authproxy.csrf` is taken first, whether or not the route
   enables ``csrf_protection``: a cross-site POST is never kept, so it can never come back as a
   same-origin one after the victim signs in.
2. Only ``application/x-www-form-urlencoded`` bodies of at most ``preserve_post_max_bytes``
   (default 64 KiB) whose fields decode as UTF-8 are kept; anything else gets a 413 or 415 page
   saying the form could not be kept, with a link to sign in.
3. The form (host, path and query, fields) is sealed like a login flow record (AES-GCM under a
   key only this browser's cookie carries) and stored for ``KEEP_TTL``, the lifetime of a login
   flow; the browser gets a host-only HttpOnly cookie naming it and a 303 to ``/oauth2/start``,
   whose ``rd`` is ``/oauth2/resubmit?p=<tag>``.
4. After the login, ``GET /oauth2/resubmit`` (on the route host, where the cookie lives) takes the
   record once (delete on read), checks it was kept for this host, and answers with a page whose
   form posts the fields back to the original URL. When the browser still held a session cookie
   of ours when the form was kept (its session had ended), the page auto-submits through one
   inline script allowed by a per-response CSP nonce. When it held none (no one was signed in
   there: after a sign-out, the next person to sign in may not be the sender), the page runs no
   script and asks the signed-in user, by name, to send it only if it is theirs. Everything in it
   is HTML-escaped (mod_auth_openidc's CVE-2021-32792 was an XSS in exactly this page),
   ``form-action 'self'`` keeps the form on this origin, and a button submits it.

The resubmitted POST is an ordinary same-origin request: the gate, the allow rules and the
cross-origin guard judge it like any other.

The pure parts (record, parsing, page) take values and return values; :class:`PostKeeper` does
the I/O.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote

from aiohttp import web

from authproxy import pages
from authproxy.account_pages import start_url
from authproxy.config import RouteConfig
from authproxy.cookie_header import request_cookie
from authproxy.cross_origin import verdict_for
from authproxy.logs import log_event
from authproxy.oidc.flow import FLOW_TTL
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.record import open_record, seal_record
from authproxy.sessions.ticket import new_ticket, store_key_for

KEEP_KEY_PREFIX: Final = "post:"
# as long as a login flow lives: the form is for that login only
KEEP_TTL: Final = FLOW_TTL
FORM_TYPE: Final = "application/x-www-form-urlencoded"
MAX_FIELDS: Final = 1000
CHUNK: Final = 16 * 1024
_TAG_BYTES: Final = 8


@dataclass(frozen=True)
class KeptForm:
    """A form POST waiting for its user to sign in again."""

    host: str
    target: str  # path and query, as the browser sent them
    fields: tuple[tuple[str, str], ...]
    kept_at: float
    # the browser still held a session cookie of ours, its session ended (idle, absolute, logout
    # elsewhere): the one case in which whoever signs in next is taken to be the form's sender
    from_ended_session: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "host": self.host,
                "target": self.target,
                "fields": self.fields,
                "kept_at": self.kept_at,
                "from_ended_session": self.from_ended_session,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeptForm:
        value = json.loads(data)
        fields = tuple((str(name), str(field)) for name, field in value["fields"])
        ended = value.get("from_ended_session") is True
        return cls(str(value["host"]), str(value["target"]), fields, float(value["kept_at"]), ended)


def has_too_many_fields(body: bytes) -> bool:
    """More than ``MAX_FIELDS`` fields (``parse_qsl`` counts them by their ``&``)."""
    return body.count(b"&") >= MAX_FIELDS


def parse_form(body: bytes) -> tuple[tuple[str, str], ...] | None:
    """The fields of an urlencoded body in order (repeats kept), or None if they are not
    percent-encoded UTF-8 or more than ``MAX_FIELDS``."""
    try:
        text = body.decode("ascii")  # browsers percent-escape everything else in this encoding
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    return tuple(pairs)


def cookie_name_for(host_only_name: str, tag: str) -> str:
    """The cookie keeping form ``tag``: after ``session.cookie``'s host-only name, ``__Host-`` when
    Secure, so no cookie a sibling host sets under the cookie domain can stand in for it."""
    return f"{host_only_name}_post_{tag}"


def kept_form_cookie_names(cookie_names: Iterable[str], host_only_name: str) -> list[str]:
    """The kept-form cookies among ``cookie_names`` (a sign-out expires them)."""
    prefix = cookie_name_for(host_only_name, "")
    return sorted(name for name in cookie_names if name.startswith(prefix) and is_valid_tag(name[len(prefix) :]))


def is_valid_tag(tag: str) -> bool:
    return len(tag) == 2 * _TAG_BYTES and all(c in "0123456789abcdef" for c in tag)


def _attr(value: str) -> str:
    # CR and LF as references: the HTML parser would normalise raw CR LF in an attribute to LF
    return html.escape(value, quote=True).replace("\r", "&#13;").replace("\n", "&#10;")


def render_resubmit_page(
    target: str, fields: Sequence[tuple[str, str]], nonce: str | None, *, confirm_as: str | None = None
) -> str:
    """The page that posts ``fields`` back to ``target``; every value escaped.

    It submits itself through one script carrying ``nonce``; with ``confirm_as`` (the signed-in
    user's name) it has no script and asks that user to send the form only if it is theirs.
    """
    inputs = "".join(f'<input type="hidden" name="{_attr(name)}" value="{_attr(value)}">' for name, value in fields)
    if confirm_as is None:
        title = "Sending your form"
        text = "<p>You are signed in again. The form you sent before your sign-in ended is being sent now.</p>"
        # the prototype's submit: a kept field named "submit" (a legacy form's button) shadows form.submit
        script = (
            f'<script nonce="{_attr(nonce or "")}">'
            'HTMLFormElement.prototype.submit.call(document.getElementById("kept"));</script>'
        )
    else:
        title = "Send this form?"
        text = (
            f"<p>You are signed in as <strong>{html.escape(confirm_as)}</strong>. A form to "
            f"<code>{html.escape(target)}</code> was sent from this browser while no one was signed in "
            "here (after a sign-out, for example). Send it only if you filled it in.</p>"
        )
        script = ""
    discard = "" if confirm_as is None else '<a href="/">Discard it</a>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">'
        f"<title>{title}</title><style>"
        "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;"
        "color:#1f2328}main{max-width:34rem;margin:12vh auto;padding:2rem 2.25rem;background:#fff;"
        "border:1px solid #d8dee4;border-radius:8px}h1{margin:0 0 1rem;font-size:1.45rem}"
        "button{padding:.45rem 1.1rem;border:0;border-radius:6px;background:#0969da;color:#fff;font:inherit}"
        "a{margin-left:1rem;color:#0969da}code{overflow-wrap:anywhere}"
        f"</style></head><body><main><h1>{title}</h1>{text}"
        f'<form id="kept" method="post" action="{_attr(target)}" accept-charset="utf-8">{inputs}'
        f'<button type="submit">Send the form</button>{discard}</form></main>{script}'
        "</body></html>"
    )


def resubmit_headers(nonce: str | None) -> dict[str, str]:
    """The page's headers: with a ``nonce``, its one script may run; without, none may."""
    scripts = f"'nonce-{nonce}'" if nonce is not None else "'none'"
    return {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # same-origin: an application that checks Referer sees its own origin on the resubmitted POST
        "Referrer-Policy": "same-origin",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
    }


def user_label(claims: Mapping[str, object], sub: str) -> str:
    """How the confirmation names the signed-in user: email, else username, else ``sub``."""
    for claim in ("email", "preferred_username"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return value
    return sub


def wants_preservation(route: RouteConfig, request: web.Request) -> bool:
    """A browser form POST to a route that keeps forms (``on_unauthenticated: deny`` never redirects)."""
    return (
        route.preserve_post
        and request.method == "POST"
        and route.on_unauthenticated != "deny"
        and pages.prefers_html(request.headers.get("Accept"))
    )


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (the rest is not read into memory)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class PostKeeper:
    """Keeps form POSTs at the gate and serves ``GET /oauth2/resubmit``."""

    def __init__(
        self,
        sessions: SessionManager,
        auth_prefix: str,
        rate_limited: Callable[[web.Request], Awaitable[web.Response | None]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``rate_limited`` counts a kept form against its address's sign-in budget
        (``server.rate_limit``, as ``/oauth2/start`` does) and gives the 429 once it is spent."""
        self.sessions = sessions
        self.rate_limited = rate_limited
        self.store = sessions.store
        self.prefix = auth_prefix
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix + "/resubmit", self.resubmit)

    def _cannot_keep(self, request: web.Request, status: int, why: str, route: RouteConfig) -> web.Response:
        log_event("post_not_kept", route=route.name, reason=why, client_ip=pages.client_ip_of(request))
        login = start_url(self.prefix, request.raw_path)
        return pages.error_response(
            request,
            status,
            "Your form could not be kept",
            f"Your sign-in ended before this form was sent, and the form could not be kept while "
            f"you sign in again ({why}). Sign in, then fill in the form again.",
            request_id=pages.request_id_of(request),
            code="form_not_kept",
            extra={"login_url": login},
            link=("Sign in", login),
        )

    async def keep(self, request: web.Request, route: RouteConfig) -> web.StreamResponse | None:
        """Keep this POST and send the browser to sign in; None when it is not for keeping."""
        if not wants_preservation(route, request):
            return None
        verdict = verdict_for(request, route)
        if not verdict.allowed:
            log_event(
                "post_not_kept",
                logging.WARNING,
                route=route.name,
                reason=verdict.reason,
                client_ip=pages.client_ip_of(request),
            )
            return None  # the ordinary 401: a cross-site POST is never replayed
        if (
            request.content_type != FORM_TYPE
            or request.headers.get("Content-Encoding", "identity").lower() != "identity"
        ):
            return self._cannot_keep(
                request, 415, "only simple forms (application/x-www-form-urlencoded, not compressed) are kept", route
            )
        limit = route.preserve_post_max_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._cannot_keep(request, 413, f"it is larger than {limit} bytes", route)
        # each kept form is held in the store for 10 minutes: as many as the address may start
        # sign-ins, never more (a client without a browser's headers is not refused by the guard)
        limited = await self.rate_limited(request)
        if limited is not None:
            log_event(
                "post_not_kept",
                logging.WARNING,
                route=route.name,
                reason="rate limit",
                client_ip=pages.client_ip_of(request),
            )
            return limited
        try:
            # a body that stops coming holds the connection no longer than the route's timeout
            async with asyncio.timeout(route.timeout):
                body = await _read_limited(request, limit)
        except TimeoutError:
            return self._cannot_keep(request, 408, "it did not arrive in time", route)
        if body is None:
            return self._cannot_keep(request, 413, f"it is larger than {limit} bytes", route)
        if has_too_many_fields(body):
            return self._cannot_keep(request, 413, f"it has more than {MAX_FIELDS} fields", route)
        fields = parse_form(body)
        if fields is None:
            return self._cannot_keep(request, 415, "its fields are not percent-encoded UTF-8 text", route)
        # a cookie of ours that names no session (this is the no-session path): its session ended
        ended = self.sessions.open(request_cookie(request, self.sessions.cookie_name_at(request.host))) is not None
        form = KeptForm(request.host.lower(), request.raw_path, fields, self.clock(), ended)
        ticket = new_ticket()
        await self.store.set(KEEP_KEY_PREFIX + store_key_for(ticket.id), seal_record(form.to_bytes(), ticket), KEEP_TTL)
        tag = secrets.token_hex(_TAG_BYTES)
        log_event(
            "post_kept", route=route.name, fields=len(fields), bytes=len(body), client_ip=pages.client_ip_of(request)
        )
        response = pages.redirect(start_url(self.prefix, login_target_of(tag, self.prefix)), status=303)
        # host-only whatever session.cookie.domain says: a sibling host must not be able to plant
        # a kept form of its own for this browser to post as its user
        name = cookie_name_for(self.sessions.cookie.host_only_name, tag)
        self.sessions.set_cookie(response, name, self.sessions.seal(ticket), KEEP_TTL, host_only=True)
        return response

    async def resubmit(self, request: web.Request) -> web.StreamResponse:
        """The auto-submitting page that posts a kept form back, once, after the login."""
        tag = request.query.get("p", "")
        cookie = cookie_name_for(self.sessions.cookie.host_only_name, tag)
        ticket = self.sessions.open(request_cookie(request, cookie)) if is_valid_tag(tag) else None
        if ticket is None:
            return self._gone(request, "no kept form for this browser")
        # the host: on an SSO origin the cookie names a link to the central session
        session = await self.sessions.load(
            request_cookie(request, self.sessions.cookie_name_at(request.host)), request.host
        )
        if session is None:
            # not signed in (yet): the form stays kept for the login this sends the browser to
            return pages.redirect(start_url(self.prefix, request.raw_path))
        blob = await self.store.take(KEEP_KEY_PREFIX + store_key_for(ticket.id))
        plaintext = open_record(blob, ticket) if blob is not None else None
        if plaintext is None:
            response = self._gone(request, "the kept form expired or was already sent")
            self.sessions.clear_cookie(response, cookie, host_only=True)
            return response
        form = KeptForm.from_bytes(plaintext)
        if form.host != request.host.lower() or self.clock() - form.kept_at > KEEP_TTL:
            response = self._gone(request, "the kept form belongs to another host or expired")
            self.sessions.clear_cookie(response, cookie, host_only=True)
            return response
        record = session.record
        request[pages.USER] = record.sub
        # posted by itself only when the browser's ended session says who sent it; a form sent
        # while no one was signed in (after a sign-out: the next user may be someone else) waits
        # for the signed-in user to say it is theirs
        confirm = not form.from_ended_session
        log_event(
            "post_resubmitted",
            user=record.sub,
            fields=len(form.fields),
            confirm=confirm,
            client_ip=pages.client_ip_of(request),
        )
        nonce = None if confirm else secrets.token_urlsafe(16)
        label = user_label(record.claims, record.sub) if confirm else None
        response = web.Response(
            text=render_resubmit_page(form.target, form.fields, nonce, confirm_as=label),
            content_type="text/html",
            headers=resubmit_headers(nonce),
        )
        self.sessions.clear_cookie(response, cookie, host_only=True)
        return response

    def _gone(self, request: web.Request, why: str) -> web.Response:
        log_event("post_not_resubmitted", reason=why, client_ip=pages.client_ip_of(request))
        return pages.error_response(
            request,
            410,
            "This form is no longer kept",
            "The form sent before your sign-in ended was already sent, expired, or was kept in "
            "another browser. Fill in the form again.",
            request_id=pages.request_id_of(request),
            code="form_gone",
            link=("Continue", "/"),
        )


def login_target_of(tag: str, prefix: str) -> str:
    """``/oauth2/resubmit?p=<tag>``: where a login that keeps a form returns to."""
    return f"{prefix}/resubmit?p={quote(tag)}"
