"""Linked sessions: an SSO origin's cookie names a link to the central session (pure).

On an SSO origin (:mod:`authproxy.origins`) the session cookie carries a ticket of its own,
like any session cookie, but the store holds under it only a *link*: which central session it
stands for and which origin it was issued to, sealed under the link's own key like every record
(:mod:`authproxy.sessions.record`). Loading a linked session reads the link, then the central
session; so ending the central session (sign-out on any origin, back-channel logout, a refused
refresh) ends every origin's session at once, on every replica, and refresh, idle expiry and
identity are the central session's. A link is honoured only on the origin it was issued to, so a
cookie lifted from one domain opens nothing on another.

A link keeps the central session's cookie value (its ticket as sealed with a session secret),
never the bare ticket, and it is opened with the current ``session.secrets`` whenever the link
is used: removing the secret that sealed the central cookie ends the central session's links as
it ends the central cookie.

Links live in their own key space (``link:``), apart from sessions: a link's ticket never opens
a session on the authenticating origin, and a central ticket is never taken for a link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

LINK_KEY_PREFIX: Final = "link:"


def load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"a {what} is not JSON") from e
    if not isinstance(raw, dict):
        raise ValueError(f"a {what} is not a JSON object")
    return raw


def text_field(raw: dict[str, Any], name: str, what: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} field {name}: expected a string")
    return value


def time_field(raw: dict[str, Any], name: str, what: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} field {name}: expected a number")
    return float(value)


@dataclass(frozen=True)
class SessionLink:
    """An SSO origin's session: the central session it stands for and the origin it belongs to.

    ``central`` is the central session's cookie value (its sealed ticket), opened anew with the
    current secrets whenever the link is used.
    """

    central: str = field(repr=False)  # a cookie value: a bearer secret
    origin: str
    created_at: float

    def to_bytes(self) -> bytes:
        fields = {"central": self.central, "origin": self.origin, "created_at": self.created_at}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionLink:
        raw = load_object(data, "session link")
        return cls(
            central=text_field(raw, "central", "session link"),
            origin=text_field(raw, "origin", "session link"),
            created_at=time_field(raw, "created_at", "session link"),
        )
