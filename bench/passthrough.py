"""The floor of proxying in Python: an aiohttp pass-through proxy with no authentication at all.

    python bench/passthrough.py --port N --upstream http://127.0.0.1:M

It does the least any aiohttp reverse proxy must do, the way authproxy's forwarder does it: one
pooled keep-alive ``ClientSession``, request headers passed on, the response streamed back
chunk by chunk (RFC 9110 section 7.6: hop-by-hop fields dropped). Nothing else: no session
lookup, no logging, no metrics. The benchmark runs it beside authproxy so the table separates
what aiohttp and the event loop cost from what authproxy adds. Not a product; never deploy it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

CLIENT: Final = web.AppKey("client", aiohttp.ClientSession)
UPSTREAM: Final = web.AppKey("upstream", str)
# RFC 9110 section 7.6.1, plus Host (set by the client for the upstream) and Content-Length
# (recomputed by the writer)
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)
_RESPONSE_DROP: Final = _HOP_BY_HOP | {"content-length"}


async def forward(request: web.Request) -> web.StreamResponse:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
    data = request.content.iter_any() if request.body_exists else None
    url = request.app[UPSTREAM] + request.rel_url.raw_path_qs
    async with request.app[CLIENT].request(
        request.method, url, headers=headers, data=data, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers=CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP),
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(port: int, upstream: str) -> None:
    client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        read_bufsize=256 * 1024,
    )
    app = web.Application()
    app[CLIENT] = client
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project depends on it on Linux
        asyncio.run(serve(args.port, args.upstream))
    else:
        uvloop.run(serve(args.port, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
