"""Configuration: the YAML schema of SPEC section 2, validated once, every problem at once.

Loading is three pure-ish steps over the parsed YAML tree, each reporting problems by YAML path
(``routes[1].upstream: ...``):

1. ``${VAR}`` / ``${VAR:-default}`` interpolation in every string scalar;
2. ``<key>_file`` secrets replaced by the file's content (a trailing newline is never part of a
   secret; ``session.secrets_file`` holds one secret per line);
3. schema validation (pydantic, unknown keys forbidden) and cross-field rules.

No network I/O happens here: discovery and store pings belong to ``check --online`` and
``/readyz``. Durations are strings such as ``90s``, ``5m``, ``8h``, ``7d`` and become seconds; a
bare number is refused (is ``90`` seconds or minutes?). Problems are worded for operators: an
unknown key gets a "did you mean" suggestion (difflib) among the keys valid at that place.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from authproxy.errors import ConfigError
from authproxy.headers import HOP_BY_HOP, SET_BY_PROXY
from authproxy.logs import without_url_passwords
from authproxy.origins import host_name, normalize_origin, origin_host, within_cookie_domain
from authproxy.sessions.store import MAX_TTL_DAYS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_SECRET_BYTES: Final = 32
# no configuration nests this deep; a YAML alias cycle does, infinitely
MAX_NESTING: Final = 32
# no configuration needs more values than this (a thousand routes of a few dozen each)
MAX_VALUES: Final = 100_000
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
# ``$${`` (a literal ``${``), a reference ``${VAR}`` / ``${VAR:-default}``, or any other ``${``
_ENV_RE: Final = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_HELD_RE: Final = re.compile(r"__authproxy_[0-9a-f]{8}_[0-9]+__")
_HEADER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HOST_RE: Final = re.compile(r"^(\*\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+$")
# control characters: a request can spell them (%0A), but no route is meant for them
_UNSAFE_PATH_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
# the host of an Origin a browser sends (lower case by then): ASCII labels ("_" occurs in real
# names) or an IP literal
_ORIGIN_HOST_RE: Final = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

# keys whose value may come from a file instead: YAML path of the parent -> key
SECRET_FILE_KEYS: Final = {
    ("provider",): ("client_secret",),
    ("session",): ("secrets",),
    ("session", "redis"): ("url",),
}


DURATION_FORM: Final = "90s, 5m, 8h or 7d"


def bare_number_problem(value: object) -> str:
    """The message for a duration written as a bare number."""
    number = str(value).strip()
    return f"{number} has no unit: write the duration with one, such as {number}s, 5m, 8h or 7d"


# durations become store TTLs (idle and absolute timeouts): none may outlast what a store keeps
MAX_DURATION_DAYS: Final = MAX_TTL_DAYS


def parse_duration(value: object) -> float:
    """``"90s"`` -> 90.0. Numbers passed from Python code are seconds; in a configuration file a
    bare number is refused before this runs (``parse_config``), and so is the text ``"90"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as {DURATION_FORM}")
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        raise ValueError(bare_number_problem(value))
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            raise ValueError(f"{value!r} is not a duration (write it as e.g. {DURATION_FORM})")
    except OverflowError as e:  # an integer too large for a float
        raise ValueError("a duration too large to be useful") from e
    # "9999...9s" overflows to inf: not a usable timeout
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION_DAYS * _DURATION_UNITS["d"]:
        raise ValueError(f"a duration cannot be longer than {MAX_DURATION_DAYS}d (100 years)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s (0s would switch the limit off)")
    return seconds


# a timeout that must bound something: 0s is refused rather than read as "no limit"
Timeout = Annotated[Duration, AfterValidator(_positive)]

# a kept form lives in the session store for the length of a login: small by design
DEFAULT_PRESERVE_POST_MAX_BYTES: Final = 64 * 1024
MAX_PRESERVE_POST_BYTES: Final = 1024 * 1024


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    if any(char <= " " or char == "\x7f" for char in value):
        raise ValueError("a URL holds no spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute {' or '.join(schemes)} URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"{value!r} has an invalid port") from e
    if "@" in parts.netloc:
        # never sent anywhere (no Basic credentials are made from it), and printed by check
        raise ValueError("a URL here carries no user name or password")
    return value


def _ascii_host(host: str) -> str:
    """How ``host`` (an internationalised name) is written in ASCII, as far as Python's IDNA can tell."""
    try:
        return f"in its xn-- form ({host.encode('idna').decode('ascii')})"
    except UnicodeError:
        return "in its xn-- form"


def _check_origin_only(value: str, what: str) -> None:
    """No query or fragment, not even an empty one (``https://app.example.com?``)."""
    if "?" in value or "#" in value:
        raise ValueError(f"{what} has no query or fragment")


# one or more path segments of unreserved characters (RFC 3986 section 2.3): no empty segment
# (//host would be another site in a Location), no query, fragment or space
_AUTH_PREFIX_RE: Final = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
# a host name, optionally with the leading dot older specifications wrote (RFC 6265 section 5.2.3)
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_COOKIE_DOMAIN_RE: Final = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*")
# fields whose meaning the proxy or HTTP itself fixes: an identity header of one of these names
# would break the request's framing or routing, or be overwritten
RESERVED_HEADER_NAMES: Final = (
    HOP_BY_HOP | SET_BY_PROXY | frozenset({"host", "content-length", "expect", "cookie", "authorization"})
)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"{value!r} is not host:port")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    cert_file: str
    key_file: str


