"""Examples a newcomer copies must work (issue: newcomer experience and deployment).

- ``docs/configuration.md`` is generated from the schema (``authproxy.config.Config``'s pydantic
  fields: names, types, defaults) plus the descriptions and examples kept in ``KEYS`` below; the
  test fails when the file and the schema drift apart. Regenerate after a schema change with

      .venv/bin/python -m tests.test_examples

- Every example configuration passes ``authproxy check``: the files in ``config/`` and
  ``deploy/``, the ConfigMap of ``deploy/kubernetes/`` (checked as the pod would see it: the
  Secret's keys written as the files the Deployment mounts, the container's environment), and
  every fenced ``yaml`` block of README.md and ``docs/``. A block without both ``provider`` and
  ``routes`` is an excerpt: it is merged over a small complete configuration first. Blocks that are Kubernetes
  objects (``apiVersion`` and ``kind``) are validated as manifests instead.
- The Kubernetes manifests validate against the Kubernetes OpenAPI schemas, offline and strict
  (unknown fields are errors), with ``kubernetes-validate`` from PyPI; and they agree with each
  other and with the configuration (ports, names, keys, mounts).
- ``deploy/compose.yaml`` agrees with ``deploy/authproxy.yaml`` and the Keycloak realm it imports.
  No container runtime runs here, so this is a consistency check, not a trial run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel, BeforeValidator, TypeAdapter
from pydantic.fields import FieldInfo

from authproxy import cli
from authproxy.app import stop_bound
from authproxy.config import SECRET_FILE_KEYS, Config, interpolate_env, parse_config, parse_duration
from authproxy.errors import ConfigError

ROOT: Final = Path(__file__).resolve().parents[1]
CONFIGURATION_MD: Final = ROOT / "docs" / "configuration.md"
KUBERNETES_DIR: Final = ROOT / "deploy" / "kubernetes"
COMPOSE_FILE: Final = ROOT / "deploy" / "compose.yaml"
DOCUMENTS: Final = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# the oldest Kubernetes release we claim to support, and the newest the validator knows
KUBERNETES_VERSIONS: Final = ("1.28", kubernetes_validate.latest_version())
# what examples read with ${VAR} and no default, as an operator would export them
EXAMPLE_ENV: Final = {
    "SSO_CLIENT_ID": "example-client",
    "SSO_CLIENT_SECRET": "example-client-secret",
    "AUTHPROXY_SESSION_SECRET": "example-session-secret-0123456789abcdefghij",
}
# excerpts in the docs are merged over this (lists and scalars replace, mappings merge)
EXCERPT_BASE: Final[Mapping[str, Any]] = {
    "server": {"public_url": "https://app.example.com"},
    "provider": {
        "issuer": "https://idp.example.com/realms/main",
        "client_id": "example-client",
        "client_secret": "example-client-secret",
    },
    "session": {"secrets": ["example-session-secret-0123456789abcdefghij"]},
    "routes": [{"name": "app", "upstream": "http://127.0.0.1:8080"}],
}


# =================================================================================================
# docs/configuration.md, generated from the schema
# =================================================================================================


@dataclass(frozen=True)
class Key:
    """What the schema cannot say about a key: what it is for, and a value to copy."""

    description: str
    example: str = ""  # YAML; empty only for mappings, whose keys have examples of their own


KEYS: Final[dict[str, Key]] = {
    # ------------------------------------------------------------------------------- server
    "server.listen": Key(
        "Address of the main listener: proxied routes and the `auth_prefix` endpoints.", "0.0.0.0:4180"
    ),
    "server.admin_listen": Key(
        "Address of the admin listener: `/healthz`, `/readyz`, `/metrics`. Never proxied; keep it off the "
        "public network.",
        "0.0.0.0:9180",
    ),
    "server.public_url": Key(
        "The origin users type (scheme, host, port; no path). `redirect_uri` is `public_url` + `auth_prefix` + "
        "`/callback`. Required with a `provider`.",
        "https://app.example.com",
    ),
    "server.sso_origins": Key(
        "Further origins, on other domains, whose routes share the sign-in of `public_url` (SSO with single "
        "logout: [multi-domain SSO](multi-domain.md)). Each gets a session cookie of its own, linked to the "
        "one on `public_url`; the provider only ever sees `public_url`'s callback.",
        "[https://wiki.example.org, https://tickets.example.net]",
    ),
    "server.auth_prefix": Key(
        "Path prefix reserved for authproxy's own endpoints (`/start`, `/callback`, `/sign_out`, `/auth`, ...). "
        "No route may use it.",
        "/oauth2",
    ),
    "server.trusted_proxies": Key(
        "Peers (load balancers, ingress controllers) whose `X-Forwarded-*` headers are believed. Anyone else's "
        "are replaced. Empty: nobody's. Behind them, the client's address (for the sign-in rate limit, the login "
        "loop guard and the logs' `client_ip`) is the rightmost `X-Forwarded-For` entry that is not itself a "
        "trusted proxy.",
        "[10.0.0.0/8, 192.168.1.10]",
    ),
    "server.tls": Key(
        "Serve HTTPS on `listen` instead of plain HTTP. Absent: plain HTTP (TLS ends at a load balancer)."
    ),
    "server.tls.cert_file": Key("PEM certificate chain.", "/etc/authproxy/tls/tls.crt"),
    "server.tls.key_file": Key("PEM private key.", "/etc/authproxy/tls/tls.key"),
    "server.rate_limit": Key("Limits on the login endpoints."),
    "server.rate_limit.auth_per_minute": Key(
        "Requests per minute per client IP (for IPv6, per /64) to `/start`, `/callback`, the `/sso/` handoff "
        "endpoints and kept forms; more get 429 (`Retry-After: 60`). Counted in fixed one-minute windows, each "
        "from an address's first request after the last one ended: around a window's end up to twice this "
        "many can pass within a few seconds.",
        "120",
    ),
    "server.client_header_timeout": Key("A client must send its request headers within this.", "10s"),
    "server.shutdown_timeout": Key(
        "On SIGTERM, how long in-flight requests may take to finish before the process exits.", "25s"
    ),
    # ----------------------------------------------------------------------------- provider
    "provider.issuer": Key(
        "The provider's issuer URL, exactly as its discovery document states it "
        "(`<issuer>/.well-known/openid-configuration`). `http://` is accepted with a warning.",
        "https://idp.example.com/realms/main",
    ),
    "provider.client_id": Key("The client (application) registered at the provider.", "legacy-app"),
    "provider.client_secret": Key(
        "The client's secret, for `client_secret_basic` and `client_secret_post` (and for verifying `HS*` tokens, "
        "when listed).",
        "${SSO_CLIENT_SECRET}",
    ),
    "provider.client_auth_method": Key(
        "How authproxy authenticates to the token and revocation endpoints. `none`: a public client (PKCE only).",
        "client_secret_post",
    ),
    "provider.private_key_file": Key(
        "PEM key (RSA or EC P-256) that signs the client assertion for `private_key_jwt`.",
        "/etc/authproxy/client-key.pem",
    ),
    "provider.scopes": Key(
        "Scopes requested at login; must include `openid`. Without `offline_access` most providers issue no "
        "refresh token, and the session ends when the access token expires.",
        "[openid, profile, email, groups, offline_access]",
    ),
    "provider.extra_authorize_params": Key(
        "Extra authorization request parameters. The ones authproxy sets itself (`state`, `nonce`, `scope`, "
        "PKCE, ...) are refused. With `max_age` (whole seconds), an ID token without `auth_time`, or whose "
        "`auth_time` is older than `max_age` plus `clock_skew`, refuses the login.",
        "{prompt: login, acr_values: 'urn:mfa'}",
    ),
    "provider.allowed_algorithms": Key(
        "JWS algorithms accepted on ID, logout and bearer tokens. `none` never; `HS*` only if listed (and then "
        "verified with `client_secret`).",
        "[RS256, ES256]",
    ),
    "provider.clock_skew": Key("Tolerance for `iat`, `exp` and similar time checks.", "30s"),
    "provider.post_logout_redirect_uri": Key(
        "Where the provider sends the browser after `/oauth2/sign_out`. Register it at the provider exactly. "
        '`<public_url>/oauth2/signed_out` is authproxy\'s own "signed out" page '
        "([legacy-apps.md](legacy-apps.md#where-sign-out-lands)).",
        "https://app.example.com/oauth2/signed_out",
    ),
    "provider.bearer_audiences": Key(
        "`aud` values accepted on bearer tokens (routes with `bearer_tokens`). Empty: `client_id`.",
        "[api://reports]",
    ),
    "provider.userinfo": Key(
        "Also call the userinfo endpoint at login and merge its claims (for providers whose ID tokens are thin). "
        "A different `sub` there refuses the login.",
        "true",
    ),
    "provider.timeout": Key("Timeout of every call to the provider (discovery, JWKS, token, revocation).", "5s"),
    "provider.ca_file": Key(
        "Extra PEM CA bundle trusted for the provider's TLS (a private CA).", "/etc/ssl/private-ca.pem"
    ),
    # ------------------------------------------------------------------------------ session
    "session.store": Key(
        "Where sessions live. `memory`: this process only (one worker, one replica). `redis`: shared by "
        "every worker and replica.",
        "redis",
    ),
    "session.redis": Key("The Redis store, used when `store: redis`."),
    "session.redis.url": Key(
        "`redis://`, `rediss://` (TLS) or `unix://` URL with password and database. With `sentinel` it gives "
        "everything but the address (credentials, database, TLS and other options); with `cluster`, any one node.",
        "rediss://:${REDIS_PASSWORD}@redis.internal:6380/0",
    ),
    "session.redis.sentinel": Key("Find the master through Redis Sentinel."),
    "session.redis.sentinel.master_name": Key("The master's name in the Sentinels' configuration.", "mymaster"),
    "session.redis.sentinel.nodes": Key("Sentinels as `host:port`.", "[sentinel-0:26379, sentinel-1:26379]"),
    "session.redis.cluster": Key("`true`: a Redis Cluster (the URL names any node).", "true"),
    "session.redis.key_prefix": Key("Prefix of every key authproxy writes, to share a Redis.", "'team-a:authproxy:'"),
    "session.redis.timeout": Key("Per-operation timeout; then the request fails closed (503).", "500ms"),
    "session.cache": Key(
        "An in-process cache of decoded sessions, kept in step across replicas by Redis pub/sub "
        "(see docs/performance.md): repeat requests of a session need no store round trip."
    ),
    "session.cache.enabled": Key(
        "On by default: repeat requests are served from memory. A logout, back-channel logout or "
        "refresh on any replica drops the session from every replica's cache before it is answered; "
        "a store outage is noticed within ~1.5 s (the feed's ping) instead of on the next request. "
        "`false`: read the store on every request.",
        "false",
    ),
    "session.cache.max_age": Key("A cached session is read from the store again after this long.", "5s"),
    "session.cache.max_entries": Key("Sessions kept per process; the least recently used go first.", "20000"),
    "session.secrets": Key(
        "Session secrets, at least 32 bytes each (`authproxy gen-secret`). The first signs and encrypts; all "
        "verify, which is how secrets are rotated. Required with a `provider`.",
        "['${AUTHPROXY_SESSION_SECRET}']",
    ),
    "session.cookie": Key("The session cookie."),
    "session.cookie.name": Key(
        "Cookie name; `__Host-` is put in front when `secure` and no `domain`.", "myapp_session"
    ),
    "session.cookie.secure": Key(
        "Send the cookie over HTTPS only. `false` only for plain-HTTP development: browsers drop Secure cookies "
        "on `http://`.",
        "false",
    ),
    "session.cookie.same_site": Key(
        "`SameSite` attribute. `lax` lets the login's redirect back carry the cookie; `none` requires `secure`.",
        "strict",
    ),
    "session.cookie.domain": Key(
        "Share the cookie with subdomains (`Domain=`). Absent: this host only (safer).", "example.com"
    ),
    "session.idle_timeout": Key("A session unused this long ends.", "1h"),
    "session.absolute_timeout": Key("No session outlives this, used or not.", "12h"),
    "session.refresh_before_expiry": Key(
        "Refresh the access token this long before it expires, before forwarding the request.", "2m"
    ),
    # ------------------------------------------------------------------------- forward_auth
    "forward_auth.pass_access_token": Key(
        "Add `X-Auth-Request-Access-Token` to `/oauth2/auth` answers (nginx `auth_request`, Traefik `forwardAuth`).",
        "true",
    ),
    # ------------------------------------------------------------------------- identity_jwt
    "identity_jwt.signing_key_file": Key(
        "EC P-256 PEM key that signs `X-Authproxy-Identity`. Absent: a key is made at start (with a warning), "
        "so replicas would disagree.",
        "/etc/authproxy/identity-key.pem",
    ),
    "identity_jwt.ttl": Key("Lifetime (`exp` - `iat`) of each identity assertion.", "30s"),
    # ------------------------------------------------------------------------------- routes
    "routes[].name": Key("Unique name; in logs, metrics and the identity assertion's `aud`.", "reports"),
    "routes[].match": Key("Which requests this route takes. Absent: every host, every path."),
    "routes[].match.host": Key(
        "Host name (`app.example.com`), wildcard (`*.example.com`) or absent (any host). Exact beats wildcard "
        "beats absent; the port is ignored.",
        "'*.example.com'",
    ),
    "routes[].match.path_prefix": Key(
        "Path prefix, written decoded (`/café`); among routes whose host matches, the longest prefix wins. "
        "Wildcards, `%`-escapes, `?`, `#`, `;`, `\\`, `//` and dot segments are refused.",
        "/reports/",
    ),
    "routes[].upstream": Key("The application's base URL.", "http://127.0.0.1:8080"),
    "routes[].auth": Key(
        "`required`: a session (or bearer token) is needed. `optional`: identity headers when logged in. `none`: "
        "public.",
        "optional",
    ),
    "routes[].on_unauthenticated": Key(
        "Without a session: `auto` redirects browser navigations to the login and answers others 401; `redirect` "
        "always redirects; `deny` always answers 401.",
        "deny",
    ),
    "routes[].allow": Key(
        "Who may pass (403 otherwise). Every kind listed must pass; within a kind, one match is enough. Absent: "
        "any authenticated user."
    ),
    "routes[].allow.emails": Key("Addresses (ASCII case-insensitive).", "[alice@example.com]"),
    "routes[].allow.email_domains": Key(
        "Domains after the `@`, exact (list subdomains separately). An unverified email never passes.",
        "[example.com]",
    ),
    "routes[].allow.groups": Key("At least one of these in the `groups` claim.", "[admins, ops]"),
    "routes[].allow.claims": Key(
        "For every claim named, its value (or one of its values) is one of those listed.",
        "{department: [eng, ops]}",
    ),
    "routes[].identity_headers": Key(
        "Header name to claim name; replaces the default set (`X-Forwarded-User: sub`, `-Email: email`, "
        "`-Preferred-Username: preferred_username`, `-Groups: groups`); `{}` sends none.",
        "{X-Remote-User: preferred_username}",
    ),
    "routes[].pass_access_token": Key("Send `Authorization: Bearer <access token>` to the upstream.", "true"),
    "routes[].pass_id_token": Key("Send the ID token in `X-Forwarded-Id-Token`.", "true"),
    "routes[].identity_jwt": Key(
        "Send `X-Authproxy-Identity`, an ES256 JWT signed by authproxy (keys at `/oauth2/jwks.json`).", "true"
    ),
    "routes[].bearer_tokens": Key(
        "Also accept `Authorization: Bearer <JWT>` from API clients, verified against the provider's keys.", "true"
    ),
    "routes[].pass_host_header": Key("`false`: the upstream sees its own host in `Host`.", "false"),
    "routes[].strip_path_prefix": Key("`true`: `/reports/x` reaches the upstream as `/x`.", "true"),
    "routes[].websocket": Key("Proxy WebSocket upgrades.", "false"),
    "routes[].timeout": Key(
        "Connect and wait for response headers; also the idle time allowed between body chunks, and "
        "how long a client that stopped taking its answer is waited for before it is disconnected.",
        "5m",
    ),
    "routes[].csrf_protection": Key(
        "Refuse cross-site `POST`/`PUT`/`PATCH`/`DELETE` and WebSocket upgrades (403) by `Sec-Fetch-Site` and "
        "`Origin`; bearer-token requests are exempt. Absent means off, as before the key existed; new configs "
        "should turn it on. See [legacy-apps.md](legacy-apps.md#cross-origin-guard).",
        "true",
    ),
    "routes[].csrf_trusted_origins": Key(
        "Other origins (`scheme://host[:port]`) whose unsafe requests pass the guard.",
        "[https://admin.example.com]",
    ),
    "routes[].preserve_post": Key(
        "Keep a browser's form POST that arrives without a live session and send it again after the login "
        "(like mod_auth_openidc's `OIDCPreservePost`); `auth: required` routes only. See "
        "[legacy-apps.md](legacy-apps.md#keeping-forms-across-a-re-login).",
        "true",
    ),
    "routes[].preserve_post_max_bytes": Key(
        "Largest form body kept, in bytes (at most 1048576); larger forms get a 413 page.", "131072"
    ),
}

# example file names of the <key>_file variants, as deploy/kubernetes/secret.yaml names them
_SECRET_FILE_NAMES: Final = {"client_secret": "client-secret", "secrets": "session-secrets", "url": "redis-url"}

# the text of docs/configuration.md around the generated tables
PREAMBLE: Final = """\
# Configuration reference

