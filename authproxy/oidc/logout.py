"""``/oauth2/sign_out`` and ``/oauth2/backchannel_logout``: ending sessions (SPEC section 3).

Sign-out (``GET`` or ``POST``, OpenID Connect RP-Initiated Logout 1.0 with RFC 7009):

1. The session named by the cookie is deleted from the store, under its refresh lock, so a
   refresh running on another worker or replica finishes first and cannot write the record back
   afterwards; the refresh token deleted is the one the store holds at that moment.
2. That refresh token (or, without one, the access token) is revoked at the provider's
   ``revocation_endpoint`` with the client's authentication (RFC 7009 sections 2.1-2.2). A
   provider that is down, slow (bounded by ``provider.timeout``) or refusing does not fail the
   logout: it is logged and the logout goes on. Local logout never depends on the provider.
3. The session cookie, any leftover login-flow cookies and the cookies of forms kept on this
   host (``preserve_post``) are expired: whoever signs in next may be someone else, and must
   not have the signed-out user's form sent as theirs.
4. 302 to the provider's ``end_session_endpoint`` (RP-Initiated Logout 1.0 section 2) with
   ``id_token_hint`` (the session's ID token, when there was a session), ``client_id`` and
   ``post_logout_redirect_uri``, so the provider's single sign-on session ends too; without that
   endpoint (or before discovery succeeded), 302 to ``rd``.

Without a session, steps 1-2 are skipped: the cookies are still expired and the browser still
goes to the provider, whose SSO session may outlive ours (otherwise the next visit would sign the
user in again silently).

Where the browser lands, as operators migrating from mod_auth_openidc and oauth2-proxy expect:

- ``provider.post_logout_redirect_uri`` configured: it is always the ``post_logout_redirect_uri``
  sent to the provider (it must be registered there exactly, section 3), and ``rd`` is not used
  while the provider has an ``end_session_endpoint``.
- Not configured, ``rd`` given: ``public_url`` + the sanitised ``rd`` is sent as
  ``post_logout_redirect_uri`` (mod_auth_openidc's ``?logout=<url>``); register the URLs you use.
- Neither: no ``post_logout_redirect_uri``; the provider shows its own signed-out page.
- No ``end_session_endpoint``: with ``rd``, the proxy's ``/oauth2/signed_out?rd=<sanitised rd>``
  page, whose "Sign in again" link returns to ``rd`` (landing on a protected ``rd`` itself would
  start a new login at once); else the configured ``post_logout_redirect_uri``; else
  ``/oauth2/signed_out`` (see authproxy.account_pages).

A session store outage during sign-out is a 503 with ``Retry-After``; the cookie is expired
anyway, since the person at the keyboard asked to be signed out of this browser.

Like oauth2-proxy's, ``GET`` sign-out is allowed (links in applications); a cross-site page can
therefore sign a user out (a nuisance, never an escalation): with ``SameSite=Lax`` a cross-site
``POST`` carries no session cookie and ends nothing.

Back-channel logout (``POST``, OpenID Connect Back-Channel Logout 1.0):

- The ``logout_token`` of the form body (section 2.5) is validated as section 2.6 says
  (signature, ``iss``, ``aud``, ``iat``, ``exp``, the back-channel event, ``sid`` and/or ``sub``,
  no ``nonce``: ``ProviderClient.verify_logout_token``), then its ``jti`` is recorded in the
  session store with ``set_if_absent`` (step 9's replay check, shared by every replica) for as
  long as the token could still be accepted. A token without ``exp`` is accepted only within
  ``MAX_LOGOUT_TOKEN_AGE`` of its ``iat`` (step 6 allows refusing old ones), so its replay
  window stays bounded too.
- Section 2.7: with ``sid``, every session of that provider session ends; with only ``sub``,
  every session of that user. The store's sid/sub indexes reach sessions created on any replica.
- Section 2.8: 200 with ``Cache-Control: no-store`` once the sessions are ended (also when none
  was left); 400 JSON ``{"error": "invalid_request", "error_description": ...}`` for a bad or
  replayed token, ending nothing; 503 when the session store or the provider's keys cannot be
  reached, never a 200 without the sessions ended. If ending the sessions fails after the
  ``jti`` was recorded, the record is withdrawn so that the provider's retry is not a "replay".

Logs carry the event, the user (``sub``), counts and reasons; never a token, cookie or ``jti``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from authproxy import pages
from authproxy.account_pages import signed_out_location
from authproxy.config import Config
from authproxy.cookie_header import request_cookie
from authproxy.errors import ProviderError, ProviderUnavailable, StoreError, TokenInvalid
from authproxy.logs import log_event
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.discovery import ProviderMetadata
from authproxy.preserved_post import kept_form_cookie_names
from authproxy.redirects import sanitize_redirect
from authproxy.sessions.manager import LOCK_PREFIX, Session, SessionManager
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.refresh import reload_session
from authproxy.sessions.store import hold_lock

JTI_KEY_PREFIX: Final = "jti:"
# a replay-cache entry lives at least this long, whatever the token's exp says
MIN_REPLAY_TTL: Final = 300.0
# and at most this long: a store cannot hold a far-future exp's lifetime (Redis refuses expiries
# beyond 2**63 ms, and the milliseconds overflow a float long before an exp of 10**308 does)
MAX_REPLAY_TTL: Final = 366 * 86400.0
# a logout token without exp is accepted only this long after its iat (section 2.6 step 6)
MAX_LOGOUT_TOKEN_AGE: Final = 600.0
# the lease of the refresh lock taken while a session is deleted (extended while held)
LOGOUT_LOCK_LEASE: Final = 10.0
# beyond two provider.timeouts (a refresh's token request, then a JWKS refetch for a new ID
# token's key): how long sign-out waits for a refresh running elsewhere to finish
LOGOUT_LOCK_GRACE: Final = 1.0
RETRY_AFTER_SECONDS: Final = 5
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# ----------------------------------------------------------------------------- pure decisions


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to whatever query it already has (section 2 allows one)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def post_logout_redirect_target(*, configured: str | None, public_url: str, rd: str | None) -> str | None:
    """The ``post_logout_redirect_uri`` to send the provider (see the module docstring), or None."""
    if configured:
        return configured
    if rd:
        return public_url + sanitize_redirect(rd)
    return None


def sign_out_location(
    *,
    end_session_endpoint: str | None,
    client_id: str,
    id_token: str | None,
    configured_post_logout: str | None,
    public_url: str,
    rd: str | None,
    auth_prefix: str = "/oauth2",
) -> str:
    """Where the browser goes after a local sign-out (RP-Initiated Logout 1.0 sections 2-3)."""
    if end_session_endpoint is None:
        # the proxy's signed-out page, not rd itself: a protected rd would start a new login at once
        if rd or not configured_post_logout:
            return signed_out_location(auth_prefix, rd)
        return configured_post_logout
    params: dict[str, str] = {}
    if id_token:
        params["id_token_hint"] = id_token
    params["client_id"] = client_id
    target = post_logout_redirect_target(configured=configured_post_logout, public_url=public_url, rd=rd)
    if target is not None:
        params["post_logout_redirect_uri"] = target
    return with_query(end_session_endpoint, params)


def revocation_request(record: SessionRecord) -> tuple[str, str] | None:
    """The token to revoke at sign-out and its ``token_type_hint`` (RFC 7009 section 2.1), or None.

    The refresh token, whose revocation ends the grant (section 2.1: the provider SHOULD then
    also invalidate its access tokens); the access token when there is no refresh token.
    """
    if record.refresh_token:
        return record.refresh_token, "refresh_token"
    if record.access_token:
        return record.access_token, "access_token"
    return None


def flow_cookie_names(cookie_names: Iterable[str], session_cookie: str) -> list[str]:
    """The login-flow cookies among ``cookie_names`` (``<session cookie>_flow_<digest>``)."""
    prefix = session_cookie + "_flow_"
    return sorted(name for name in cookie_names if name.startswith(prefix))


def replay_key(jti: str) -> str:
    """The store key of a logout token's ``jti`` (hashed: no provider value in a store key)."""
    return JTI_KEY_PREFIX + hashlib.sha256(jti.encode()).hexdigest()


