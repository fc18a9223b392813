"""The cross-domain handoff of a sign-in (pure): grants, their checks, the URLs between origins.

The protocol (the handlers are :mod:`authproxy.oidc.sso`):

1. A browser without a session on SSO origin B opens ``B/oauth2/start?rd=PATH``. B keeps a
   *handoff flow* server-side (``state`` of 256 random bits and ``rd``), sealed under a key that
   only a short-lived, host-only binding cookie on B carries, and redirects to the authenticating
   origin A: ``A/oauth2/sso/authorize?origin=B&state=STATE``.
2. A accepts ``origin`` only if it is exactly one of ``server.sso_origins`` (anything else is a
   400 page, never a redirect). Without a session on A, A runs the ordinary login first and comes
   back to the same URL. With one, A mints a *grant*: a one-time code of 512 random bits (a
   ticket, sealed like a cookie), stored server-side for at most ``GRANT_TTL`` seconds with the
   central session's cookie value (its sealed ticket: opened with the current secrets when the
   code is redeemed), the origin and a digest of ``state``, then redirects to
   ``B/oauth2/sso/callback?code=CODE&state=STATE``. No token ever travels in a URL.
3. B takes the handoff flow named by the binding cookie and the grant named by the code, each
   atomically (deleted as it is read, so either works once), and accepts only when the flow's
   ``state`` equals the one in the URL, the grant was issued to this origin, for this ``state``,
   less than ``GRANT_TTL`` seconds ago, and the central session still exists. Then B creates its
   own session linked to the central one (:mod:`authproxy.sessions.link`) and sends the browser
   (303, ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store``) to ``rd``.

What that defends: a code lifted from a URL (history, a log, a Referer) is useless without the
browser's binding cookie on B, and is gone once used; a code minted for one origin or one flow
opens nothing elsewhere; an attacker cannot log a victim into the attacker's account on B (login
CSRF) because the victim's browser holds no binding cookie for the attacker's ``state``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from authproxy.sessions.link import load_object, text_field, time_field

GRANT_TTL: Final = 60.0
# the replica that issued a code and the one that redeems it may disagree on the time by this
# much: a code seemingly issued up to this far in the future is accepted (its store entry still
# vanishes GRANT_TTL after it was written)
REPLICA_CLOCK_SKEW: Final = 5.0
GRANT_KEY_PREFIX: Final = "sso-grant:"
HANDOFF_FLOW_KEY_PREFIX: Final = "sso-flow:"
HANDOFF_FLOW_TTL: Final = 600
# new_state() makes 43 characters; anything much longer is not ours
MAX_STATE_LENGTH: Final = 128


def state_digest(state: str) -> str:
    """What a grant keeps of the handoff's ``state`` (the value itself stays with the browser)."""
    return hashlib.sha256(b"authproxy sso state\x00" + state.encode()).hexdigest()


def well_formed_state(state: str | None) -> bool:
    """A ``state`` as :func:`authproxy.oidc.pkce.new_state` makes them (base64url, bounded)."""
    return bool(state) and len(state or "") <= MAX_STATE_LENGTH and all(c.isalnum() or c in "-_" for c in state or "")


@dataclass(frozen=True)
class HandoffFlow:
    """What origin B remembers between sending the browser to A and its coming back."""

    state: str
    origin: str
    redirect: str
    started_at: float

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HandoffFlow:
        raw = load_object(data, "handoff flow")
        return cls(
            state=text_field(raw, "state", "handoff flow"),
            origin=text_field(raw, "origin", "handoff flow"),
            redirect=text_field(raw, "redirect", "handoff flow"),
            started_at=time_field(raw, "started_at", "handoff flow"),
        )


@dataclass(frozen=True)
class HandoffGrant:
    """What a one-time code stands for: a central session, for one origin and one flow.

    ``central`` is the central session's cookie value (its sealed ticket), as a link keeps it.
    """

    central: str = field(repr=False)  # a cookie value: a bearer secret
    origin: str
    state_digest: str
    issued_at: float

    def to_bytes(self) -> bytes:
        fields = {
            "central": self.central,
            "origin": self.origin,
            "state_digest": self.state_digest,
            "issued_at": self.issued_at,
        }
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HandoffGrant:
        raw = load_object(data, "handoff grant")
        return cls(
            central=text_field(raw, "central", "handoff grant"),
            origin=text_field(raw, "origin", "handoff grant"),
            state_digest=text_field(raw, "state_digest", "handoff grant"),
            issued_at=time_field(raw, "issued_at", "handoff grant"),
        )


def grant_refusal(grant: HandoffGrant, flow: HandoffFlow, *, origin: str, state: str, now: float) -> str | None:
    """Why ``grant`` may not complete ``flow`` on ``origin`` for ``state``; None when it may.

    Every comparison of a secret-derived value is constant-time.
    """
    if not hmac.compare_digest(flow.state.encode(), state.encode()):
        return "state does not match this browser's handoff"
    if flow.origin != origin:
        return "handoff started on another origin"
    if grant.origin != origin:
        return "code issued to another origin"
    if not hmac.compare_digest(grant.state_digest.encode(), state_digest(state).encode()):
        return "code issued for another handoff"
    if not -REPLICA_CLOCK_SKEW <= now - grant.issued_at <= GRANT_TTL:
        return "code expired"
    return None


def authorize_url(central: str, prefix: str, *, origin: str, state: str, prompt: str | None = None) -> str:
    """Where origin B sends the browser: the authenticating origin's ``/sso/authorize``.

    ``prompt`` (``login``, from a "sign in with another account" link on B) makes the
    authenticating origin run a new provider login even when it has a session.
    """
    params = {"origin": origin, "state": state} | ({"prompt": prompt} if prompt else {})
    return f"{central}{prefix}/sso/authorize?{urlencode(params)}"


def callback_url(origin: str, prefix: str, *, code: str, state: str) -> str:
    """Where the authenticating origin sends the browser back: B's ``/sso/callback``."""
    return f"{origin}{prefix}/sso/callback?{urlencode({'code': code, 'state': state})}"