<!-- Generated from authproxy/config.py by `.venv/bin/python -m tests.test_examples`; the
descriptions and examples live in tests/test_examples.py. Edit those, not this file:
tests/test_examples.py fails when the two differ. -->

authproxy reads one YAML file: `authproxy run -c FILE` (or `$AUTHPROXY_CONFIG`). Check a file
without serving it with `authproxy check -c FILE`: exit 0 and a summary, or exit 2 and one line
per problem, each naming its YAML path (`routes[1].upstream: ...`). `check --online` also
fetches the provider's discovery document and pings the session store.

- **Environment**: `${VAR}` and `${VAR:-default}` are replaced anywhere in the file. An unset
  variable without a default is an error that names it; as in the shell, the default also
  stands in for a variable set but empty. Any other `${` (`${VAR-x}`, `${VAR:?x}`, a nested or
  unclosed reference) is an error too, never kept as text; write `$${` for a literal `${`.
  References work in keys and inside YAML's flow collections (`secrets: [${SECRET}]`,
  `match: {host: ${HOST}}`) without quoting, and a value is always text, never read as YAML
  (`a, b: c` stays one string). References in comments are ignored.
- **Secrets from files**: `provider.client_secret`, `session.secrets` and `session.redis.url`
  may instead be given as `client_secret_file`, `secrets_file` (one secret per line) and
  `url_file`: the path of a file holding the value, as Kubernetes mounts Secrets. A trailing
  newline is never part of the value. In `secrets_file`, blank lines are skipped.