class RateLimitConfig(_Strict):
    auth_per_minute: int = Field(default=60, ge=1)


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:4180"
    admin_listen: str = "127.0.0.1:9180"
    public_url: str | None = None
    sso_origins: list[str] = Field(default_factory=list)
    auth_prefix: str = "/oauth2"
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    tls: TLSConfig | None = None
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    client_header_timeout: Timeout = 10.0
    shutdown_timeout: Duration = 30.0

    _listen = field_validator("listen", "admin_listen")(_check_listen)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_url(value, ("http", "https"))
        parts = urlsplit(value)
        if parts.path not in ("", "/") or "?" in value or "#" in value:
            raise ValueError("public_url is an origin such as https://app.example.com (no path)")
        return value.rstrip("/")

    @field_validator("sso_origins")
    @classmethod
    def _sso_origins(cls, value: list[str]) -> list[str]:
        origins: list[str] = []
        hosts: set[str] = set()
        for item in value:
            origin = normalize_origin(item)
            if origin is None:
                raise ValueError(
                    f"{item!r} is not an origin such as https://wiki.example.org (scheme and host, no path)"
                )
            host = origin_host(origin)
            if not host.isascii():
                # browsers send the ASCII form in Host (and follow a Location to it): a Unicode
                # name would never be recognised as this origin
                raise ValueError(f"{item!r}: write the host name as browsers send it, {_ascii_host(host)}")
            if host in hosts:
                raise ValueError(f"{host} is listed twice (cookies ignore ports, so one host is one origin)")
            hosts.add(host)
            origins.append(origin)
        return origins

    @field_validator("auth_prefix")
    @classmethod
    def _auth_prefix(cls, value: str) -> str:
        if not _AUTH_PREFIX_RE.fullmatch(value):
            raise ValueError(
                "auth_prefix is a path such as /oauth2 (leading /, no trailing / or empty segment; "
                "letters, digits and -._~)"
            )
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError as e:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from e
        return networks

    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def admin_host_port(self) -> tuple[str, int]:
        host, _, port = self.admin_listen.rpartition(":")
        return host.strip("[]"), int(port)


ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
_KNOWN_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
    | {"HS256", "HS384", "HS512"}
)


class ProviderConfig(_Strict):
    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: str | None = None
    client_auth_method: ClientAuthMethod = "client_secret_basic"
    private_key_file: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email", "offline_access"])
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)
    allowed_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    clock_skew: Duration = 60.0
    post_logout_redirect_uri: str | None = None
    bearer_audiences: list[str] = Field(default_factory=list)
    userinfo: bool = False
    timeout: Timeout = 10.0
    ca_file: str | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        _check_url(value, ("http", "https"))
        _check_origin_only(value, "the issuer")
        # kept exactly as written: discovery must match it character for character (Discovery 4.3)
        return value

    @field_validator("post_logout_redirect_uri")
    @classmethod
    def _logout_uri(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("http", "https"))

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("scopes must include openid")
        return value

    @field_validator("allowed_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is needed")
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("'none' is never an allowed algorithm")
            if alg not in _KNOWN_ALGORITHMS:
                raise ValueError(f"unknown algorithm {alg!r}")
        return value

    @field_validator("extra_authorize_params")
    @classmethod
    def _extra_params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {
            "client_id",
            "redirect_uri",
            "response_type",
            "state",
            "nonce",
            "scope",
            "code_challenge",
            "code_challenge_method",
        }
        clash = sorted(reserved & set(value))
        if clash:
            raise ValueError(f"these parameters are set by authproxy itself: {', '.join(clash)}")
        max_age = value.get("max_age")
        if max_age is not None and not (max_age.isascii() and max_age.isdigit()):
            # Core 1.0 section 3.1.2.1: seconds, a non-negative integer; ID tokens are held to it
            raise ValueError("max_age must be a whole number of seconds")
        return value

    @model_validator(mode="after")
    def _auth_method(self) -> ProviderConfig:
        method = self.client_auth_method
        if method in ("client_secret_basic", "client_secret_post") and not self.client_secret:
            raise ValueError(f"client_auth_method {method} needs client_secret (or client_secret_file)")
        if method == "private_key_jwt" and not self.private_key_file:
            raise ValueError("client_auth_method private_key_jwt needs private_key_file")
        if any(a.startswith("HS") for a in self.allowed_algorithms) and not self.client_secret:
            raise ValueError("HS* algorithms are verified with client_secret, which is not set")
        return self


