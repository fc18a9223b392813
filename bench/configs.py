"""Configuration files for the benchmark's servers (pure: values in, text out).

Every server is configured the way an operator would run it in production, tuned only where a
default would measure something other than proxying:

- keep-alive without a request cap on every hop (wrk keeps its connections; Apache's default
  of 100 requests per connection would measure reconnects);
- Apache's mpm_event allowed enough threads for 256 connections (the default 150 would queue);
- each proxy writes an access log line per request, as in production (authproxy's JSON access
  log, nginx's combined log, Apache's common log); the upstream, a fixture, logs nothing;
- nginx streams big responses through 1 MiB of memory buffers instead of spooling them to a
  temporary file (its default), as authproxy and Apache stream them.

mod_auth_openidc (https://github.com/OpenIDC/mod_auth_openidc, Debian 2.4.12) uses the same
provider, Redis as its cache (``OIDCCacheType redis``), server-side sessions
(``OIDCSessionType server-cache``) and PKCE S256, like authproxy (SPEC section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

UPSTREAM_BODY: Final = "hello from the upstream\n"
BIG_PATH: Final = "/big.bin"
REFRESH_PREFIX: Final = "/refresh/"
APACHE_MODULES: Final = Path("/usr/lib/apache2/modules")
# the session lifetimes of authproxy's defaults (idle 8 h, absolute 7 d), given to both
IDLE_TIMEOUT_S: Final = 8 * 3600
ABSOLUTE_TIMEOUT_S: Final = 7 * 86400
# every request of the "refresh" variants is within this of its access token's expiry (the
# provider's tokens live an hour), so each one refreshes
REFRESH_EVERY_REQUEST_S: Final = 7200


@dataclass(frozen=True)
class Client:
    """A client registered at the provider."""

    client_id: str
    client_secret: str
    redirect_uri: str

    def as_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "client_secret": self.client_secret, "redirect_uris": [self.redirect_uri]}


def _nginx_common(directory: Path, run_as_root: bool) -> str:
    return f"""daemon off;
master_process on;
worker_processes 1;
{"user root;" if run_as_root else ""}
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
"""


def _nginx_http_common(directory: Path) -> str:
    temp = directory / "temp"
    return f"""    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    sendfile on;
    tcp_nopush on;
"""


def nginx_upstream_conf(directory: Path, port: int, status_port: int, big_file: Path, run_as_root: bool) -> str:
    """The upstream application: a small fixed body everywhere, a big file, and a request counter.

    ``stub_status`` on its own port counts the requests that really reached the upstream, so a
    proxy answering by itself (a login redirect, a 401) shows up as a shortfall.
    """
    return (
        _nginx_common(directory, run_as_root)
        + f"""http {{
{_nginx_http_common(directory)}    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {BIG_PATH} {{ alias {big_file}; default_type application/octet-stream; }}
        location / {{ default_type text/plain; return 200 "{UPSTREAM_BODY.rstrip()}\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{ stub_status; }}
    }}
}}
"""
    )


def nginx_proxy_conf(directory: Path, port: int, upstream_port: int, run_as_root: bool) -> str:
    """nginx as a plain reverse proxy with pooled keep-alive upstream connections: the limit."""
    return (
        _nginx_common(directory, run_as_root)
        + f"""http {{
{_nginx_http_common(directory)}    access_log {directory}/access.log combined;
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # stream big bodies through memory like the others, never spooled to a temp file
            proxy_buffer_size 64k;
            proxy_buffers 16 64k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""
    )


def apache_conf(
    directory: Path,
    *,
    port: int,
    upstream_port: int,
    provider_url: str,
    client: Client,
    passphrase: str,
    redis_port: int,
    run_as_root: bool,
) -> str:
    """Apache httpd 2.4 (mpm_event) + mod_auth_openidc + mod_proxy_http in front of the upstream."""
    modules = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("authz_user_module", "mod_authz_user.so"),
        ("proxy_module", "mod_proxy.so"),
        ("proxy_http_module", "mod_proxy_http.so"),
        ("auth_openidc_module", "mod_auth_openidc.so"),
    ]
    load = "\n".join(f"LoadModule {name} {APACHE_MODULES / file}" for name, file in modules)
    user = "User www-data\nGroup www-data\n" if run_as_root else ""
    return f"""ServerRoot "{directory}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {directory}/httpd.pid
DefaultRuntimeDir {directory}/run
ErrorLog {directory}/error.log
LogLevel warn
{load}
{user}
StartServers 4
ServerLimit 16
ThreadLimit 64
ThreadsPerChild 32
MaxRequestWorkers 512
MinSpareThreads 64
MaxSpareThreads 512
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 75
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog {directory}/access.log common

OIDCProviderMetadataURL {provider_url}/.well-known/openid-configuration
OIDCClientID {client.client_id}
OIDCClientSecret {client.client_secret}
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI {client.redirect_uri}
OIDCCryptoPassphrase {passphrase}
OIDCScope "openid profile email offline_access"
OIDCPKCEMethod S256
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:{redis_port}
OIDCSessionType server-cache
OIDCSessionInactivityTimeout {IDLE_TIMEOUT_S}
OIDCSessionMaxDuration {ABSOLUTE_TIMEOUT_S}

ProxyPass /redirect_uri !
ProxyPass / http://127.0.0.1:{upstream_port}/
<Location />
    AuthType openid-connect
    Require valid-user
</Location>
<Location {REFRESH_PREFIX}>
    OIDCRefreshAccessTokenBeforeExpiry {REFRESH_EVERY_REQUEST_S}
</Location>
"""


def authproxy_config(
    *,
    port: int,
    admin_port: int,
    upstream_port: int,
    provider_url: str,
    client: Client,
    session_secret: str,
    redis_port: int,
    key_prefix: str,
    refresh_every_request: bool = False,
) -> dict[str, Any]:
    """authproxy with the Redis store and one protected route to the upstream (SPEC section 2)."""
    public_url = f"http://127.0.0.1:{port}"
    session: dict[str, Any] = {
        "store": "redis",
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": key_prefix},
        "secrets": [session_secret],
        "cookie": {"secure": False},
        "idle_timeout": f"{IDLE_TIMEOUT_S}s",
        "absolute_timeout": f"{ABSOLUTE_TIMEOUT_S}s",
        # session.cache is left at its default (on): what a new user gets
    }
    if refresh_every_request:
        session["refresh_before_expiry"] = f"{REFRESH_EVERY_REQUEST_S}s"
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{admin_port}",
            "public_url": public_url,
            # the login benchmark signs in from one address far faster than any person would
            "rate_limit": {"auth_per_minute": 10_000_000},
            "shutdown_timeout": "5s",
        },
        "provider": {
            "issuer": provider_url,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "client_auth_method": "client_secret_basic",
            "scopes": ["openid", "profile", "email", "offline_access"],
            "post_logout_redirect_uri": public_url + "/",
        },
        "session": session,
        "routes": [
            {
                "name": "app",
                "match": {"path_prefix": "/"},
                "upstream": f"http://127.0.0.1:{upstream_port}",
                "auth": "required",
            }
        ],
    }