def replay_ttl(claims: Mapping[str, Any], now: float, skew: float) -> float:
    """How long a verified logout token's ``jti`` must stay recorded; ``TokenInvalid`` if too old.

    As long as the token could still be accepted: until ``exp`` plus the skew allowed in its
    check, or, without ``exp``, until ``iat + MAX_LOGOUT_TOKEN_AGE`` plus the skew (older ones are
    refused here). Never shorter than ``MIN_REPLAY_TTL``, never longer than ``MAX_REPLAY_TTL``:
    a token that claims to live for centuries is remembered for a year (its replay could only
    end, again, sessions it already ended).
    """
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        until = float(exp) + skew
    else:
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise TokenInvalid("iat missing")
        until = float(iat) + MAX_LOGOUT_TOKEN_AGE + skew
        if now >= until:
            raise TokenInvalid("logout token too old")
    return min(MAX_REPLAY_TTL, max(MIN_REPLAY_TTL, until - now))


async def form_value(request: web.Request, name: str, within: float) -> str | None:
    """The form field ``name`` of a POST body; None when absent, not text, or the body is not a form.

    A body aiohttp cannot read as a form (a multipart body without its boundary, a charset
    nobody knows, a malformed part, one beyond aiohttp's ``client_max_size``) is treated as one
    without the field, never as a 500 or aiohttp's plain-text 413; so is one that has not all
    arrived ``within`` seconds: a body that never comes holds no connection (and no file
    descriptor) for good.
    """
    try:
        async with asyncio.timeout(within):
            value = (await request.post()).get(name)
    except (ValueError, LookupError, HttpProcessingError, TimeoutError, web.HTTPRequestEntityTooLarge):
        return None
    return value if isinstance(value, str) else None


