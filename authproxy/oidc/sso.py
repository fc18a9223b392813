"""``/oauth2/sso/authorize`` and ``/oauth2/sso/callback``: one sign-in shared by several domains.

The handlers of the handoff protocol drawn in :mod:`authproxy.oidc.handoff` (its step 1 is
``/start`` on an SSO origin, in :mod:`authproxy.oidc.flow`):

- ``GET /sso/authorize?origin=B&state=S`` on the authenticating origin: ``origin`` must be one of
  ``server.sso_origins`` exactly, else 400 and no redirect. Without a session, the ordinary login
  runs first (``/start?rd=`` this very URL). With one, a one-time grant is stored and the browser
  goes to ``B/oauth2/sso/callback?code=...&state=S``.
- ``GET /sso/callback?code=...&state=S`` on SSO origin B: the grant and the browser's handoff flow
  are each taken once, checked together (:func:`~authproxy.oidc.handoff.grant_refusal`), and B's
  own session is created, linked to the central one; 303 to the path the visitor first asked for.
  Any refusal is a 400 page with a link to start again, logged with its reason.

Both answers carry ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``: the URLs
hold a code, which must not reach a cache or the next page's ``Referer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import quote

from aiohttp import web

from authproxy import pages
from authproxy.account_pages import authorize_prompt, start_url
from authproxy.cookie_header import request_cookie
from authproxy.logs import log_event
from authproxy.metrics import Metrics
from authproxy.oidc.flow import LoginFlows, handoff_cookie_name
from authproxy.oidc.handoff import (
    GRANT_KEY_PREFIX,
    GRANT_TTL,
    HANDOFF_FLOW_KEY_PREFIX,
    HandoffFlow,
    HandoffGrant,
    authorize_url,
    callback_url,
    grant_refusal,
    state_digest,
    well_formed_state,
)
from authproxy.origins import Origins
from authproxy.redirects import sanitize_redirect
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.record import open_record, seal_record
from authproxy.sessions.ticket import new_ticket, store_key_for

T = TypeVar("T")
_PRIVATE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}


def _parsed(parse: Callable[[bytes], T], plaintext: bytes | None) -> T | None:
    if plaintext is None:
        return None
    try:
        return parse(plaintext)
    except ValueError:
        return None


class SingleSignOn:
    """Handlers for ``/sso/authorize`` (authenticating origin) and ``/sso/callback`` (SSO origins)."""

    def __init__(
        self,
        flows: LoginFlows,
        sessions: SessionManager,
        origins: Origins,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.flows = flows
        self.sessions = sessions
        self.store = sessions.store
        self.origins = origins
        self.metrics = metrics
        self.clock = clock
        self.prefix = flows.prefix

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix + "/sso/authorize", self.authorize)
        app.router.add_get(self.prefix + "/sso/callback", self.callback)

    # ------------------------------------------------------------------ /sso/authorize

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        # counted with /start and /callback: each grant costs a store entry
        limited = await self.flows.rate_limited(request)
        if limited is not None:
            return limited
        if self.origins.satellite_of(request.host) is not None:
            return self._page(request, 404, "Not found", "This endpoint is served on the sign-in origin only.")
        origin = self.origins.configured_satellite(request.query.get("origin"))
        state = request.query.get("state")
        if origin is None:
            log_event("sso_refused", reason="origin not in server.sso_origins", client_ip=pages.client_ip_of(request))
            self.metrics.count_login("sso_refused")
            return self._page(
                request,
                400,
                "Unknown application address",
                "The application that sent you here is not one authproxy signs in for.",
            )
        if state is None or not well_formed_state(state):
            log_event("sso_refused", reason="malformed state", client_ip=pages.client_ip_of(request))
            self.metrics.count_login("sso_refused")
            return self._page(request, 400, "Bad request", "The sign-in request is incomplete.")
        session = await self.sessions.load(
            request_cookie(request, self.sessions.cookie_name_at(request.host)), request.host
        )
        prompt = authorize_prompt({}, request.query.get("prompt")).get("prompt")
        if session is None or prompt is not None:
            # sign in here first (again, for a switch-account prompt); the ordinary login comes
            # back to this very URL, without the prompt
            back = sanitize_redirect(authorize_url("", self.prefix, origin=origin, state=state))
            return pages.redirect(start_url(self.prefix, back, prompt=prompt))
        code = new_ticket()
        grant = HandoffGrant(session.cookie, origin, state_digest(state), self.clock())
        await self.store.set(GRANT_KEY_PREFIX + store_key_for(code.id), seal_record(grant.to_bytes(), code), GRANT_TTL)
        log_event("sso_handoff", user=session.record.sub, origin=origin, client_ip=pages.client_ip_of(request))
        location = callback_url(origin, self.prefix, code=self.sessions.seal(code), state=state)
        response = pages.redirect(location)
        response.headers.update(_PRIVATE)
        return response

    # ------------------------------------------------------------------ /sso/callback

    async def callback(self, request: web.Request) -> web.StreamResponse:
        origin = self.origins.satellite_of(request.host)
        if origin is None:
            return self._page(request, 404, "Not found", "This endpoint is served on SSO origins only.")
        state = request.query.get("state", "")
        # the grant goes first and goes whatever follows: a code works once, even a refused one
        # (the rate limit's refusal included)
        grant = await self._take_grant(request.query.get("code"))
        flow = await self._take_flow(request, state) if well_formed_state(state) else None
        limited = await self.flows.rate_limited(request)
        if limited is not None:
            return limited
        now = self.clock()
        if grant is None:
            return self._refuse(request, "code unknown, expired or already used")
        if flow is None:
            return self._refuse(request, "no handoff of this browser for this state")
        reason = grant_refusal(grant, flow, origin=origin, state=state, now=now)
        if reason is not None:
            return self._refuse(request, reason, redirect=flow.redirect)
        central = await self.sessions.load_central(grant.central)
        cookie_value = await self.sessions.create_link(central, origin) if central is not None else None
        if central is None or cookie_value is None:
            return self._refuse(request, "the sign-in ended meanwhile", redirect=flow.redirect)
        # a cookie this browser held before names a link nobody can use any more
        name = self.sessions.cookie_name_at(request.host)
        await self.sessions.forget_link(request_cookie(request, name))
        await self.store.delete(self.flows.loop_key(request))
        request[pages.USER] = central.record.sub
        log_event("sso_login_ok", user=central.record.sub, origin=origin, client_ip=pages.client_ip_of(request))
        self.metrics.count_login("sso_ok")
        response = pages.redirect(flow.redirect, status=303)
        response.headers.update(_PRIVATE)
        max_age = int(central.record.absolute_expires_at - now)
        self.sessions.set_cookie(response, name, cookie_value, max_age, host=request.host)
        self.sessions.clear_cookie(response, handoff_cookie_name(name, state), host=request.host)
        return response

    async def _take_grant(self, code: str | None) -> HandoffGrant | None:
        plaintext = await self._take_sealed(GRANT_KEY_PREFIX, code)
        return _parsed(HandoffGrant.from_bytes, plaintext)

    async def _take_flow(self, request: web.Request, state: str) -> HandoffFlow | None:
        cookie = request_cookie(request, handoff_cookie_name(self.sessions.cookie_name_at(request.host), state))
        return _parsed(HandoffFlow.from_bytes, await self._take_sealed(HANDOFF_FLOW_KEY_PREFIX, cookie))

    async def _take_sealed(self, prefix: str, sealed_ticket: str | None) -> bytes | None:
        """Take (read and delete, once) the record a sealed ticket names, and open it; None if any step fails."""
        ticket = self.sessions.open(sealed_ticket)
        if ticket is None:
            return None
        blob = await self.store.take(prefix + store_key_for(ticket.id))
        return open_record(blob, ticket) if blob is not None else None

    def _refuse(self, request: web.Request, reason: str, *, redirect: str = "/") -> web.Response:
        log_event("login_failed", reason=f"sso handoff: {reason}", client_ip=pages.client_ip_of(request))
        self.metrics.count_login("sso_refused")
        response = pages.login_error_page(
            request,
            400,
            "This sign-in link is no longer valid",
            "The sign-in could not be carried over to this site: the link expired, was already used, "
            "or was opened in another browser.",
            retry_url=f"{self.prefix}/start?rd={quote(redirect, safe='/')}",
        )
        response.headers.update(_PRIVATE)
        return response

    def _page(self, request: web.Request, status: int, title: str, message: str) -> web.Response:
        response = pages.error_response(request, status, title, message, request_id=pages.request_id_of(request))
        response.headers.update(_PRIVATE)
        return response