- **Durations** are strings with a unit: `500ms`, `90s`, `5m`, `8h`, `7d`. A bare number such as
  `90` is refused (seconds or minutes?), and so is anything longer than `36500d` (100 years).
- **Unknown keys are errors**, so a typo cannot silently switch a protection off; the message
  suggests the closest valid key (`unknown key (did you mean 'timeout'?)`).
- **A key given twice in one mapping is an error** (`session: given twice (lines 4 and 9)`).
  YAML parsers keep the last and drop the first without a word, so a second `session:` section
  would discard the first one's settings. A key beside a merge (`<<: *defaults`) still overrides
  the merged one.
- **URLs** (`public_url`, `provider.issuer`, `post_logout_redirect_uri`, upstreams) carry no
  user name or password (none would be sent, and `check` prints some of them) and no spaces or
  control characters; `public_url`, the issuer and upstreams not even an empty `?` or `#`.
  `auth_prefix` is one or more path segments of letters, digits and `-._~`. `session.cookie.domain`
  is a domain name that covers `public_url`'s host. A Redis URL's path is a database number and
  its query only options redis-py's connections for its scheme take. `identity_headers` may not
  use names HTTP or the proxy itself sets (`Host`, `Content-Length`, `Transfer-Encoding`,
  `Cookie`, `Authorization`, `X-Forwarded-For`/`-Proto`/`-Host`, `X-Request-Id`, hop-by-hop fields).
