"""Access policy: a route's ``allow`` rules and the forward-auth query (SPEC sections 2 and 3).

A rule is compiled once per route (:func:`compile_allow`) into a frozen :class:`Policy` whose
:meth:`Policy.allows` runs on every request against the verified claims of the session or
bearer token (OpenID Connect Core 1.0 section 5.1 names the claims).

Semantics, chosen to match what an operator migrating from oauth2-proxy expects:

- No ``allow`` at all: any authenticated user. Every kind that *is* listed must pass (AND across
  kinds); within a kind any one listed value suffices (OR).
- A kind listed with no values (``groups: []``) admits nobody: an empty list is a set of
  acceptable values that happens to be empty, and failing closed is the safe reading of a
  half-edited file. ``claims: {}`` lists no claim conditions and so adds none.
- ``emails``: the ``email`` claim, which must be a string, equals a listed address, ignoring
  ASCII case only. RFC 5321 section 2.4 lets local parts be case-sensitive, but providers and
  oauth2-proxy treat addresses case-insensitively; Unicode case folding is avoided on purpose
  because it maps distinct addresses onto each other (``"\\u212a".lower() == "k"``).
- ``email_domains``: the part after the last ``@`` equals a listed domain, ASCII case-insensitive
  (RFC 4343). Exact: no subdomains, no wildcards, ``*`` is not special (leave the kind out to
  admit every domain). ``sub.example.com`` must be listed itself.
- Unverified email: when the ``email_verified`` claim is present and is anything but ``true``
  (or the string ``"true"``, which some providers send), the email and email_domains rules
  fail. oauth2-proxy refuses unverified emails the same way; an absent claim passes because
  several providers never send it.
- ``groups``: the ``groups`` claim (a string or a list) shares at least one value with the rule.
- ``claims``: for every listed claim name, the claim's value (string, number, boolean or a list
  of those) shares at least one value with the rule, compared as strings: booleans as ``true``
  / ``false`` (JSON spelling), integral numbers without a fraction. Groups and claim values are
  case-sensitive: group names and IDs are identifiers, not addresses.
- A missing or malformed claim fails its kind; nothing is coerced from nested objects.

``/oauth2/auth?allowed_groups=a,b&allowed_emails=x`` (SPEC section 3) uses the same email and
group rules through :func:`forward_auth_allowed`; there an empty or absent parameter means no
restriction, as in oauth2-proxy.

Pure: values in, values out; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from authproxy.config import AllowConfig

# str.lower() folds non-ASCII letters too (KELVIN SIGN -> k): only A-Z may be folded
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(value: str) -> str:
    return value.translate(_ASCII_LOWER)


def _scalar_string(value: object) -> str | None:
    """One claim value as the string a YAML rule would spell it, or None if it is not a scalar."""
    # bool before int: True is an int in Python but "true" in JSON
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # JSON has one number type: 5.0 from a provider is the 5 of the rule
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _claim_strings(value: object) -> frozenset[str]:
    """The values of one claim as strings: a scalar gives one, a flat list gives its scalars."""
    if isinstance(value, list | tuple):
        return frozenset(s for item in value if (s := _scalar_string(item)) is not None)
    single = _scalar_string(value)
    return frozenset() if single is None else frozenset((single,))


def _email_is_usable(claims: Mapping[str, Any]) -> str | None:
    """The ``email`` claim, ASCII-lowercased, when present, a string and not marked unverified."""
    email = claims.get("email")
    if not isinstance(email, str) or not email:
        return None
    if "email_verified" in claims:
        verified = claims["email_verified"]
        # identity checks, not ==: 1 == True in Python, and only JSON true (or "true") means verified
        if verified is not True and verified != "true":
            return None
    return _ascii_lower(email)


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled ``allow`` rule; ``None`` for a kind means the kind is not checked."""

    emails: frozenset[str] | None = None
    email_domains: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    claims: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def unrestricted(self) -> bool:
        """True when every authenticated user is allowed."""
        return self.emails is None and self.email_domains is None and self.groups is None and not self.claims

    def allows(self, claims: Mapping[str, Any]) -> bool:
        """Whether the user with these verified claims passes every listed kind."""
        if self.emails is not None or self.email_domains is not None:
            email = _email_is_usable(claims)
            if email is None:
                return False
            if self.emails is not None and email not in self.emails:
                return False
            # rpartition: "a@b"@example.com is legal (RFC 5321 quoted local part); the domain
            # is always after the last @
            if self.email_domains is not None:
                local, at, domain = email.rpartition("@")
                # no @ at all leaves rpartition's whole string in `domain`: not an address
                if not (at and local) or domain not in self.email_domains:
                    return False
        if self.groups is not None and self.groups.isdisjoint(_claim_strings(claims.get("groups"))):
            return False
        return all(
            name in claims and not wanted.isdisjoint(_claim_strings(claims[name])) for name, wanted in self.claims
        )

    def refusal(self, claims: Mapping[str, Any]) -> Refusal | None:
        """Which listed kind refuses these claims (the first, in the order ``allows`` checks), or None.

        The requirement names what the rule asks for without echoing other users' data: the
        allowed email addresses are never listed (they are other people's), domains, groups and
        claim values are (they are the rule, not anyone's identity).
        """
        if self.emails is not None or self.email_domains is not None:
            email = _email_is_usable(claims)
            if email is None:
                return Refusal("email", "requires a verified email address")
            if self.emails is not None and email not in self.emails:
                return Refusal("emails", "requires one of the email addresses this application allows")
            if self.email_domains is not None:
                local, at, domain = email.rpartition("@")
                if not (at and local) or domain not in self.email_domains:
                    return Refusal("email_domains", f"requires an email address at {_one_of(self.email_domains)}")
        if self.groups is not None and self.groups.isdisjoint(_claim_strings(claims.get("groups"))):
            if not self.groups:
                return Refusal("groups", "admits no group")
            return Refusal("groups", f"requires group {_one_of(self.groups)}")
        for name, wanted in self.claims:
            if name not in claims or wanted.isdisjoint(_claim_strings(claims[name])):
                if not wanted:
                    return Refusal("claims", f"admits no value of claim {name}")
                return Refusal("claims", f"requires claim {name} to be {_one_of(wanted)}")
        return None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The allow kind that refused a user, and what it requires, in words for the 403 page."""

    kind: str
    requirement: str


def _one_of(values: frozenset[str]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "nothing (the list is empty)"
    return ordered[0] if len(ordered) == 1 else "one of " + ", ".join(ordered)


ALLOW_ANY: Final = Policy()


def _lowered(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(_ascii_lower(v) for v in values)


def compile_allow(allow: AllowConfig | None) -> Policy:
    """Compile a route's ``allow`` section once; ``None`` allows any authenticated user."""
    if allow is None:
        return ALLOW_ANY
    return Policy(
        emails=_lowered(allow.emails),
        email_domains=_lowered(allow.email_domains),
        groups=None if allow.groups is None else frozenset(allow.groups),
        claims=tuple((name, frozenset(values)) for name, values in sorted((allow.claims or {}).items())),
    )


def is_allowed(allow: AllowConfig | None, claims: Mapping[str, Any]) -> bool:
    """One-off check of ``allow`` against ``claims``; per-request code should keep a compiled Policy."""
    return compile_allow(allow).allows(claims)


def parse_list(value: str | None) -> list[str] | None:
    """A comma-separated query value as a list; None when absent or empty (no restriction).

    Whitespace around entries and empty entries are dropped (``"a, b,,"`` -> ``["a", "b"]``).
    For a repeated parameter pass the values joined with commas.
    """
    if value is None:
        return None
    items = [item.strip() for item in value.split(",")]
    return [item for item in items if item] or None


def forward_auth_allowed(
    claims: Mapping[str, Any], allowed_groups: list[str] | None, allowed_emails: list[str] | None
) -> bool:
    """The ``/oauth2/auth`` check: both given lists must be met; an empty or absent one is ignored."""
    policy = Policy(
        emails=_lowered(allowed_emails) if allowed_emails else None,
        groups=frozenset(allowed_groups) if allowed_groups else None,
    )
    return policy.allows(claims)
