"""The benchmark's OpenID provider: authproxy's development provider in a process of its own.

    python bench/provider.py --host 127.0.0.2 --port N --clients clients.json

Every authenticating proxy of the benchmark logs in through this one provider (OpenID Connect
Core 1.0 section 3.1, Authorization Code with RFC 7636 PKCE). It runs in its own process, pinned
with the load generators, so its RSA signing never competes with the servers under test. It
listens on 127.0.0.2 because cookies ignore ports: on 127.0.0.1 its SSO cookie would reach the
proxies (docs/testing.md). ``GET /bench/stats`` answers its counters (refresh grants, logins ...) so
the benchmark can prove that a "refreshing" request really refreshed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Final

from aiohttp import web

from authproxy.demo.provider import PROVIDER, DemoClient, DemoProvider

# Long enough that no access token expires during a run: refreshes are measured on purpose, by a
# proxy configured to refresh on every request, never by accident in the throughput runs.
ACCESS_TOKEN_TTL: Final = 3600
STATS_PATH: Final = "/bench/stats"


def load_clients(path: Path) -> list[DemoClient]:
    """Clients from a JSON list of ``{client_id, client_secret, redirect_uris}`` objects."""
    raw = json.loads(path.read_text())
    return [DemoClient(item["client_id"], item["client_secret"], redirect_uris=item["redirect_uris"]) for item in raw]


async def stats(request: web.Request) -> web.Response:
    return web.json_response(dataclasses.asdict(request.app[PROVIDER].stats))


async def serve(host: str, port: int, clients: list[DemoClient]) -> None:
    provider = DemoProvider(
        f"http://{host}:{port}", clients, access_token_ttl=ACCESS_TOKEN_TTL, id_token_ttl=ACCESS_TOKEN_TTL
    )
    app = provider.create_app()
    app.router.add_get(STATS_PATH, stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project depends on it on Linux
        asyncio.run(serve(args.host, args.port, load_clients(args.clients)))
    else:
        uvloop.run(serve(args.host, args.port, load_clients(args.clients)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