- Secrets still holding the `REPLACE-with-...` placeholders of `deploy/kubernetes/secret.yaml`
  are refused.
- A file that is not UTF-8, or whose YAML aliases expand to more than 100,000 values, is refused.
- Every problem is reported at once; nothing is served until the file is valid.

A complete, commented example is [`config/authproxy.example.yaml`](../config/authproxy.example.yaml).
The smallest useful configuration:

```yaml
server:
  public_url: https://app.example.com
provider:
  issuer: https://idp.example.com/realms/main
  client_id: ${SSO_CLIENT_ID}
  client_secret: ${SSO_CLIENT_SECRET}
session:
  secrets: ["${AUTHPROXY_SESSION_SECRET}"]
routes:
  - name: app
    upstream: http://127.0.0.1:8080
```
"""

SECTION_INTROS: Final = {
    "server": "Listeners and the public address.",
    "provider": "The OpenID provider. Without this section, only `auth: none` routes are allowed.",
    "session": "Where sessions are kept, how they are protected, and how long they live.",
    "forward_auth": "Answers of `/oauth2/auth` for nginx `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz`.",
    "identity_jwt": "The signed identity assertion (`X-Authproxy-Identity`) for routes with `identity_jwt: true`.",
    "routes": "What is proxied where, and who may pass. A list; each item has these keys. The route for a "
    "request is the one whose `match.host` fits best and whose `match.path_prefix` is longest; file order "
    "never matters. No route: 404. Paths are matched as sent, and refused (400) when a server that "
    "normalises paths would read them as another route's: `.` and `..` segments always, and `//`, "
    "`;parameters` or `\\` when merging, dropping or reading them as `/` changes the route "
    "(`/shop;jsessionid=1/cart` within one route is forwarded as sent).",
}


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    default: str
    example: str
    annotation: Any
    metadata: tuple[Any, ...]
    is_mapping: bool


def _is_duration(metadata: tuple[Any, ...]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None`` or ``list[Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list):
        for arg in get_args(annotation):
            model = _model_of(arg)
            if model is not None:
                return model
    return None


def describe_type(annotation: Any, metadata: tuple[Any, ...] = ()) -> str:
    """A reader's name for a field's type: ``duration``, ``list of string``, ``string or null``."""
    if _is_duration(metadata):
        return "duration"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return describe_type(args[0], tuple(args[1:]))
    if origin in (Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if all(isinstance(arg, type) and arg.__module__ == "ipaddress" for arg in rest):
            return "IP address or CIDR"
        inner = " or ".join(describe_type(arg) for arg in rest)
        return f"{inner} or null" if len(rest) < len(args) else inner
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"list of {describe_type(args[0])}"
    if origin is dict:
        return f"map of {describe_type(args[0])} to {describe_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {str: "string", int: "integer", bool: "boolean", float: "number"}
    return names[annotation]


def format_duration(seconds: float) -> str:
    """90.0 -> ``90s``, 28800.0 -> ``8h``: the largest unit that divides evenly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _yaml_flow(value: Any) -> str:
    return str(yaml.safe_dump(value, default_flow_style=True, width=1000)).strip().removesuffix("...").strip()


