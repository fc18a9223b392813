"""``/oauth2/start`` and ``/oauth2/callback``: the Authorization Code + PKCE login (SPEC section 3).

OpenID Connect Core 1.0 section 3.1 with RFC 7636 PKCE (S256, always) and the state/nonce
defences of RFC 9700 section 4.7. The flow state (state, nonce, verifier, rd) lives server-side,
sealed under a per-flow key that only this browser's flow cookie carries; the cookie's name holds a
digest of ``state`` so parallel logins in two tabs each find their own flow. The verifier never
leaves the server except in the back-channel token request.

Guards: a per-IP rate limit on both endpoints (429; an IPv6 client's whole /64 counts as one), and
the login-loop guard of SPEC section 5: a browser (client IP + User-Agent) that starts more than 10
logins in 60 s without completing one gets an explanatory page instead of another redirect.

On an SSO origin (``server.sso_origins``), ``/start`` does not go to the provider: it begins the
handoff of :mod:`authproxy.oidc.handoff` to the authenticating origin (whose own ``/start`` then
runs this login if needed). With SSO origins configured, ``/start`` on a host the configuration
does not know is refused with a page that says so: such a sign-in could never complete.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from aiohttp import web

from authproxy import pages
from authproxy.account_pages import authorize_prompt
from authproxy.config import Config
from authproxy.cookie_header import request_cookie
from authproxy.errors import FlowError, ProviderUnavailable, TokenEndpointError, TokenInvalid
from authproxy.json_codec import dumps_sorted, loads
from authproxy.logs import log_event
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.handoff import HANDOFF_FLOW_KEY_PREFIX, HANDOFF_FLOW_TTL, HandoffFlow, authorize_url
from authproxy.oidc.pkce import code_challenge_s256, new_code_verifier, new_nonce, new_state
from authproxy.redirects import sanitize_redirect
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.record import SessionRecord, open_record, seal_record
from authproxy.sessions.ticket import Ticket, new_ticket, store_key_for

FLOW_TTL: Final = 600
FLOW_KEY_PREFIX: Final = "flow:"
LOOP_KEY_PREFIX: Final = "loop:"
RATE_KEY_PREFIX: Final = "rate:"
LOOP_LIMIT: Final = 10
LOOP_WINDOW: Final = 60.0
RATE_WINDOW: Final = 60.0
# an IPv6 host is handed a whole /64 and may send from any address in it: one budget for the /64
RATE_IPV6_PREFIX: Final = 64
# identity claims kept in the session (never the raw tokens' other content)
KEPT_CLAIMS: Final = (
    "sub",
    "email",
    "email_verified",
    "preferred_username",
    "name",
    "given_name",
    "family_name",
    "groups",
    "roles",
)
# the claim values a session keeps: these, and lists of them
_SCALARS: Final = (str, int, float, bool)


@dataclass(frozen=True)
class LoginFlow:
    state: str
    nonce: str
    code_verifier: str
    redirect: str
    started_at: float

    def to_bytes(self) -> bytes:
        return dumps_sorted(self.__dict__)

    @classmethod
    def from_bytes(cls, data: bytes) -> LoginFlow:
        fields = loads(data)
        return cls(**{k: fields[k] for k in ("state", "nonce", "code_verifier", "redirect", "started_at")})


def flow_cookie_name(session_cookie: str, state: str) -> str:
    """Per-flow cookie name: a short digest of state, so parallel tabs do not collide."""
    tag = hashlib.sha256(state.encode()).hexdigest()[:16]
    return f"{session_cookie}_flow_{tag}"


def open_flow(state: str, ticket: Ticket | None, blob: bytes | None, now: float) -> LoginFlow:
    """The login flow a callback completes; ``FlowError`` (its reason for the log) unless it is this one.

    ``state`` is the callback's, ``ticket`` the one in the browser's flow cookie for that state,
    ``blob`` what the store held under the ticket's key (taken, so a state is used once). The flow
    must open under the ticket (sealed for this browser), name the same state (compared in
    constant time) and be younger than ``FLOW_TTL``.
    """
    if not state:
        raise FlowError("no state")
    if ticket is None:
        raise FlowError("no flow cookie for this state")
    if blob is None:
        raise FlowError("flow expired or already used")
    plaintext = open_record(blob, ticket)
    if plaintext is None:
        raise FlowError("flow record does not open")
    flow = LoginFlow.from_bytes(plaintext)
    if not hmac.compare_digest(flow.state.encode(), state.encode()):
        raise FlowError("state mismatch")
    if now - flow.started_at > FLOW_TTL:
        raise FlowError("flow expired")
    return flow


def handoff_cookie_name(session_cookie: str, state: str) -> str:
    """The binding cookie of a handoff on an SSO origin (a flow cookie: sign-out clears it too)."""
    tag = hashlib.sha256(state.encode()).hexdigest()[:16]
    return f"{session_cookie}_flow_sso_{tag}"


def rate_subject(client_ip: str | None) -> str:
    """What the sign-in rate limit counts by: an IPv4 address, or an IPv6 address's /64.

    An IPv4-mapped IPv6 address counts as its IPv4 address; anything that is no address counts
    as itself.
    """
    if not client_ip or ":" not in client_ip:
        return client_ip or ""  # IPv4, in the one spelling ipaddress accepts, or no address
    return _ipv6_subject(client_ip)


@functools.lru_cache(maxsize=1024)
def _ipv6_subject(client_ip: str) -> str:
    try:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, RATE_IPV6_PREFIX), strict=False))
    return str(address)


def browser_fingerprint(client_ip: str, user_agent: str) -> str:
    # a User-Agent whose bytes were not UTF-8 arrives with surrogates: hashed as the bytes it was
    return hashlib.sha256(f"{client_ip}\n{user_agent}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def session_claims(id_claims: dict[str, Any], userinfo: dict[str, Any] | None) -> dict[str, Any]:
    """The identity kept in the session: ID token claims, then userinfo's (same sub only).

    Values are kept as allow rules, identity headers and ``/oauth2/userinfo`` read them: a
    scalar, or the scalars of a list; an object in one of the identity claims is kept as null (a
    malformed ``email_verified`` still marks the email unverified). Nothing nested is stored, so
    no shape a provider sends can keep the session record from being written.
    """
    merged = dict(id_claims)
    if userinfo:
        merged.update(userinfo)
    kept = {k: merged[k] for k in KEPT_CLAIMS if k in merged} | _extra_claims(merged)
    return {k: _simple_value(v) for k, v in kept.items()}


def _simple_value(value: Any) -> Any:
    """``value`` when it is a scalar, the scalars of a list, else None."""
    if isinstance(value, list):
        return [item for item in value if isinstance(item, _SCALARS)]
    return value if isinstance(value, _SCALARS) else None


def _extra_claims(claims: dict[str, Any]) -> dict[str, Any]:
    # other simple claims (strings, numbers, lists of them) stay available to allow rules;
    # acr and amr (how the user signed in: a second factor?) among them, the rest is token mechanics
    skip = {
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "azp",
        "auth_time",
        "jti",
        "sid",
        "s_hash",
    }
    return {
        k: v
        for k, v in claims.items()
        if k not in skip and k not in KEPT_CLAIMS and isinstance(v, str | int | float | bool | list)
    }


class LoginFlows:
    """Handlers for /start and /callback."""

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
        self.provider_config = config.provider
        self.provider = provider
        self.sessions = sessions
        self.store = sessions.store
        self.metrics = metrics
        self.clock = clock
        self.prefix = config.server.auth_prefix
        self.redirect_uri = config.server.public_url + self.prefix + "/callback"
        self.rate_limit = config.server.rate_limit.auth_per_minute
        # the max_age every authorization request asks for (config checks it is whole seconds)
        max_age = self.provider_config.extra_authorize_params.get("max_age")
        self.max_age = None if max_age is None else float(max_age)
        self.central = config.server.public_url
        self.origins = sessions.origins

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix + "/start", self.start)
        app.router.add_get(self.prefix + "/callback", self.callback)

    # ------------------------------------------------------------------ guards

    def rate_key(self, request: web.Request) -> str:
        subject = rate_subject(pages.client_ip_of(request))
        return RATE_KEY_PREFIX + hashlib.sha256(subject.encode()).hexdigest()[:32]

    async def rate_limited(self, request: web.Request) -> web.Response | None:
        return self.too_many(request, await self.store.increment(self.rate_key(request), RATE_WINDOW))

    def too_many(self, request: web.Request, count: int) -> web.Response | None:
        """The 429 page when ``count`` sign-in requests from the address exceed the limit, else None."""
        if count <= self.rate_limit:
            return None
        response = pages.error_response(
            request,
            429,
            "Too many sign-in attempts",
            "Too many sign-in attempts from your address. Wait a minute and try again.",
            request_id=pages.request_id_of(request),
        )
        response.headers["Retry-After"] = "60"
        return response

    def loop_key(self, request: web.Request) -> str:
        client = pages.client_ip_of(request) or ""
        return LOOP_KEY_PREFIX + browser_fingerprint(client, request.headers.get("User-Agent", ""))

    # ------------------------------------------------------------------ /start

    async def start(self, request: web.Request) -> web.StreamResponse:
        # X-Auth-Request-Redirect: what oauth2-proxy's nginx snippets send, since nginx cannot
        # URL-encode $request_uri into ?rd=; sanitised exactly like rd
        redirect = sanitize_redirect(request.query.get("rd") or request.headers.get("X-Auth-Request-Redirect"))
        # the address's rate and the browser's unfinished sign-ins are counted, and the flow a
        # sign-in here will use is stored, in one round trip; a refused start deletes its flow
        counters = [(self.rate_key(request), RATE_WINDOW), (self.loop_key(request), LOOP_WINDOW)]
        new = self._new_flow(redirect) if self._begins_here(request) else None
        if new is None:
            count, starts = await self.store.increment_all(counters)
        else:
            count, starts = await self.store.increment_all_and_set(counters, new.key, new.sealed, FLOW_TTL)
        refused = self.too_many(request, count)
        if refused is None and starts > LOOP_LIMIT:
            log_event("login_failed", reason="login loop", client_ip=pages.client_ip_of(request))
            self.metrics.count_login("loop")
            refused = pages.login_loop_page(request, self.sessions.cookie_name_at(request.host))
        if refused is not None:
            if new is not None:
                await self.store.delete(new.key)
            return refused
        if new is not None:
            return self._send_to_provider(request, new.flow, new.ticket)
        if self.origins is not None:
            if not self.origins.can_sign_in(request.host):
                log_event(
                    "login_failed", reason="sign-in on an unconfigured host", client_ip=pages.client_ip_of(request)
                )
                self.metrics.count_login("unknown_host")
                return pages.error_response(
                    request,
                    400,
                    "Sign-in is not set up for this address",
                    "This address is not one of the origins authproxy signs in for. If you run this site, add "
                    "its origin to server.sso_origins.",
                    request_id=pages.request_id_of(request),
                    code="unknown_origin",
                )
            origin = self.origins.satellite_of(request.host)
            if origin is not None:
                return await self._start_handoff(request, origin, redirect)
        # discovery had not succeeded when this start began: 503, as for any start before it
        raise ProviderUnavailable("provider metadata not loaded yet")

    def _begins_here(self, request: web.Request) -> bool:
        """Whether this start sends the browser to the provider now.

        Not on a host authproxy does not sign in for, nor on an SSO origin (which asks the
        authenticating origin instead), nor before discovery has succeeded.
        """
        if self.origins is not None and (
            not self.origins.can_sign_in(request.host) or self.origins.satellite_of(request.host) is not None
        ):
            return False
        return self.provider.ready

    def _new_flow(self, redirect: str) -> _NewFlow:
        """A new login flow back to ``redirect``, with its ticket and what the store keeps of it."""
        flow = LoginFlow(new_state(), new_nonce(), new_code_verifier(), redirect, self.clock())
        ticket = new_ticket()
        return _NewFlow(flow, ticket, _flow_key(ticket), seal_record(flow.to_bytes(), ticket))

    def _send_to_provider(self, request: web.Request, flow: LoginFlow, ticket: Ticket) -> web.StreamResponse:
        """The redirect to the authorization endpoint, with the cookie binding this browser to ``flow``."""
        location = self.provider.build_authorize_url(
            state=flow.state,
            nonce=flow.nonce,
            code_challenge=code_challenge_s256(flow.code_verifier),
            redirect_uri=self.redirect_uri,
            scopes=self.provider_config.scopes,
            # "sign in with another account" links ask for prompt=login (account_pages)
            extra_params=authorize_prompt(self.provider_config.extra_authorize_params, request.query.get("prompt")),
        )
        response = pages.redirect(location)
        self.sessions.set_cookie(
            response, flow_cookie_name(self.sessions.cookie_name, flow.state), self.sessions.seal(ticket), FLOW_TTL
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _start_handoff(self, request: web.Request, origin: str, redirect: str) -> web.StreamResponse:
        """On an SSO origin: remember ``redirect`` for this browser, ask the authenticating origin."""
        flow = HandoffFlow(new_state(), origin, redirect, self.clock())
        ticket = new_ticket()
        sealed = seal_record(flow.to_bytes(), ticket)
        await self.store.set(HANDOFF_FLOW_KEY_PREFIX + store_key_for(ticket.id), sealed, HANDOFF_FLOW_TTL)
        prompt = authorize_prompt({}, request.query.get("prompt")).get("prompt")  # switch-account links
        response = pages.redirect(
            authorize_url(self.central, self.prefix, origin=origin, state=flow.state, prompt=prompt)
        )
        self.sessions.set_cookie(
            response,
            handoff_cookie_name(self.sessions.cookie_name_at(request.host), flow.state),
            self.sessions.seal(ticket),
            HANDOFF_FLOW_TTL,
            host=request.host,
        )
        return response

    # ------------------------------------------------------------------ /callback

    async def callback(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        state = query.get("state", "")
        # the address's rate is counted and this browser's flow taken in one round trip: a
        # callback refused for the rate has spent its flow (the browser signs in again)
        ticket = self._flow_ticket(request, state)
        rate = (self.rate_key(request), RATE_WINDOW)
        if ticket is None:
            count, blob = await self.store.increment(*rate), None
        else:
            count, blob = await self.store.increment_and_take(rate, _flow_key(ticket))
        limited = self.too_many(request, count)
        if limited is not None:
            return limited
        # RFC 9207: an answer that may come from another server is refused (its flow is spent)
        mismatch = self._issuer_mismatch(query.getall("iss", []))
        if "error" in query:
            if mismatch is not None:
                return self._refused_response(request, state, ticket, blob, mismatch)
            return self._provider_error(request, state, ticket, blob, query.get("error", ""))
        try:
            flow = open_flow(state, ticket, blob, self.clock())
        except FlowError as e:
            log_event("login_failed", reason=e.reason, client_ip=pages.client_ip_of(request))
            self.metrics.count_login("bad_state")
            return pages.login_error_page(
                request,
                400,
                "This sign-in link is no longer valid",
                "The sign-in could not be matched to this browser: it expired, was already used, or "
                "was started elsewhere.",
                retry_url=self._start_url("/"),
            )
        if mismatch is not None:
            return self._refused_response(request, state, ticket, blob, mismatch)
        code = query.get("code")
        if not code:
            self.metrics.count_login("failed")
            return pages.login_error_page(
                request,
                400,
                "Sign-in failed",
                "The provider sent no authorization code.",
                retry_url=self._start_url(flow.redirect),
            )
        try:
            record = await self._complete_login(code, flow)
        except (TokenInvalid, TokenEndpointError) as e:
            reason = e.reason if isinstance(e, TokenInvalid) else f"token endpoint: {e.error}"
            log_event("login_failed", reason=reason, client_ip=pages.client_ip_of(request))
            self.metrics.count_login("failed")
            return pages.login_error_page(
                request,
                401 if isinstance(e, TokenInvalid) else 400,
                "Sign-in failed",
                "The sign-in could not be verified.",
                retry_url=self._start_url(flow.redirect),
            )
        except ProviderUnavailable as e:
            # the cause (which request, what it answered) is what an operator can act on
            log_event(
                "login_failed", reason="provider unavailable", error=str(e), client_ip=pages.client_ip_of(request)
            )
            self.metrics.count_login("provider_unavailable")
            return pages.login_error_page(
                request,
                503,
                "Sign-in is unavailable",
                "The identity provider could not be reached. Try again in a moment.",
                retry_url=self._start_url(flow.redirect),
            )
        # a fresh session id at every login (fixation defence); the old session, if any, ends
        old = await self.sessions.load(request_cookie(request, self.sessions.cookie_name))
        if old is not None:
            await self.sessions.delete(old)
        # a finished sign-in clears the browser's loop counter in the same round trip
        _session, cookie_value = await self.sessions.create(record, forget=[self.loop_key(request)])
        request[pages.USER] = record.sub
        log_event("login_ok", user=record.sub, client_ip=pages.client_ip_of(request))
        self.metrics.count_login("ok")
        response = pages.redirect(flow.redirect)
        self.sessions.set_cookie(response, self.sessions.cookie_name, cookie_value, int(self.sessions.absolute_timeout))
        self.sessions.clear_cookie(response, flow_cookie_name(self.sessions.cookie_name, flow.state))
        response.headers["Cache-Control"] = "no-store"
        return response

    def _start_url(self, redirect: str) -> str:
        return f"{self.prefix}/start?rd={quote(redirect, safe='/')}"

    def _flow_ticket(self, request: web.Request, state: str) -> Ticket | None:
        """The ticket of the flow cookie this browser holds for ``state``, if any."""
        if not state:
            return None
        return self.sessions.open(request_cookie(request, flow_cookie_name(self.sessions.cookie_name, state)))

    def _issuer_mismatch(self, issuers: list[str]) -> str | None:
        """Why an authorization response cannot be the provider's (RFC 9207 section 2.4), else None.

        A present ``iss`` must be the configured issuer (simple string comparison, and only one);
        a provider that advertises ``authorization_response_iss_parameter_supported`` must send it.
        """
        if not issuers:
            ready = self.provider.ready
            if ready and self.provider.metadata.authorization_response_iss_parameter_supported:
                return "authorization response without iss"
            return None
        if len(issuers) > 1 or issuers[0] != self.provider.issuer:
            return "authorization response from another issuer"
        return None

    def _refused_response(
        self, request: web.Request, state: str, ticket: Ticket | None, blob: bytes | None, reason: str
    ) -> web.StreamResponse:
        redirect = "/"
        with contextlib.suppress(FlowError):
            redirect = open_flow(state, ticket, blob, self.clock()).redirect
        log_event("login_failed", reason=reason, client_ip=pages.client_ip_of(request))
        self.metrics.count_login("failed")
        return pages.login_error_page(
            request,
            400,
            "Sign-in failed",
            "The answer did not come from the configured identity provider.",
            retry_url=self._start_url(redirect),
        )

    def _provider_error(
        self, request: web.Request, state: str, ticket: Ticket | None, blob: bytes | None, error: str
    ) -> web.StreamResponse:
        redirect = "/"
        with contextlib.suppress(FlowError):
            redirect = open_flow(state, ticket, blob, self.clock()).redirect
        safe_error = error if error.replace("_", "").isalnum() and len(error) < 64 else "error"
        log_event("login_failed", reason=f"provider error: {safe_error}", client_ip=pages.client_ip_of(request))
        self.metrics.count_login("provider_error")
        status = 403 if safe_error == "access_denied" else 400
        message = (
            "Access was denied at the identity provider."
            if status == 403
            else f"The identity provider reported an error ({safe_error})."
        )
        return pages.login_error_page(
            request, status, "Sign-in did not complete", message, retry_url=self._start_url(redirect)
        )

    async def _complete_login(self, code: str, flow: LoginFlow) -> SessionRecord:
        tokens = await self.provider.exchange_code(code, self.redirect_uri, flow.code_verifier)
        if not tokens.id_token:
            raise TokenInvalid("no id_token in the token response")
        claims = await self.provider.verify_id_token(
            tokens.id_token, flow.nonce, tokens.access_token, max_age=self.max_age
        )
        userinfo = None
        if self.provider_config.userinfo and tokens.access_token:
            try:
                userinfo = await self.provider.fetch_userinfo(tokens.access_token)
            except TokenEndpointError as e:
                # the access token just issued is not taken there: not the token endpoint's error
                raise TokenInvalid(f"userinfo endpoint: {e.error}") from e
            if userinfo.get("sub") != claims["sub"]:
                raise TokenInvalid("userinfo sub differs from the ID token's")
        now = self.clock()
        return SessionRecord(
            sub=str(claims["sub"]),
            claims=session_claims(claims, userinfo),
            sid=str(claims["sid"]) if isinstance(claims.get("sid"), str) else None,
            id_token=tokens.id_token,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            access_expires_at=tokens.expires_at,
            created_at=now,
            last_seen_at=now,
            absolute_expires_at=now + self.sessions.absolute_timeout,
            version=1,
        )


def _flow_key(ticket: Ticket) -> str:
    return FLOW_KEY_PREFIX + store_key_for(ticket.id)


class _NewFlow(NamedTuple):
    flow: LoginFlow
    ticket: Ticket
    key: str  # in the store
    sealed: bytes  # the record stored under key
