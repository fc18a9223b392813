"""The pages about the account itself: "access denied" (which rule refused) and "signed out".

- The 403 of an ``allow`` rule names the kind that refused and what it requires ("requires group
  admins"), never another user's data (allowed email addresses are not listed), and offers a way
  on: sign out, or sign in with another account (``/oauth2/start?prompt=login``, which makes the
  provider ask for credentials again instead of reusing its single sign-on session). The refusal
  is logged with the user, the route and the kind.
- ``GET /oauth2/signed_out`` is where a sign-out lands when no provider page ends it (see
  docs/configuration.md, "Where sign-out lands"): a page of the proxy, not a protected path that
  would start a new login at once, with a "Sign in again" link to ``rd``.

``authorize_prompt`` is the one place that decides which ``prompt`` values ``/oauth2/start``
passes on from its query (OpenID Connect Core 1.0 section 3.1.2.1): ``login`` and
``select_account`` only; anything else is dropped, so ``/start`` cannot be used to send
arbitrary parameters to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, urlencode

from aiohttp import web

from authproxy import pages
from authproxy.logs import log_event
from authproxy.policy import Refusal
from authproxy.redirects import sanitize_redirect

SWITCH_PROMPTS: Final = frozenset({"login", "select_account"})
SWITCH_PROMPT: Final = "login"


def authorize_prompt(configured: Mapping[str, str], asked: str | None) -> dict[str, str]:
    """The extra authorization parameters of one login: the configured ones, and an allowed ``prompt``."""
    params = dict(configured)
    if asked in SWITCH_PROMPTS:
        params["prompt"] = asked
    return params


def start_url(prefix: str, rd: str, *, prompt: str | None = None) -> str:
    """``/oauth2/start?rd=...`` (and ``&prompt=...``): a login that returns to ``rd``."""
    url = f"{prefix}/start?rd={quote(sanitize_redirect(rd), safe='/')}"
    return f"{url}&{urlencode({'prompt': prompt})}" if prompt else url


def forbidden_response(
    request: web.Request, *, prefix: str, route: str, user: str, refusal: Refusal | None
) -> web.Response:
    """The 403 of a route's ``allow`` rules: which kind refused, and sign-out / switch-account links."""
    log_event(
        "access_denied",
        user=user,
        route=route,
        kind=refusal.kind if refusal else "unknown",
        reason=refusal.requirement if refusal else "refused",
        client_ip=pages.client_ip_of(request),
        request_id=pages.request_id_of(request),
    )
    requirement = refusal.requirement if refusal else "does not admit your account"
    sign_out = f"{prefix}/sign_out"
    switch = start_url(prefix, request.raw_path, prompt=SWITCH_PROMPT)
    return pages.error_response(
        request,
        403,
        "Access denied",
        f"You are signed in, but this application {requirement}. Sign out, or sign in with an account that has access.",
        request_id=pages.request_id_of(request),
        code="forbidden",
        extra={
            "rule": refusal.kind if refusal else None,
            "requirement": requirement,
            "sign_out_url": sign_out,
            "switch_account_url": switch,
        },
        links=(("Sign in with another account", switch), ("Sign out", sign_out)),
    )


def signed_out_location(prefix: str, rd: str | None) -> str:
    """``/oauth2/signed_out`` carrying the sanitised ``rd`` the "Sign in again" link returns to."""
    target = sanitize_redirect(rd)
    return f"{prefix}/signed_out" if target == "/" else f"{prefix}/signed_out?rd={quote(target, safe='/')}"


class SignedOutPage:
    """``GET /oauth2/signed_out``: the page a sign-out lands on."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix + "/signed_out", self.show)

    async def show(self, request: web.Request) -> web.Response:
        rd = sanitize_redirect(request.query.get("rd"))
        response = pages.error_response(
            request,
            200,
            "You are signed out",
            "You have been signed out of this application.",
            request_id=pages.request_id_of(request),
            code="signed_out",
            extra={"login_url": start_url(self.prefix, rd)},
            links=(
                ("Sign in again", start_url(self.prefix, rd)),
                ("Sign in with another account", start_url(self.prefix, rd, prompt=SWITCH_PROMPT)),
            ),
            kicker="Signed out",
        )
        return response