class SentinelConfig(_Strict):
    master_name: str = Field(min_length=1)
    nodes: list[str] = Field(min_length=1)

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        for node in value:
            _check_listen(node)
        return value


def _redis_url_options(scheme: str) -> frozenset[str]:
    """The query options of a Redis URL that redis-py's asyncio connections for ``scheme`` take:
    the pool's own and the keywords of the connection class it passes the rest to.

    redis-py also parses options only its synchronous connections take (``ssl_validate_ocsp``):
    given to an asyncio connection, they would be a TypeError at its first command."""
    from redis.asyncio import connection

    kinds: dict[str, type] = {"rediss": connection.SSLConnection, "unix": connection.UnixDomainSocketConnection}
    # each class's own constructor keywords: one passes the rest (**kwargs) on to its base, as
    # SSLConnection does socket_keepalive to Connection
    keywords = {
        name
        for cls in kinds.get(scheme, connection.Connection).__mro__
        if issubclass(cls, connection.AbstractConnection) and "__init__" in vars(cls)
        for name in inspect.signature(cls.__init__).parameters
        if name not in ("self", "args", "kwargs")
    }
    return frozenset({"max_connections", "timeout"}) | keywords  # the (blocking) pool's, then the connection's


def _redis_cluster_url_options() -> frozenset[str]:
    """The query options of a Redis URL that redis-py's asyncio cluster client takes: its keywords."""
    from redis.asyncio.cluster import RedisCluster

    return frozenset(inspect.signature(RedisCluster.__init__).parameters) - {"self", "host", "port", "startup_nodes"}


