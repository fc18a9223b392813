"""The demo users of the development provider (``authproxy demo``); development only.

Their claims follow OpenID Connect Core 1.0 section 5.1 (standard claims) plus ``groups``, the
de-facto claim most providers (Keycloak, Dex, Okta) use for group membership. The three users are
chosen so that every kind of ``allow`` rule has someone it admits and someone it refuses: alice is
in two groups, bob in one, carol in none and on another e-mail domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class DemoUser:
    """One account of the development provider; ``username`` is also its ``sub``."""

    username: str
    email: str
    name: str
    groups: tuple[str, ...] = ()
    email_verified: bool = True

    @property
    def sub(self) -> str:
        return self.username

    def claims(self) -> dict[str, Any]:
        """Every identity claim this user has (the caller filters by scope)."""
        return {
            "sub": self.sub,
            "email": self.email,
            "email_verified": self.email_verified,
            "name": self.name,
            "preferred_username": self.username,
            "groups": list(self.groups),
        }


DEMO_USERS: Final[tuple[DemoUser, ...]] = (
    DemoUser("alice", "alice@example.com", "Alice Admin", ("admins", "developers")),
    DemoUser("bob", "bob@example.com", "Bob Builder", ("developers",)),
    DemoUser("carol", "carol@partner.example.org", "Carol Contractor", ()),
)


def find_user(users: Iterable[DemoUser], username: str) -> DemoUser | None:
    """The user called ``username``, or None."""
    return next((user for user in users if user.username == username), None)
