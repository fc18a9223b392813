"""The public origins one proxy serves: the authenticating origin and the SSO origins around it.

``server.public_url`` is the *authenticating origin*: the provider's ``redirect_uri`` is on it
and the sign-in ("central") session lives in its cookie. ``server.sso_origins`` lists further
origins, on other registrable domains, whose routes share that sign-in through the handoff of
:mod:`authproxy.oidc.sso`: each gets a session cookie of its own, linked to the central session.

A request's origin is told from its ``Host`` by host name alone (ports never count, as for
cookies, RFC 6265 section 8.5): an SSO origin when the name is one of theirs, else the
authenticating origin, which keeps a single-domain deployment (and a front proxy that rewrites
``Host``) working exactly as before. Sign-in is started only for hosts the configuration knows
(:meth:`Origins.can_sign_in`), and a handoff is sent only to an origin in the list: a request
naming any other is refused, never redirected (the open-redirect class of Pomerium's
CVE-2021-29651).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from authproxy.routing import normalize_host

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None if not an origin.

    An origin has no user info, path (other than ``/``), query or fragment (RFC 6454 section 4).
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def host_name(host: str | None) -> str:
    """The lower-case host name of a ``Host`` header value, without its port or the root's dot
    (``wiki.example.org.`` is ``wiki.example.org``): the name routes are chosen by, so an origin
    is always the one its routes belong to."""
    return normalize_host(host)


def origin_host(origin: str) -> str:
    """The host name of an origin (``https://wiki.example.org:8443`` -> ``wiki.example.org``)."""
    return host_name(origin.split("://", 1)[1])


def within_cookie_domain(host: str, domain: str | None) -> bool:
    """Whether a cookie with ``Domain=domain`` is sent to ``host`` (RFC 6265 section 5.1.3)."""
    if not domain:
        return False
    domain = domain.lower().lstrip(".")
    return host == domain or host.endswith("." + domain)


@dataclass(frozen=True)
class Origins:
    """The authenticating origin and the SSO origins, as configured."""

    central: str
    satellites: Mapping[str, str] = field(default_factory=dict)  # host name -> origin
    cookie_domain: str | None = None

    @classmethod
    def build(cls, public_url: str, sso_origins: Iterable[str] = (), cookie_domain: str | None = None) -> Origins:
        central = normalize_origin(public_url)
        if central is None:
            raise ValueError(f"{public_url!r} is not an origin")
        satellites: dict[str, str] = {}
        for value in sso_origins:
            origin = normalize_origin(value)
            if origin is None:
                raise ValueError(f"{value!r} is not an origin")
            satellites[origin_host(origin)] = origin
        return cls(central, satellites, cookie_domain)

    @property
    def central_host(self) -> str:
        return origin_host(self.central)

    @property
    def several(self) -> bool:
        """True when SSO origins are configured (the handoff endpoints are served)."""
        return bool(self.satellites)

    def satellite_of(self, host: str | None) -> str | None:
        """The SSO origin a request's ``Host`` belongs to, or None (the authenticating origin)."""
        if not self.satellites:
            return None
        return self.satellites.get(host_name(host))

    def origin_of(self, host: str | None) -> str:
        """The public origin a request's ``Host`` belongs to."""
        return self.satellite_of(host) or self.central

    def configured_satellite(self, value: str | None) -> str | None:
        """``value`` when it names one of the SSO origins exactly (after normalising), else None."""
        if not value:
            return None
        origin = normalize_origin(value)
        if origin is None or self.satellites.get(origin_host(origin)) != origin:
            return None
        return origin

    def can_sign_in(self, host: str | None) -> bool:
        """Whether a sign-in may start on ``host``.

        With one origin, always (a front proxy may rewrite ``Host``; the cookie still lands on the
        address the browser used). With several, only on a configured origin or a host that the
        authenticating origin's cookie domain covers: anything else could never complete.
        """
        if not self.satellites:
            return True
        name = host_name(host)
        return name == self.central_host or name in self.satellites or within_cookie_domain(name, self.cookie_domain)