class RedisConfig(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    sentinel: SentinelConfig | None = None
    cluster: bool = False
    key_prefix: str = "authproxy:"
    timeout: Timeout = 2.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the Redis URL names no host")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
        except ValueError as e:
            raise ValueError("the Redis URL's port is not a number in 0-65535") from e
        if parts.scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
            raise ValueError("the Redis URL's path is a database number (redis://host:6379/0)")
        accepted = _redis_url_options(parts.scheme)
        for name, _ in parse_qsl(parts.query, keep_blank_values=True):
            if name not in accepted:
                # it would reach the connection as a keyword it does not take: a TypeError at the
                # first command, every sign-in a 500
                raise ValueError(
                    f"the Redis URL option {name!r} is not one redis-py's {parts.scheme}:// connections take"
                )
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")  # None when the URL itself was refused
        if value and url is not None:
            accepted = _redis_cluster_url_options()
            for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
                if name not in accepted:
                    # the cluster client takes the URL's options as its own keywords: one it does
                    # not take (?timeout=, ?retry_on_timeout=) is a TypeError when the store is made
                    raise ValueError(
                        f"redis-py's cluster client does not take the option {name!r} of session.redis.url"
                    )
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisConfig:
        if self.sentinel is not None and self.cluster:
            raise ValueError("choose either sentinel or cluster, not both")
        return self


class CookieConfig(_Strict):
    name: str = "authproxy_session"
    secure: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"
    domain: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME_RE.match(value) or value.startswith("__"):
            raise ValueError("a cookie name of letters, digits and -_. (the __Host- prefix is added by authproxy)")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not _COOKIE_DOMAIN_RE.fullmatch(value):
            # written into Set-Cookie as it is: anything else would add attributes of its own
            raise ValueError("a domain name such as example.com (letters, digits, - and .)")
        return value

    @model_validator(mode="after")
    def _none_needs_secure(self) -> CookieConfig:
        if self.same_site == "none" and not self.secure:
            raise ValueError("same_site: none requires secure: true (browsers drop such cookies)")
        return self

    @property
    def full_name(self) -> str:
        """The cookie's name on the wire: ``__Host-`` when Secure, host-only, Path=/."""
        return self.host_only_name if self.domain is None else self.name

    @property
    def host_only_name(self) -> str:
        """The name of a cookie kept host-only whatever ``domain`` says: ``__Host-`` when Secure."""
        return f"__Host-{self.name}" if self.secure else self.name


def _check_secret(secret: str) -> str:
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(
            f"a session secret of {size} bytes; at least {MIN_SECRET_BYTES} are needed (authproxy gen-secret makes one)"
        )
    return secret


Secret = Annotated[str, AfterValidator(_check_secret)]


class SessionCacheConfig(_Strict):
    """The in-process cache of decoded sessions (authproxy.sessions.cache); on unless disabled."""

    enabled: bool = True
    max_age: Duration = 10.0
    max_entries: int = Field(default=100_000, ge=1)

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class SessionConfig(_Strict):
    store: Literal["memory", "redis"] = "memory"
    redis: RedisConfig = Field(default_factory=RedisConfig)
    cache: SessionCacheConfig = Field(default_factory=SessionCacheConfig)
    secrets: list[Secret] = Field(default_factory=list)
    cookie: CookieConfig = Field(default_factory=CookieConfig)
    idle_timeout: Duration = 8 * 3600.0
    absolute_timeout: Duration = 7 * 86400.0
    refresh_before_expiry: Duration = 60.0

    @model_validator(mode="after")
    def _timeouts(self) -> SessionConfig:
        if self.idle_timeout <= 0 or self.absolute_timeout <= 0:
            raise ValueError("idle_timeout and absolute_timeout must be positive")
        if self.idle_timeout > self.absolute_timeout:
            raise ValueError("idle_timeout cannot exceed absolute_timeout")
        return self


class ForwardAuthConfig(_Strict):
    pass_access_token: bool = False


class IdentityJWTConfig(_Strict):
    signing_key_file: str | None = None
    ttl: Duration = 60.0

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if value < 1:
            # NumericDates are whole seconds: a shorter ttl would make exp == iat
            raise ValueError("must be at least 1s")
        return value


class MatchConfig(_Strict):
    host: str | None = None
    path_prefix: str = "/"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HOST_RE.match(value):
            raise ValueError(f"{value!r} is not a host name or *.domain wildcard")
        return value.lower()

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path_prefix must start with /")
        # a prefix no request path is meant to start with would leave the traffic it was written
        # for to a weaker route without a word: paths are matched decoded (%2F is a "/"), and
        # paths with //, \, ; or dot segments are refused before any route is chosen
        if "*" in value:
            raise ValueError(f"{value!r}: wildcards are not supported; a prefix covers every path under it")
        if "%" in value:
            raise ValueError(f"{value!r}: write the path decoded, as it is matched (/café, not /caf%C3%A9)")
        if any(character in value for character in "?#;\\") or "//" in value or _UNSAFE_PATH_RE.search(value):
            raise ValueError(f"{value!r} is not a path a request is served under (no ?, #, ;, \\, //, controls)")
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError(f"{value!r}: paths with . or .. segments are refused, so no request is under it")
        return value


class AllowConfig(_Strict):
    emails: list[str] | None = None
    email_domains: list[str] | None = None
    groups: list[str] | None = None
    claims: dict[str, list[str]] | None = None


class RouteConfig(_Strict):
    name: str = Field(min_length=1)
    match: MatchConfig = Field(default_factory=MatchConfig)
    upstream: str
    auth: Literal["required", "optional", "none"] = "required"
    on_unauthenticated: Literal["auto", "redirect", "deny"] = "auto"
    allow: AllowConfig | None = None
    identity_headers: dict[str, str] | None = None
    pass_access_token: bool = False
    pass_id_token: bool = False
    identity_jwt: bool = False
    bearer_tokens: bool = False
    pass_host_header: bool = True
    strip_path_prefix: bool = False
    websocket: bool = True
    timeout: Duration = 60.0
    # cross-origin guard for unsafe methods (authproxy.csrf); absent = off, as before it existed
    csrf_protection: bool = False
    csrf_trusted_origins: list[str] = Field(default_factory=list)
    # keep a browser form POST across a re-login (authproxy.preserved_post)
    preserve_post: bool = False
    preserve_post_max_bytes: int = DEFAULT_PRESERVE_POST_MAX_BYTES

    @field_validator("csrf_trusted_origins")
    @classmethod
    def _trusted_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            normalized = normalize_origin(origin)
            if normalized is None:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
            # the guard compares a browser's Origin exactly: an entry no browser sends never matches
            host = origin_host(normalized)
            if "*" in host:
                raise ValueError(f"{origin!r}: wildcards are not supported; list each origin")
            if not host.isascii():
                raise ValueError(f"{origin!r}: write the host name as browsers send it, {_ascii_host(host)}")
            if not _ORIGIN_HOST_RE.fullmatch(host):
                raise ValueError(f"{origin!r} names no host a browser could send")
        return value

    @field_validator("preserve_post_max_bytes")
    @classmethod
    def _preserve_post_max_bytes(cls, value: int) -> int:
        if not 1 <= value <= MAX_PRESERVE_POST_BYTES:
            raise ValueError(f"must be between 1 and {MAX_PRESERVE_POST_BYTES} bytes")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        _check_url(value, ("http", "https"))
        _check_origin_only(value, "an upstream URL")
        return value

    @field_validator("identity_headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for name in value:
            if not _HEADER_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADER_NAMES:
                raise ValueError(f"{name!r} is a header HTTP or the proxy itself sets; choose another name")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be positive")
        return value


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    provider: ProviderConfig | None = None
    session: SessionConfig = Field(default_factory=SessionConfig)
    forward_auth: ForwardAuthConfig = Field(default_factory=ForwardAuthConfig)
    identity_jwt: IdentityJWTConfig = Field(default_factory=IdentityJWTConfig)
    routes: list[RouteConfig] = Field(default_factory=list)

    @property
    def needs_login(self) -> bool:
        """True when the proxy runs logins: a provider is configured."""
        return self.provider is not None


# what the example Secret (deploy/kubernetes/secret.yaml) holds until real values replace it
_PLACEHOLDER: Final = "REPLACE-with"


def _placeholders(config: Config) -> list[str]:
    """Secrets still holding the example Secret's placeholders: applied unchanged, they would sign
    sessions with a published value and guard Redis with a published password."""
    found = [f"session.secrets[{i}]" for i, secret in enumerate(config.session.secrets) if _PLACEHOLDER in secret]
    if config.provider is not None and _PLACEHOLDER in (config.provider.client_secret or ""):
        found.append("provider.client_secret")
    if _PLACEHOLDER in config.session.redis.url:
        found.append("session.redis.url")
    return [f"{where}: still the example's placeholder ({_PLACEHOLDER}...); put the real value in" for where in found]


def _cross_checks(config: Config) -> list[str]:
    """Rules that span sections; each problem names the YAML path it is about."""
    problems: list[str] = []
    prefix = config.server.auth_prefix
    names: dict[str, int] = {}
    keys: dict[tuple[str | None, str], int] = {}
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if route.name in names:
            problems.append(f"{where}.name: {route.name!r} is also the name of routes[{names[route.name]}]")
        names.setdefault(route.name, i)
        key = (route.match.host, route.match.path_prefix)
        if key in keys:
            problems.append(f"{where}.match: same host and path_prefix as routes[{keys[key]}]")
        keys.setdefault(key, i)
        reserved = route.match.path_prefix.rstrip("/")
        if reserved == prefix or reserved.startswith(prefix + "/"):
            problems.append(f"{where}.match.path_prefix: {prefix} is reserved for authproxy's own endpoints")
        needs_provider = route.auth != "none" or route.bearer_tokens
        if needs_provider and config.provider is None:
            problems.append(f"{where}.auth: auth {route.auth!r} needs a provider section")
        if route.auth == "none" and (route.allow or route.pass_access_token or route.pass_id_token):
            problems.append(f"{where}.auth: a public route (auth: none) cannot have allow rules or pass tokens")
        if route.preserve_post and route.auth != "required":
            problems.append(f"{where}.preserve_post: only an auth: required route sends browsers to a login")
    problems += _placeholders(config)
    domain, public_url = config.session.cookie.domain, config.server.public_url
    if domain is not None and public_url is not None:
        host = origin_host(public_url.lower())
        if not within_cookie_domain(host, domain):
            problems.append(
                f"session.cookie.domain: {domain} does not cover {host}, the host of server.public_url "
                "(browsers would refuse the cookie, and no sign-in could complete)"
            )
    if config.provider is not None:
        if config.server.public_url is None:
            problems.append(
                "server.public_url: required with a provider (redirect_uri = public_url + auth_prefix + /callback)"
            )
        if not config.session.secrets:
            problems.append(
                "session.secrets: at least one secret is required with a provider (authproxy gen-secret makes one)"
            )
    problems += _origin_checks(config)
    if _listeners_overlap(config.server.listen_host_port(), config.server.admin_host_port()):
        problems.append(
            f"server.admin_listen: {config.server.admin_listen} is also where server.listen serves; the admin "
            "endpoints (metrics, health) need an address of their own"
        )
    if not config.routes and config.provider is None:
        # with a provider, zero routes is a forward-auth-only deployment (nginx/Traefik proxy)
        problems.append("routes: at least one route is required (or a provider, for forward-auth only)")
    problems += _missing_files(config)
    return problems


# addresses that listen on every interface (the check compares them, binds nothing)
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "*", ""})  # noqa: S104


