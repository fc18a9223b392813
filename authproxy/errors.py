"""The one exception tree of authproxy.

Third-party exceptions (aiohttp, redis, PyJWT, pydantic) are wrapped at the boundary of the
module that calls them and never travel further. Each kind maps to one HTTP status in
``authproxy.pages.STATUS_BY_ERROR``.

    AuthproxyError
     +-- ConfigError            invalid configuration; carries every problem (exit 2)
     +-- ListenError            a listener cannot bind (port in use, permission); names the key (exit 1)
     +-- ProviderError          anything wrong on the OpenID provider's side
     |    +-- ProviderUnavailable     unreachable, timed out, 5xx, unparsable answer  (503)
     |    +-- TokenEndpointError      an OAuth error answer, e.g. invalid_grant       (401/400)
     +-- TokenInvalid           an ID, logout or bearer token failed a check          (401/400)
     |    +-- UnknownKeyId            no key in the JWKS for the token's kid (refetch once)
     +-- FlowError              login flow state missing, foreign, expired or reused  (400)
     +-- SessionEnded           the session cannot continue (invalid_grant, expired tokens):
     |                          deleted; treated as "no session" (login / 401)
     +-- StoreError             the session store failed
     |    +-- StoreUnavailable        unreachable or timed out                         (503)
     +-- UpstreamError          the proxied application failed
          +-- UpstreamUnavailable     refused or reset                                 (502)
          +-- UpstreamTimeout         exceeded the route timeout                       (504)
"""

from __future__ import annotations

from collections.abc import Sequence


class AuthproxyError(Exception):
    """Base of every error authproxy raises on purpose."""


class ConfigError(AuthproxyError):
    """The configuration is invalid; ``problems`` holds one ``path: message`` line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ListenError(AuthproxyError):
    """A listener could not be opened; the message names the config key, address and cause in words."""

    def __init__(self, key: str, address: str, cause: str) -> None:
        self.key = key
        self.address = address
        self.cause = cause
        super().__init__(f"{key}: cannot listen on {address}: {cause}")


class ProviderError(AuthproxyError):
    """Something went wrong talking to the OpenID provider."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, timed out, or answered 5xx or garbage."""


class TokenEndpointError(ProviderError):
    """The provider answered with an OAuth 2.0 error (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class TokenInvalid(AuthproxyError):
    """A token failed validation; ``reason`` is short, safe to log, and names the check."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnknownKeyId(TokenInvalid):
    """The token names a ``kid`` the cached JWKS does not hold."""


class FlowError(AuthproxyError):
    """The login flow state is missing, unknown, expired, reused or from another browser."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SessionEnded(AuthproxyError):
    """The session was ended (refresh refused, tokens expired); the request has no session."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreError(AuthproxyError):
    """The session store failed."""


class StoreUnavailable(StoreError):
    """The session store is unreachable or timed out."""


class UpstreamError(AuthproxyError):
    """The upstream application failed."""


class UpstreamUnavailable(UpstreamError):
    """The upstream refused or reset the connection."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the route timeout."""