def describe_default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""  # a section: its keys have their own defaults
    if value is None:
        return "`null`"
    if _is_duration(tuple(field.metadata)):
        return f"`{format_duration(float(value))}`"
    return f"`{_yaml_flow(value)}`"


def _rows(model: type[BaseModel], prefix: str) -> Iterator[Row]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation, metadata = field.annotation, tuple(field.metadata)
        nested = _model_of(annotation)
        key = KEYS.get(path)
        yield Row(
            path,
            describe_type(annotation, metadata),
            describe_default(field),
            key.example if key else "",
            annotation,
            metadata,
            nested is not None,
        )
        parent = tuple(prefix.rstrip(".").replace("[]", "").split(".")) if prefix else ()
        if SECRET_FILE_KEYS.get(parent) == (name,):
            example = f"/var/run/secrets/authproxy/{_SECRET_FILE_NAMES[name]}"
            yield Row(f"{path}_file", "file path", "", example, str, (), False)
        if nested is not None:
            yield from _rows(nested, f"{path}[]." if get_origin(annotation) is list else f"{path}.")


def schema_rows() -> list[Row]:
    return list(_rows(Config, ""))


def _file_description(path: str) -> str:
    base = path.removesuffix("_file").rsplit(".", 1)[1]
    per_line = " (one secret per line)" if base == "secrets" else ""
    return f"Read `{base}` from this file instead{per_line}; give one or the other."


