"""``/oauth2/auth``, ``/oauth2/userinfo``, ``/oauth2/jwks.json`` (SPEC section 3).

``/oauth2/auth`` answers nginx ``auth_request``, Traefik ``forwardAuth`` and Envoy ``ext_authz``:
202 with ``X-Auth-Request-*`` for a valid session (refreshed first when due), 401 without one,
403 when ``allowed_groups`` / ``allowed_emails`` are given and not met, or when ``csrf=1`` is
given and the request asked about is cross-origin (docs/legacy-apps.md). The names and comma-joined
values are those of oauth2-proxy, so existing nginx snippets keep working.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web

from authproxy import headers
from authproxy.config import IPNetwork
from authproxy.cross_origin import forward_auth_refusal
from authproxy.gate import Gate
from authproxy.identity_jwt import IdentitySigner
from authproxy.logs import log_identity_too_large
from authproxy.pages import AUTH_ROUTE_LABEL, REQUEST_ID
from authproxy.policy import forward_auth_allowed, parse_list
from authproxy.sessions.record import ends_at

AUTH_REQUEST_HEADERS: Final = {
    "X-Auth-Request-User": "sub",
    "X-Auth-Request-Email": "email",
    "X-Auth-Request-Preferred-Username": "preferred_username",
    "X-Auth-Request-Groups": "groups",
}
_NO_STORE: Final = {"Cache-Control": "no-store"}


class IdentityEndpoints:
    """What an authenticated browser or a front proxy may ask about the current session."""

    def __init__(
        self,
        gate: Gate,
        *,
        auth_prefix: str,
        idle_timeout: float,
        pass_access_token: bool,
        signer: IdentitySigner | None,
        trusted_proxies: Sequence[IPNetwork] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gate = gate
        self.prefix = auth_prefix
        self.idle_timeout = idle_timeout
        self.pass_access_token = pass_access_token
        self.signer = signer
        self.trusted_proxies = trusted_proxies
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix + "/auth", self.auth)
        app.router.add_get(self.prefix + "/userinfo", self.userinfo)
        app.router.add_get(self.prefix + "/jwks.json", self.jwks)

    async def auth(self, request: web.Request) -> web.Response:
        # ?csrf=1: the cross-origin guard on the request being asked about (authproxy.cross_origin)
        refused = forward_auth_refusal(request, self.trusted_proxies)
        if refused is not None:
            return refused
        # the origin asked about: a front proxy may call with its own address as Host
        trusted = headers.peer_is_trusted(request.remote, self.trusted_proxies)
        host = headers.original_host(request.host, request.headers.get("X-Forwarded-Host"), peer_trusted=trusted)
        session = await self.gate.session_of(request, host=host)
        if session is None:
            return web.json_response({"error": "unauthenticated"}, status=401, headers=_NO_STORE)
        claims = session.record.claims
        groups = parse_list(",".join(request.query.getall("allowed_groups", [])) or None)
        emails = parse_list(",".join(request.query.getall("allowed_emails", [])) or None)
        if not forward_auth_allowed(claims, groups, emails):
            return web.json_response({"error": "forbidden"}, status=403, headers=_NO_STORE)
        too_large: list[tuple[str, int]] = []
        answer = headers.identity_header_values(claims, AUTH_REQUEST_HEADERS, too_large)
        if too_large:
            user = session.record.sub
            log_identity_too_large(AUTH_ROUTE_LABEL, too_large, user=user, request_id=request.get(REQUEST_ID))
        if self.pass_access_token and session.record.access_token:
            answer["X-Auth-Request-Access-Token"] = session.record.access_token
        return web.Response(status=202, headers={**answer, **_NO_STORE})

    async def userinfo(self, request: web.Request) -> web.Response:
        session = await self.gate.session_of(request)
        if session is None:
            return web.json_response({"error": "unauthenticated"}, status=401, headers=_NO_STORE)
        claims = session.record.claims
        # the shapes SPEC gives, whatever shape the provider sent: a script reading groups as a
        # list must not find "admins" inside the one string "superadmins"
        body = {
            "sub": session.record.sub,
            "email": _text(claims.get("email")),
            "preferred_username": _text(claims.get("preferred_username")),
            "groups": _string_list(claims.get("groups")),
            "expires_at": int(ends_at(session.record, self.idle_timeout)),
        }
        return web.json_response(body, headers=_NO_STORE)

    async def jwks(self, request: web.Request) -> web.Response:
        keys = self.signer.jwks() if self.signer is not None else {"keys": []}
        return web.json_response(keys, headers={"Cache-Control": "public, max-age=300"})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _string_list(value: object) -> list[str]:
    """``groups`` as a list of strings whether the provider sent one string or a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