def logout_subject(claims: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(sid, sub)`` of a verified logout token; with a ``sid`` only that provider session ends."""
    sid, sub = claims.get("sid"), claims.get("sub")
    return (sid if isinstance(sid, str) and sid else None, sub if isinstance(sub, str) and sub else None)


# ----------------------------------------------------------------------------- handlers


class Logouts:
    """Handlers for ``/sign_out`` and ``/backchannel_logout``."""

    def __init__(
        self,
        config: Config,
        provider: ProviderClient,
        sessions: SessionManager,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.provider is not None and config.server.public_url is not None
        self.config = config
        self.provider = provider
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.prefix = config.server.auth_prefix
        self.public_url = config.server.public_url
        self.client_id = config.provider.client_id
        self.post_logout_redirect_uri = config.provider.post_logout_redirect_uri
        self.clock_skew = config.provider.clock_skew
        self.lock_wait = 2 * config.provider.timeout + LOGOUT_LOCK_GRACE
        # a form of these endpoints is a few hundred bytes: it comes with its head or not at all
        self.body_timeout = config.server.client_header_timeout

    def add_routes(self, app: web.Application) -> None:
        # every method is taken here: a method aiohttp found no handler for would otherwise fall
        # through to the catch-all proxy route and reach the upstream under a reserved path
        app.router.add_route("*", self.prefix + "/sign_out", self._only(("GET", "POST"), self.sign_out))
        app.router.add_route("*", self.prefix + "/backchannel_logout", self._only(("POST",), self.backchannel_logout))

    @staticmethod
    def _only(
        methods: tuple[str, ...], handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            if request.method not in methods:
                # HEAD included: a link prefetcher must not sign anyone out
                return pages.method_not_allowed(request, methods, request_id=pages.request_id_of(request))
            return await handler(request)

        return dispatch

    def _metadata(self) -> ProviderMetadata | None:
        try:
            return self.provider.metadata
        except ProviderUnavailable:
            # discovery has not succeeded yet: local logout still works, without the provider
            return None

    # ------------------------------------------------------------------ /sign_out

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        rd = request.query.get("rd")
        if rd is None and request.method == "POST":
            # an unreadable body still signs out: only the destination is lost
            rd = await form_value(request, "rd", self.body_timeout)
        try:
            session = await self._delete_session(
                request_cookie(request, self.sessions.cookie_name_at(request.host)), request.host
            )
        except StoreError as e:
            self.metrics.count_store_error()
            log_event(
                "logout_failed",
                logging.WARNING,
                reason=f"session store: {type(e).__name__}",
                client_ip=pages.client_ip_of(request),
            )
            response = pages.error_response(
                request,
                503,
                "Sign-out incomplete",
                "You are signed out of this browser, but the sign-in could not be ended everywhere. "
                "Try again in a moment.",
                request_id=pages.request_id_of(request),
                code="session_store_unavailable",
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            self._expire_cookies(request, response)
            return response
        metadata = self._metadata()
        id_token = None
        if session is not None:
            record = session.record
            request[pages.USER] = record.sub
            id_token = record.id_token
            revoked = await self._revoke(record, metadata)
            self.metrics.count_logout("user")
            log_event("logout", user=record.sub, revoked=revoked, client_ip=pages.client_ip_of(request))
        location = sign_out_location(
            end_session_endpoint=metadata.end_session_endpoint if metadata is not None else None,
            client_id=self.client_id,
            id_token=id_token,
            configured_post_logout=self.post_logout_redirect_uri,
            public_url=self.sessions.origins.origin_of(request.host) if self.sessions.origins else self.public_url,
            rd=rd,
            auth_prefix=self.prefix,
        )
        response = pages.redirect(location)
        self._expire_cookies(request, response)
        return response

    async def _delete_session(self, cookie_value: str | None, host: str | None) -> Session | None:
        """Delete the cookie's session; the record as it was last stored, or None without one.

        On an SSO origin that is the central session: the sign-out ends every origin's session.
        """
        session = await self.sessions.load(cookie_value, host)
        if session is None:
            return None
        store = self.sessions.store
        async with hold_lock(store, LOCK_PREFIX + session.store_key, LOGOUT_LOCK_LEASE, wait=self.lock_wait) as lock:
            # under the lock no refresh is running: the stored record holds the current refresh
            # token. Without the lock (a refresh stuck longer than the provider timeout), the
            # session is deleted all the same
            current = await reload_session(self.sessions, session) if lock is not None else None
            ended = current or session
            await self.sessions.delete(ended)
        return ended

    async def _revoke(self, record: SessionRecord, metadata: ProviderMetadata | None) -> bool:
        """Revoke the session's grant at the provider (RFC 7009); False when that was not possible."""
        wanted = revocation_request(record)
        if wanted is None or metadata is None or metadata.revocation_endpoint is None:
            return False
        token, hint = wanted
        try:
            await self.provider.revoke(token, hint)
        except ProviderError as e:
            # the local logout is done; the grant ends at its own expiry at the provider
            log_event(
                "logout_revocation_failed",
                logging.WARNING,
                user=record.sub,
                reason=str(e),
                token_type_hint=hint,
            )
            return False
        return True

    def _expire_cookies(self, request: web.Request, response: web.StreamResponse) -> None:
        name = self.sessions.cookie_name_at(request.host)
        for cookie in [name, *flow_cookie_names(request.cookies.keys(), name)]:
            self.sessions.clear_cookie(response, cookie, host=request.host)
        # a form kept on this host is sent by itself only as its sender: not after a sign-out
        for cookie in kept_form_cookie_names(request.cookies.keys(), self.sessions.cookie.host_only_name):
            self.sessions.clear_cookie(response, cookie, host_only=True)

    # ------------------------------------------------------------------ /backchannel_logout

    async def backchannel_logout(self, request: web.Request) -> web.StreamResponse:
        raw = await form_value(request, "logout_token", self.body_timeout)
        if not raw:
            return self._refuse(request, "logout_token missing")
        try:
            claims = await self.provider.verify_logout_token(raw)
            ttl = replay_ttl(claims, self.clock(), self.clock_skew)
        except TokenInvalid as e:
            return self._refuse(request, e.reason)
        except ProviderUnavailable as e:
            return self._unavailable(request, f"provider: {e}")
        sid, sub = logout_subject(claims)
        key = replay_key(str(claims["jti"]))
        store = self.sessions.store
        try:
            if not await store.set_if_absent(key, b"1", ttl):
                return self._refuse(request, "logout token replayed (jti already used)", user=sub)
        except StoreError as e:
            self.metrics.count_store_error()
            return self._unavailable(request, f"session store: {type(e).__name__}")
        try:
            ended = await self.sessions.end_sessions(sub=sub, sid=sid)
        except StoreError as e:
            self.metrics.count_store_error()
            # the provider may retry with the same token: it must not be taken for a replay
            with contextlib.suppress(StoreError):
                await store.delete(key)
            return self._unavailable(request, f"session store: {type(e).__name__}")
        for _ in range(ended):
            self.metrics.count_logout("backchannel")
        log_event(
            "backchannel_logout",
            user=sub,
            scope="sid" if sid is not None else "sub",
            sessions_ended=ended,
            client_ip=pages.client_ip_of(request),
        )
        return web.Response(status=200, headers=_NO_STORE)

    def _refuse(self, request: web.Request, reason: str, *, user: str | None = None) -> web.Response:
        """Back-Channel Logout 1.0 section 2.8: 400 with an RFC 6749 section 5.2 style body."""
        log_event(
            "backchannel_logout_failed",
            logging.WARNING,
            reason=reason,
            user=user,
            client_ip=pages.client_ip_of(request),
        )
        return web.json_response(
            {"error": "invalid_request", "error_description": reason}, status=400, headers=_NO_STORE
        )

    def _unavailable(self, request: web.Request, reason: str) -> web.Response:
        log_event("backchannel_logout_failed", logging.WARNING, reason=reason, client_ip=pages.client_ip_of(request))
        return web.json_response(
            {"error": "temporarily_unavailable", "error_description": "the logout could not be processed now"},
            status=503,
            headers={**_NO_STORE, "Retry-After": str(RETRY_AFTER_SECONDS)},
        )