def render_configuration() -> str:
    """The whole of docs/configuration.md."""
    out = [PREAMBLE]
    rows = schema_rows()
    for section in Config.model_fields:
        out.append(f"\n## `{section}`\n\n{SECTION_INTROS[section]}\n")
        out.append("| key | type | default | example | description |\n|---|---|---|---|---|")
        for row in rows:
            if row.path == section or not row.path.startswith((f"{section}.", f"{section}[].")):
                continue
            description = _file_description(row.path) if row.path.endswith("_file") and row.type == "file path" else ""
            key = KEYS.get(row.path)
            description = description or (key.description if key else "**undocumented**")
            example = f"`{row.example}`" if row.example else ""
            out.append(f"| `{row.path}` | {row.type} | {row.default} | {example} | {description} |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- the tests


def test_every_schema_key_is_documented_and_every_documented_key_exists() -> None:
    schema = {row.path for row in schema_rows() if not (row.path.endswith("_file") and row.type == "file path")}
    top_level = set(Config.model_fields)
    assert sorted(schema - top_level - set(KEYS)) == [], "add these keys to KEYS in tests/test_examples.py"
    assert sorted(set(KEYS) - schema) == [], "these KEYS entries name no key of the schema any more"


def test_every_key_has_an_example_of_its_own_type() -> None:
    problems = []
    for row in schema_rows():
        if row.is_mapping or "." not in row.path.replace("[]", ""):
            continue
        if not row.example:
            problems.append(f"{row.path}: no example")
            continue
        value = yaml.safe_load(interpolate_env(row.example, EXAMPLE_ENV | {"REDIS_PASSWORD": "pw"}, []))
        target: Any = typing.Annotated[row.annotation, *row.metadata] if row.metadata else row.annotation
        try:
            TypeAdapter(target).validate_python(value)
        except ValueError as e:
            problems.append(f"{row.path}: example {row.example!r} is not a {row.type}: {e}")
    assert problems == []


def test_configuration_md_is_generated_from_the_schema() -> None:
    expected = render_configuration()
    actual = CONFIGURATION_MD.read_text()
    assert actual == expected, (
        "docs/configuration.md is out of date with authproxy/config.py: run `.venv/bin/python -m tests.test_examples`"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (90, "90s"), (60, "1m"), (28800, "8h"), (604800, "7d"), (5400, "90m")],
    ids=["milliseconds", "seconds", "minute", "hours", "days", "not-a-whole-hour"],
)
def test_format_duration_reads_back_as_the_same_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# =================================================================================================
# every example passes `authproxy check`
# =================================================================================================


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    document: Path
    line: int
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


_FENCE_RE: Final = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def fenced_blocks(document: Path) -> list[Block]:
    text = document.read_text()
    blocks = []
    for match in _FENCE_RE.finditer(text):
        indent = match.group("indent")
        body = "\n".join(line.removeprefix(indent) for line in match.group("body").splitlines())
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(document, line, match.group("lang"), body))
    return blocks


def yaml_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in fenced_blocks(document) if block.language == "yaml"]


def is_kubernetes_object(tree: Any) -> bool:
    return isinstance(tree, dict) and "apiVersion" in tree and "kind" in tree


