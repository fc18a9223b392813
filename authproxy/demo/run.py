"""``authproxy demo``: a development provider, the echo app and the proxy in one process.

Everything listens on 127.0.0.1: the proxy on ``--port`` (4180), the provider, the echo upstream
and the admin listener on free ports. The proxy uses the memory store, a session secret made at
start and plain-http cookies. For trying authproxy out only: it says so wherever it shows.

Two apps on two host names share one sign-in (``server.sso_origins``, docs/multi-domain.md): the
echo app at ``http://127.0.0.1:PORT`` (the authenticating origin) and the same app as "wiki" at
``http://localhost:PORT`` (an SSO origin; another host name, so another cookie jar, as another
domain would be). Both names reach 127.0.0.1 without any DNS set-up.
"""

from __future__ import annotations

import secrets
import socket
import sys
from typing import Any

from aiohttp import web

from authproxy.config import Config
from authproxy.demo.echo import create_echo_app
from authproxy.demo.provider import DemoClient, DemoProvider
from authproxy.demo.users import DEMO_USERS
from authproxy.errors import ListenError
from authproxy.server import run_async, serve

HOST = "127.0.0.1"
# the second app's host name: every system resolves it to loopback, and browsers keep its cookies
# apart from 127.0.0.1's
WIKI_HOST = "localhost"
CLIENT_ID = "authproxy-demo"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def demo_config(port: int, provider_url: str, echo_url: str, admin_port: int, client_secret: str) -> Config:
    public_url = f"http://{HOST}:{port}"
    tree: dict[str, Any] = {
        "server": {
            "listen": f"{HOST}:{port}",
            "admin_listen": f"{HOST}:{admin_port}",
            "public_url": public_url,
            "sso_origins": [wiki_url(port)],
            "shutdown_timeout": "5s",
        },
        "provider": {
            "issuer": provider_url,
            "client_id": CLIENT_ID,
            "client_secret": client_secret,
            # the proxy's own signed-out page: landing on / would start a new login at once
            "post_logout_redirect_uri": public_url + "/oauth2/signed_out",
        },
        "session": {
            "store": "memory",
            "secrets": [secrets.token_urlsafe(32)],
            "cookie": {"secure": False},
        },
        "routes": [
            {"name": "public", "match": {"path_prefix": "/public"}, "upstream": echo_url, "auth": "none"},
            {
                "name": "echo",
                "match": {"path_prefix": "/"},
                "upstream": echo_url,
                "auth": "required",
                # new configs turn these on: refuse cross-site form posts, keep forms across re-login
                "csrf_protection": True,
                "preserve_post": True,
            },
            {
                "name": "wiki",
                "match": {"host": WIKI_HOST, "path_prefix": "/"},
                "upstream": echo_url,
                "csrf_protection": True,
                "preserve_post": True,
            },
        ],
    }
    return Config.model_validate(tree)


def wiki_url(port: int) -> str:
    return f"http://{WIKI_HOST}:{port}"


def banner(public_url: str, provider_url: str, admin_url: str, wiki: str) -> str:
    users = "\n".join(
        f"    {u.username:<6} {u.email:<28} groups: {', '.join(u.groups) or '(none)'}" for u in DEMO_USERS
    )
    return f"""
  authproxy demo: DEVELOPMENT ONLY (memory sessions, plain http, a throw-away provider)

    open            {public_url}/
    second app      {wiki}/  (another host name: signed in once, signed in on both)
    public page     {public_url}/public/  (no login needed)
    sign out        {public_url}/oauth2/sign_out
    provider        {provider_url}  (development provider, not for production)
    admin           {admin_url}/healthz  /readyz  /metrics

  Demo logins (click one on the provider's page; no password):
{users}

  Press Ctrl-C to stop.
"""


async def _run(port: int) -> None:
    provider_port, echo_port, admin_port = _free_port(), _free_port(), _free_port()
    provider_url = f"http://{HOST}:{provider_port}"
    echo_url = f"http://{HOST}:{echo_port}"
    public_url = f"http://{HOST}:{port}"
    client_secret = secrets.token_urlsafe(24)
    provider = DemoProvider(
        provider_url,
        [
            DemoClient(
                CLIENT_ID,
                client_secret,
                redirect_uris=[public_url + "/oauth2/callback"],
                post_logout_redirect_uris=[public_url + "/oauth2/signed_out"],
            )
        ],
    )
    runners = [web.AppRunner(provider.create_app(), access_log=None), web.AppRunner(create_echo_app(), access_log=None)]
    for runner, site_port in zip(runners, (provider_port, echo_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, HOST, site_port).start()
    config = demo_config(port, provider_url, echo_url, admin_port, client_secret)
    try:
        await serve(
            config,
            on_started=lambda: print(
                banner(public_url, provider_url, f"http://{HOST}:{admin_port}", wiki_url(port)), flush=True
            ),
        )
    finally:
        for runner in runners:
            await runner.cleanup()


def run_demo(port: int = 4180) -> int:
    try:
        run_async(_run(port))
    except ListenError as e:  # the proxy's own listeners: the error names the address
        print(f"authproxy demo: cannot listen on {e.address}: {e.cause} (try --port)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"authproxy demo: cannot listen on {HOST}:{port}: {e.strerror or e} (try --port)", file=sys.stderr)
        return 1
    return 0