def _listeners_overlap(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two listeners' ``(host, port)`` would take the same port (equal or wildcard hosts)."""
    (first_host, first_port), (second_host, second_port) = first, second
    if first_port != second_port:
        return False
    hosts = {first_host.lower(), second_host.lower()}
    return len(hosts) == 1 or bool(hosts & _WILDCARD_HOSTS)


def _origin_checks(config: Config) -> list[str]:
    """``server.sso_origins`` against the authenticating origin, the cookie domain and the routes."""
    server = config.server
    if not server.sso_origins:
        return []
    if server.public_url is None or config.provider is None:
        return ["server.sso_origins: SSO origins share the sign-in of server.public_url, which needs a provider"]
    problems: list[str] = []
    central_host = host_name(server.public_url.split("://", 1)[1])
    domain = config.session.cookie.domain
    satellites = set()
    for i, origin in enumerate(server.sso_origins):
        host = origin_host(origin)
        satellites.add(host)
        if host == central_host:
            problems.append(f"server.sso_origins[{i}]: {host} is the host of server.public_url itself")
        elif within_cookie_domain(host, domain):
            problems.append(
                f"server.sso_origins[{i}]: {host} already shares the session cookie of session.cookie.domain "
                f"{domain}; list only origins outside it"
            )
    for i, route in enumerate(config.routes):
        route_host = route.match.host
        if route_host is None or route_host.startswith("*.") or route.auth == "none":
            continue
        if route_host != central_host and route_host not in satellites and not within_cookie_domain(route_host, domain):
            problems.append(
                f"routes[{i}].match.host: {route_host} is neither the host of server.public_url nor in "
                "server.sso_origins, so nobody could sign in there; add its origin to server.sso_origins"
            )
    return problems


def _missing_files(config: Config) -> list[str]:
    """Key and certificate files named by the config must be readable files."""
    files: list[tuple[str, str | None]] = [("identity_jwt.signing_key_file", config.identity_jwt.signing_key_file)]
    if config.server.tls is not None:
        files += [
            ("server.tls.cert_file", config.server.tls.cert_file),
            ("server.tls.key_file", config.server.tls.key_file),
        ]
    if config.provider is not None:
        files += [
            ("provider.private_key_file", config.provider.private_key_file),
            ("provider.ca_file", config.provider.ca_file),
        ]
    return [
        f"{where}: {path} is not a readable file"
        for where, path in files
        if path is not None and not (Path(path).is_file() and os.access(path, os.R_OK))
    ]


# ---------------------------------------------------------------- tree preprocessing


def _path_str(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _walk(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def hold_references(text: str) -> tuple[str, dict[str, str]]:
    """``text`` with each ``${VAR}`` or ``${VAR:-default}`` replaced by a placeholder YAML reads as
    plain text everywhere, and the references by placeholder.

    Inside YAML's flow collections (``[${A}]``, ``{host: ${H}}``) ``{`` and ``}`` are syntax, so
    the file is parsed with placeholders and the references are put back into the values
    (``interpolate_env``): a variable is replaced anywhere in the file, and its value is never
    read as YAML. ``$${`` and anything else that is not a reference on one line stay as written.
    """
    held: dict[str, str] = {}
    tag = secrets.token_hex(4)

    def hold(match: re.Match[str]) -> str:
        reference = match.group(0)
        if match.group(1) is None or "\n" in reference:
            return reference
        placeholder = f"__authproxy_{tag}_{len(held)}__"
        held[placeholder] = reference
        return placeholder

    return _ENV_RE.sub(hold, text), held


def interpolate_env(
    node: Any,
    env: Mapping[str, str],
    problems: list[str],
    path: tuple[str | int, ...] = (),
    held: Mapping[str, str] | None = None,
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string scalar and key (after putting
    back what ``held`` holds); ``$${`` is a literal ``${``.

    As in the shell, ``${VAR:-default}`` takes the default when VAR is unset or empty. Any other
    ``${`` (``${VAR-x}``, ``${VAR:?x}``, a nested reference, an unclosed one) is a problem rather
    than text kept as it is: such a value is most often a secret that was meant to be filled in.
    """
    if isinstance(node, dict):
        mapping: dict[Any, Any] = {}
        for k, v in node.items():
            # a key may be written with a reference too (extra_authorize_params, allow.claims)
            key = interpolate_env(k, env, problems, (*path, str(k)), held) if isinstance(k, str) else k
            if key in mapping:
                problems.append(
                    f"{_path_str((*path, str(k)))}: the same key as another once its variables are replaced"
                )
            mapping[key] = interpolate_env(v, env, problems, (*path, str(key)), held)
        return mapping
    if isinstance(node, list):
        return [interpolate_env(v, env, problems, (*path, i), held) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if held:
        node = _restored(node, held)
    if "${" not in node:
        return node
    where = _path_str(path)

    def replace(match: re.Match[str]) -> str:
        text, name, default = match.group(0), match.group(1), match.group(2)
        if text == "$${":
            return "${"
        if name is None or (default is not None and "${" in default):
            # the value itself is not repeated: it may be a secret
            problem = f"{where}: a ${{ that is not ${{VAR}} or ${{VAR:-default}} (write $${{ for a literal ${{)"
            if problem not in problems:
                problems.append(problem)
            return text
        value = env.get(name)
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        problems.append(f"{where}: environment variable {name} is not set (and has no ${{{name}:-default}})")
        return ""

    return _ENV_RE.sub(replace, node)


def _read_secret_file(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def resolve_secret_files(tree: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Replace ``<key>_file`` entries with the file's content (``secrets_file``: one per line)."""
    for parent_path, (key,) in SECRET_FILE_KEYS.items():
        parent: Any = tree
        for part in parent_path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or f"{key}_file" not in parent:
            continue
        where = _path_str((*parent_path, f"{key}_file"))
        file_path = parent.pop(f"{key}_file")
        if key in parent:
            problems.append(f"{where}: give either {key} or {key}_file, not both")
            continue
        if not isinstance(file_path, str):
            problems.append(f"{where}: expected a file path")
            continue
        try:
            content = _read_secret_file(file_path)
        except OSError as e:
            problems.append(f"{where}: cannot read {file_path}: {e.strerror or e}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{where}: {file_path} is not UTF-8 text")
            continue
        except ValueError as e:  # e.g. a NUL byte in the path
            problems.append(f"{where}: {file_path!r} is not a usable path: {e}")
            continue
        if key == "secrets":
            parent[key] = [line.rstrip("\r") for line in content.split("\n") if line.strip()]
        else:
            parent[key] = content.rstrip("\r\n")
    return tree


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None`` or ``list[Model]``; None for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        model = _inner_model(argument)
        if model is not None:
            return model
    return None


def _keys_at(path: tuple[str | int, ...]) -> list[str]:
    """The keys valid in the mapping at ``path`` (its ``<key>_file`` spellings included)."""
    model: type[BaseModel] | None = Config
    for part in path:
        if isinstance(part, int):
            continue  # a list item: the item's model was chosen by its field already
        field = model.model_fields.get(part) if model is not None else None
        model = _inner_model(field.annotation) if field is not None else None
        if model is None:
            return []
    assert model is not None
    keys = list(model.model_fields)
    for key in SECRET_FILE_KEYS.get(tuple(str(p) for p in path if isinstance(p, str)), ()):
        keys.append(f"{key}_file")
    return keys


def _is_duration(field: Any) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in field.metadata)


def bare_number_durations(node: Any, model: type[BaseModel] = Config, path: tuple[str | int, ...] = ()) -> list[str]:
    """A problem for each duration the file gives as a bare number: is ``90`` seconds or minutes?"""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    for key, value in node.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        where = (*path, str(key))
        if _is_duration(field):
            if isinstance(value, int | float) and not isinstance(value, bool):
                problems.append(f"{_path_str(where)}: {bare_number_problem(value)}")
            continue
        inner = _inner_model(field.annotation)
        if inner is None:
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            problems += bare_number_durations(item, inner, where if index is None else (*where, index))
    return problems


def unknown_key_message(path: tuple[str | int, ...]) -> str:
    """The message for an unknown key at ``path``, with the closest valid key when one is close."""
    key = str(path[-1]) if path else ""
    message = "unknown key"
    close = difflib.get_close_matches(key, _keys_at(path[:-1]), n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message + "; unknown keys are refused so that a typo cannot silently disable a setting"


# pydantic's wording for a few common errors, put the way an operator reads a config file
_PLAIN_MESSAGES: Final = {
    "missing": "required, but not given",
    "dict_type": "expected a mapping of keys (key: value)",
    "model_type": "expected a mapping of keys (key: value)",
    "list_type": "expected a list ([a, b] or one '- item' per line)",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a text value",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
}


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = unknown_key_message(loc)
        elif item["type"] in _PLAIN_MESSAGES:
            message = _PLAIN_MESSAGES[item["type"]]
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif message.startswith("Input should be "):
            message = "expected " + message.removeprefix("Input should be ")
        # validators quote the value they refuse; a URL's password must not reach the terminal
        problems.append(f"{_path_str(loc)}: {without_url_passwords(message)}")
    return problems


def _nesting_exceeds(node: Any, limit: int) -> bool:
    """Whether ``node`` nests mappings and lists more than ``limit`` levels deep."""
    if limit < 0:
        return True
    if isinstance(node, dict):
        return any(_nesting_exceeds(v, limit - 1) for v in node.values())
    if isinstance(node, list):
        return any(_nesting_exceeds(v, limit - 1) for v in node)
    return False


def _expands_beyond(node: Any, budget: int) -> bool:
    """Whether ``node``, its aliases expanded, holds more than ``budget`` values: YAML aliases
    nested a few levels deep ("billion laughs") make a short file expand beyond any memory."""
    stack = [node]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        current = stack.pop()
        if isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return False


def duplicate_keys(node: yaml.Node | None) -> list[str]:
    """A problem for each key given twice in one mapping of the composed YAML ``node``.

    YAML parsers keep the last of two equal keys and drop the first without a word, so a second
    ``session:`` section would silently discard every setting of the first. Merge keys (``<<``)
    are not counted: a key given beside a merge is meant to override it.
    """
    problems: list[str] = []
    seen: set[int] = set()  # an alias may repeat a node, or (a: &x [*x]) contain itself

    def walk(current: yaml.Node, path: tuple[str | int, ...]) -> None:
        if id(current) in seen or len(path) > MAX_NESTING:
            return
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, (*path, index))
        elif isinstance(current, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is None or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line + 1
                if key in first_lines:
                    problems.append(
                        f"{_path_str((*path, key))}: given twice (lines {first_lines[key]} and {line}); "
                        "the later one would silently replace the earlier"
                    )
                else:
                    first_lines[key] = line
                walk(value_node, (*path, key))

    if node is not None:
        walk(node, ())
    return problems


def _load_yaml(text: str) -> Any:
    """The YAML document ``text`` as Python data; ConfigError when a mapping repeats a key."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        problems = duplicate_keys(node)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _yaml_problem(held_text: str, held: Mapping[str, str], error: yaml.YAMLError) -> str:
    """The syntax error, placed on the file as written (its columns, not the placeholders')."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"(file): not valid YAML: {getattr(error, 'problem', None) or error}"
    column = mark.column
    lines = held_text.split("\n")
    if mark.line < len(lines):
        for placeholder in _HELD_RE.finditer(lines[mark.line][: mark.column]):
            column += len(held.get(placeholder.group(0), placeholder.group(0))) - len(placeholder.group(0))
    return f"line {mark.line + 1}, column {column + 1}: not valid YAML: {getattr(error, 'problem', None) or error}"


def _load_tree(text: str) -> tuple[Any, dict[str, str]]:
    """The YAML document and the references held while parsing it (see ``hold_references``).

    The file is parsed as written first, so quoted values keep YAML's own escapes whole; only a
    file YAML refuses so (a reference inside a flow collection) is parsed with placeholders.
    """
    try:
        try:
            return _load_yaml(text), {}
        except yaml.YAMLError as as_written:
            held_text, held = hold_references(text)
            if not held:
                raise ConfigError([_yaml_problem(text, held, as_written)]) from as_written
            try:
                return _load_yaml(held_text), held
            except yaml.YAMLError as e:
                raise ConfigError([_yaml_problem(held_text, held, e)]) from e
            except ConfigError as e:  # a key given twice, named as the file writes it
                raise ConfigError([_restored(p, held) for p in e.problems]) from e
    except (ValueError, RecursionError) as e:
        # PyYAML's constructors raise plain ValueError (a date such as 2001-13-01, an integer of
        # more than 4300 digits), and its recursive parser overflows on very deep nesting
        raise ConfigError([f"(file): not valid YAML: {e or 'nested too deeply'}"]) from e


def parse_config(text: str, env: Mapping[str, str] | None = None, *, workers: int = 1) -> Config:
    """Parse and validate configuration text; raise ConfigError with every problem."""
    env = os.environ if env is None else env
    tree, held = _load_tree(text)
    try:
        return _validated(tree, env, held, workers)
    except ConfigError as e:
        if not held:
            raise
        # problems name what the file says, never a placeholder
        raise ConfigError([_restored(p, held) for p in e.problems]) from e


def _restored(text: str, held: Mapping[str, str]) -> str:
    """``text`` with each placeholder of ``hold_references`` back to the reference it holds."""
    return _HELD_RE.sub(lambda m: held.get(m.group(0), m.group(0)), text)


def _validated(tree: Any, env: Mapping[str, str], held: Mapping[str, str], workers: int) -> Config:
    if _expands_beyond(tree, MAX_VALUES):
        # first: every later step walks the tree with its aliases expanded (alias cycles never end)
        raise ConfigError(
            [f"(file): more than {MAX_VALUES} values once YAML aliases are expanded (or an alias refers to itself)"]
        )
    if _nesting_exceeds(tree, MAX_NESTING):
        raise ConfigError([f"(file): nested deeper than {MAX_NESTING} levels"])
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(["(top level): expected a mapping of sections (server, provider, session, routes, ...)"])
    problems: list[str] = []
    tree = interpolate_env(tree, env, problems, held=held)
    tree = resolve_secret_files(tree, problems)
    problems += bare_number_durations(tree)
    try:
        config = Config.model_validate(tree)
    except ValidationError as e:
        # a path that already has an interpolation problem needs no second, derived message
        reported = {p.split(": ", 1)[0] for p in problems}
        derived = [p for p in _pydantic_problems(e) if p.split(": ", 1)[0] not in reported]
        raise ConfigError(problems + derived) from e
    problems += _cross_checks(config)
    if workers > 1 and config.session.store == "memory":
        problems.append(
            f"session.store: the memory store lives in one process; with --workers {workers} each "
            "worker would see different sessions. Use store: redis, or run one worker"
        )
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *, workers: int = 1) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"(file): cannot read {path}: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"(file): {path} is not UTF-8 text (byte {e.start})"]) from e
    return parse_config(text, env, workers=workers)


def config_warnings(config: Config) -> list[str]:
    """Legal but risky settings, printed at start and by ``check``."""
    warnings = []
    if config.provider and config.provider.issuer.startswith("http://"):
        warnings.append("provider.issuer: plain http issuer; acceptable only for development or in-cluster providers")
    if config.needs_login and not config.session.cookie.secure:
        warnings.append("session.cookie.secure: false; cookies travel over plain http (development only)")
    return warnings


def summarize(config: Config) -> str:
    """The one-line summary ``authproxy check`` prints for a valid file."""
    routes = len(config.routes)
    provider = config.provider.issuer if config.provider else "none"
    return (
        f"ok: {routes} route{'s' if routes != 1 else ''}, provider {provider}, "
        f"session store {config.session.store}, listening on {config.server.listen}"
    )