def merge(base: Mapping[str, Any], excerpt: Mapping[str, Any]) -> dict[str, Any]:
    """``excerpt`` over ``base``: mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in excerpt.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run_check(path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``authproxy check -c path`` in this process (the same code as the console command)."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check", "-c", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_documents_have_yaml_examples() -> None:
    # the parametrised test below must have something to check, or it proves nothing
    documents = {block.document.name for block in yaml_blocks()}
    assert {"README.md", "configuration.md", "operations.md", "security.md"} <= documents


@pytest.mark.parametrize("block", yaml_blocks(), ids=lambda block: block.id)
def test_yaml_example_in_the_docs_passes_authproxy_check(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = yaml.safe_load(block.text)
    if is_kubernetes_object(tree):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(tree, version, strict=True)
        return
    assert isinstance(tree, dict), f"{block.id}: a yaml example is a mapping of authproxy sections"
    complete = {"routes", "provider"} <= tree.keys()
    text = block.text if complete else yaml.safe_dump(merge(EXCERPT_BASE, tree))
    path = tmp_path / "example.yaml"
    path.write_text(text)
    code, output = run_check(path, monkeypatch, capsys)
    assert code == 0, f"{block.id}:\n{block.text}\n{output}"
    assert output.splitlines()[-1].startswith("ok: ")


def test_the_readme_registers_at_the_provider_what_its_configuration_uses() -> None:
    # "In front of your app in 5 minutes": step 1 lists what to register at the provider, step 2
    # is the configuration; a URI the configuration sends that step 1 does not register is
    # refused by the provider (a sign-out ending on "post_logout_redirect_uri not registered")
    readme = ROOT / "README.md"
    text = readme.read_text()
    step_1_at, step_2_at = text.index("**1. Register a client"), text.index("**2. Write the configuration**")
    step_1 = text[step_1_at:step_2_at]
    step_2_line = text.count("\n", 0, step_2_at) + 1
    step_2 = next(b for b in fenced_blocks(readme) if b.language == "yaml" and b.line > step_2_line)
    config = parse_config(step_2.text, EXAMPLE_ENV)
    assert config.provider is not None
    registered = set(re.findall(r"^- [^`\n]*URI\s+`([^`]+)`", step_1, re.M))
    assert f"{config.server.public_url}{config.server.auth_prefix}/callback" in registered
    assert config.provider.post_logout_redirect_uri in registered


def example_config_files() -> list[Path]:
    """config/*.yaml, and every YAML file under deploy/ with an authproxy section at its top."""
    found = sorted((ROOT / "config").glob("*.y*ml"))
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        # one authproxy section is enough to be checked (a misspelt one then fails the check);
        # Kubernetes, compose and Traefik files have none
        if any(not is_kubernetes_object(d) and d.keys() & Config.model_fields.keys() for d in documents):
            found.append(path)
    return found


def test_the_example_config_files_are_found() -> None:
    assert {ROOT / "config" / "authproxy.example.yaml", ROOT / "deploy" / "authproxy.yaml"} <= set(
        example_config_files()
    )


@pytest.mark.parametrize("path", example_config_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_example_config_file_passes_the_authproxy_check_command(path: Path) -> None:
    # the real console command once per file, environment as the examples' comments describe
    result = subprocess.run(
        [sys.executable, "-m", "authproxy", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **EXAMPLE_ENV},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_a_broken_example_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the harness must be able to fail: a typo in a merged excerpt is reported by path
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(merge(EXCERPT_BASE, {"session": {"cookie": {"secrue": False}}})))
    code, output = run_check(path, monkeypatch, capsys)
    assert code == 2
    assert "session.cookie.secrue: unknown key" in output


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert broken == []


# =================================================================================================
# deploy/kubernetes: schema-valid, and consistent with itself and the configuration
# =================================================================================================


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        found += [(path, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return found


@dataclass(frozen=True)
class Manifests:
    objects: list[dict[str, Any]]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.get("Secret", name)
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        return data | {str(k): str(v) for k, v in secret.get("stringData", {}).items()}

    def volume_files(self, volume: Mapping[str, Any]) -> dict[str, str]:
        """Relative path -> content of the files a configMap or secret volume shows the container."""
        if "configMap" in volume:
            source, data = volume["configMap"], self.get("ConfigMap", volume["configMap"]["name"])["data"]
        else:
            source, data = volume["secret"], self.secret_data(volume["secret"]["secretName"])
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        return {item["path"]: data[item["key"]] for item in items}


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests([document for _, document in load_manifests()])


def authproxy_pod(manifests: Manifests) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment that runs authproxy as a sidecar, and its authproxy container."""
    for deployment in manifests.all("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["name"] == "authproxy":
                return deployment, container
    raise AssertionError("no Deployment with an authproxy container")


def container_port(container: Mapping[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


def test_manifests_exist_for_the_sidecar_pattern(manifests: Manifests) -> None:
    kinds = {o["kind"] for o in manifests.objects}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "NetworkPolicy"} <= kinds
    deployment, _ = authproxy_pod(manifests)
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert len(names) == 2 and "authproxy" in names, "the app and authproxy share one pod"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("path", "document"),
    load_manifests(),
    ids=lambda value: value.name if isinstance(value, Path) else f"{value['kind']}-{value['metadata']['name']}",
)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, document: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)


BREAKAGES: Final = {
    "unknown-field": lambda d: d["spec"].update({"replica": 2}),
    "wrong-type": lambda d: d["spec"]["template"]["spec"]["containers"][1]["ports"][0].update({"containerPort": "x"}),
    "missing-required": lambda d: d["spec"]["template"]["spec"]["containers"][1]["readinessProbe"].update(
        {"httpGet": {"path": "/readyz"}}
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_the_validator_rejects_a_broken_manifest(manifests: Manifests, breakage: Any) -> None:
    # the schema test above could otherwise pass by validating nothing
    deployment, _ = authproxy_pod(manifests)
    broken = json.loads(json.dumps(deployment))
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


_PLACEHOLDER: Final = re.compile(r"REPLACE-with-[A-Za-z0-9-]+")


def filled_in(text: str) -> str:
    """``text`` with each placeholder of the example Secret replaced, the same one alike."""
    return _PLACEHOLDER.sub(lambda m: "filled-" + hashlib.sha256(m.group(0).encode()).hexdigest()[:40], text)


def pod_view(manifests: Manifests, root: Path, *, filled: bool = True) -> tuple[Path, dict[str, str]]:
    """Write the authproxy container's mounted files under ``root``; its config path and env.

    ``filled``: the Secret's placeholders replaced by values, as after ``kubectl create secret``."""
    deployment, container = authproxy_pod(manifests)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        for relative, content in manifests.volume_files(volumes[mount["name"]]).items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_text(filled_in(content) if filled else content)
        mounts[mount["mountPath"]] = str(target)
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = manifests.secret_data(ref["name"])[ref["key"]]
            env[variable["name"]] = filled_in(value) if filled else value
    config_path = Path(env.get("AUTHPROXY_CONFIG", "/etc/authproxy/authproxy.yaml"))
    local = root / config_path.relative_to("/")
    text = local.read_text()
    # paths in the config point into the mounts; the pod's root is `root` here
    for mount_path, target in sorted(mounts.items(), key=lambda item: -len(item[0])):
        text = re.sub(rf"(?<![\w/]){re.escape(mount_path)}(?=/)", target, text)
    local.write_text(text)
    return local, env


def test_the_configmap_passes_authproxy_check_as_the_pod_sees_it(
    manifests: Manifests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path, env = pod_view(manifests, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, output = run_check(config_path, monkeypatch, capsys)
    assert code == 0, output
    assert "session store redis" in output


def test_the_pod_the_service_the_probes_and_the_config_agree(manifests: Manifests, tmp_path: Path) -> None:
    deployment, container = authproxy_pod(manifests)
    config_path, env = pod_view(manifests, tmp_path)
    config = parse_config(config_path.read_text(), env)
    pod = deployment["spec"]["template"]
    proxy_port, admin_port = container_port(container, "proxy"), container_port(container, "admin")
    assert config.server.listen_host_port() == ("0.0.0.0", proxy_port)
    assert config.server.admin_host_port() == ("0.0.0.0", admin_port), "kubelet probes reach the pod IP"
    # every probe on the admin listener, never on the proxied port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "admin"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(admin_port)
    # the Service reaches authproxy, selects this pod, and never the app's own port
    service = manifests.get("Service", "legacy-app")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["proxy"]
    # the upstream is the app container over the pod's loopback, where it alone listens: it
    # declares no port, and its configuration listens on 127.0.0.1 only
    app = next(c for c in pod["spec"]["containers"] if c["name"] != "authproxy")
    assert "ports" not in app
    standin = manifests.get("ConfigMap", "legacy-app-standin")["data"]["default.conf"]
    upstream = urlsplit(config.routes[0].upstream)
    assert re.findall(r"listen\s+([^;]+);", standin) == [f"127.0.0.1:{upstream.port}"]
    assert upstream.hostname == "127.0.0.1"
    # SIGTERM: authproxy finishes in-flight requests, and a refresh still running, before Kubernetes kills it
    assert pod["spec"]["terminationGracePeriodSeconds"] > stop_bound(config)
    assert container["securityContext"]["runAsUser"] == 10001, "the Dockerfile's non-root user"


def test_the_network_policy_admits_the_proxy_and_admin_ports_only(manifests: Manifests) -> None:
    deployment, container = authproxy_pod(manifests)
    policy = next(
        p
        for p in manifests.all("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    ports = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert ports == {container_port(container, "proxy"), container_port(container, "admin")}
    # each from its own peers: the ingress controller's namespace may claim X-Forwarded-For
    # (trusted_proxies), no other pod may reach the proxy port to do so
    assert all(rule.get("from") for rule in policy["spec"]["ingress"])


def test_the_example_secret_as_shipped_is_refused(manifests: Manifests, tmp_path: Path) -> None:
    # applied unchanged, its placeholders would be the session secret and a public Redis password
    config_path, env = pod_view(manifests, tmp_path, filled=False)
    with pytest.raises(ConfigError) as info:
        parse_config(config_path.read_text(), env)
    problems = info.value.problems
    for where in ("provider.client_secret", "session.secrets[0]", "session.redis.url"):
        assert any(p.startswith(where + ": ") and "placeholder" in p for p in problems), problems


def test_redis_url_password_and_service_agree(manifests: Manifests, tmp_path: Path) -> None:
    config_path, env = pod_view(manifests, tmp_path)
    config = parse_config(config_path.read_text(), env)
    url = urlsplit(config.session.redis.url)
    service = manifests.get("Service", str(url.hostname))
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    redis = manifests.get("Deployment", str(url.hostname))
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    redis_container = redis["spec"]["template"]["spec"]["containers"][0]
    password_ref = next(e for e in redis_container["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert url.password == filled_in(manifests.secret_data(password_ref["name"])[password_ref["key"]])
    assert "$(REDIS_PASSWORD)" in redis_container["args"]


# =================================================================================================
# deploy/compose.yaml: consistent with deploy/authproxy.yaml and the realm it imports
# =================================================================================================


def compose_value(text: str) -> str:
    """A compose ``${VAR:-default}`` value as ``docker compose`` sees it with nothing exported."""
    problems: list[str] = []
    value = str(interpolate_env(text, {}, problems))
    assert problems == [], problems
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tree: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return tree


def test_compose_builds_the_image_and_mounts_a_valid_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["authproxy"]
    context = COMPOSE_FILE.parent / service["build"]["context"]
    assert (context / service["build"]["dockerfile"]).is_file()
    mount = next(v for v in service["volumes"] if v.split(":")[1] == service["environment"]["AUTHPROXY_CONFIG"])
    config_file = COMPOSE_FILE.parent / mount.split(":")[0]
    env = {name: compose_value(str(value)) for name, value in service["environment"].items()}
    config = parse_config(config_file.read_text(), env)
    published = {int(p.split(":")[-1]) for p in service["ports"]}
    assert {config.server.listen_host_port()[1], config.server.admin_host_port()[1]} == published
    assert config.session.store == "redis" and urlsplit(config.session.redis.url).hostname in compose["services"]
    upstream = urlsplit(config.routes[0].upstream)
    assert upstream.hostname in compose["services"]
    assert str(upstream.port) in compose["services"][str(upstream.hostname)]["expose"]


def test_compose_keycloak_realm_matches_the_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["authproxy"]
    env = {name: compose_value(str(value)) for name, value in service["environment"].items()}
    config = parse_config((COMPOSE_FILE.parent / "authproxy.yaml").read_text(), env)
    assert config.provider is not None
    realm = json.loads(compose_value(compose["configs"]["demo-realm"]["content"]))
    client = next(c for c in realm["clients"] if c["clientId"] == config.provider.client_id)
    assert client["secret"] == config.provider.client_secret
    assert client["redirectUris"] == [f"{config.server.public_url}{config.server.auth_prefix}/callback"]
    assert client["attributes"]["post.logout.redirect.uris"] == config.provider.post_logout_redirect_uri
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    # the browser and authproxy reach Keycloak under one name, so the issuer is the same for both
    issuer = urlsplit(config.provider.issuer)
    keycloak = compose["services"]["keycloak"]
    assert issuer.hostname in keycloak["networks"]["default"]["aliases"]
    assert str(issuer.hostname).endswith(".localhost"), "browsers resolve *.localhost to this machine"
    assert keycloak["environment"]["KC_HOSTNAME"] == f"{issuer.scheme}://{issuer.netloc}"
    assert f"127.0.0.1:{issuer.port}:8080" in keycloak["ports"]
    assert issuer.path == f"/realms/{realm['realm']}"


if __name__ == "__main__":
    CONFIGURATION_MD.write_text(render_configuration())
    print(f"wrote {CONFIGURATION_MD.relative_to(ROOT)}")
