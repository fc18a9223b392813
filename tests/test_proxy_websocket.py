"""WebSocket upgrades proxied both ways (SPEC section 4, RFC 6455)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict

from authproxy.proxy import MAX_WS_MESSAGE, WS_CLOSE_TIMEOUT, _close_code, is_websocket_upgrade
from tests.support.ops import json_records
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import (  # noqa: F401
    Route,
    Upstream,
    raw_request,
    serve_here,
    serve_proxy,
    upstream_fixture,
)

HANDSHAKE: Final = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@contextlib.asynccontextmanager
async def websocket_upstream(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """An upstream on a free 127.0.0.1 port answering ``/ws`` with ``handler``; its origin."""
    app = web.Application()
    app.router.add_get("/ws", handler)
    async with serve_here(app) as url:
        yield url


async def test_websocket_echo_text_binary_and_close_code(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url, aiohttp.ClientSession() as client:
        async with client.ws_connect(url + "/ws", protocols=("chat.v1",)) as ws:
            assert ws.protocol == "chat.v1"
            assert await ws.receive_str(timeout=5) == "hello chat.v1"
            await ws.send_str("ping text")
            assert await ws.receive_str(timeout=5) == "echo:ping text"
            await ws.send_bytes(b"\x00\x01binary\xff")
            assert await ws.receive_bytes(timeout=5) == b"echo:\x00\x01binary\xff"
            await ws.send_str("close:4001")
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == 4001
            assert msg.extra == "bye"
        assert ws.close_code == 4001


async def test_websocket_no_subprotocol(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.ws_connect(url + "/ws") as ws,
    ):
        assert ws.protocol is None
        assert await ws.receive_str(timeout=5) == "hello -"


async def test_the_subprotocol_the_upstream_agreed_is_the_one_the_client_is_told() -> None:
    # RFC 6455 section 4.1: Sec-WebSocket-Protocol may come on several lines, one list in all;
    # whichever the upstream picks, the client's 101 must name the same (or none for both)
    agreed: list[str | None] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat.v2",))
        await ws.prepare(request)
        agreed.append(ws.ws_protocol)
        await ws.receive()
        return ws

    async with websocket_upstream(handler) as upstream_url, serve_proxy(Route(upstream_url)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        offer = b"Sec-WebSocket-Protocol: chat.v1\r\nSec-WebSocket-Protocol: chat.v2\r\n\r\n"
        writer.write(HANDSHAKE.removesuffix(b"\r\n") + offer)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    told = [
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-protocol:")
    ]
    assert head.startswith(b"HTTP/1.1 101")
    assert agreed == ["chat.v2"]
    assert told == ["chat.v2"]


async def test_websocket_ping_pong_relayed(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.ws_connect(url + "/ws", autoping=False) as ws,
    ):
        assert await ws.receive_str(timeout=5) == "hello -"
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=5)
        # the upstream's own pong, carried back with the same payload
        assert msg.type is WSMsgType.PONG
        assert msg.data == b"are-you-there"


async def test_client_close_reaches_upstream_with_its_code() -> None:
    closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed.set_result((ws.close_code, json.dumps(dict(request.headers))))
        return ws

    async with (
        websocket_upstream(handler) as upstream_url,
        serve_proxy(Route(upstream_url)) as url,
        aiohttp.ClientSession() as client,
    ):
        ws = await client.ws_connect(url + "/ws", headers={"X-Forwarded-User": "x", "Origin": "https://app"})
        await ws.close(code=4321, message=b"done")
        code, headers_json = await asyncio.wait_for(closed, 5)
    assert code == 4321
    seen = {k.lower(): v for k, v in json.loads(headers_json).items()}
    assert seen["origin"] == "https://app"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert len(seen["x-request-id"]) == 32


async def test_a_client_close_reaches_the_upstream_and_its_reply_echoes_the_code() -> None:
    # RFC 6455 section 5.5.1: the close frame's code and reason go on as sent, and the reply
    # the client gets carries the same code, not a 1000 of the proxy's own
    closed: asyncio.Future[tuple[object, str | None]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive()
        closed.set_result((msg.data, msg.extra))
        return ws

    async with (
        websocket_upstream(handler) as upstream_url,
        serve_proxy(Route(upstream_url)) as url,
        aiohttp.ClientSession() as client,
    ):
        ws = await client.ws_connect(url + "/ws")
        await ws.close(code=4000, message=b"bye")
        assert await asyncio.wait_for(closed, 5) == (4000, "bye")
    assert ws.close_code == 4000


async def test_upstream_vanishing_closes_the_client(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url, aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url + "/ws")
        assert await ws.receive_str(timeout=5) == "hello -"
        await ws.send_str("drop")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == WSCloseCode.BAD_GATEWAY
        await ws.close()


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
async def test_websocket_refused_when_route_disallows(upstream: Upstream, accept: str) -> None:
    async with serve_proxy(Route(upstream.url, websocket=False)) as url, aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(url + "/ws", headers={"Accept": accept})
    assert info.value.status == 403


async def test_upstream_refusing_the_upgrade_passes_its_status(upstream: Upstream) -> None:
    # /echo answers 200 to the handshake instead of 101; not a 4xx, so the proxy reports 502
    async with serve_proxy(Route(upstream.url)) as url, aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(url + "/echo")
    assert info.value.status == 502


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_an_upstream_redirecting_the_handshake_is_answered_to_the_client_not_followed(status: int) -> None:
    # an intermediary passes a redirect on (RFC 9110 section 15.4): the proxy following it would
    # open the WebSocket, with the request's identity headers, at whatever address it names
    dialled: list[str] = []

    async def elsewhere(request: web.Request) -> web.WebSocketResponse:
        dialled.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    async with websocket_upstream(elsewhere) as elsewhere_url:

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": elsewhere_url + "/ws"})

        async with (
            websocket_upstream(handler) as upstream_url,
            serve_proxy(Route(upstream_url)) as url,
            aiohttp.ClientSession() as client,
            client.get(
                url + "/ws",
                headers={
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                },
                allow_redirects=False,
            ) as resp,
        ):
            assert resp.status == status
            assert resp.headers["Location"] == elsewhere_url + "/ws"
    assert dialled == []


async def test_a_client_that_vanishes_while_the_upstream_streams_ends_the_upstream_connection(
    run_proxy: Callable[..., ProxyProcess],
) -> None:
    # the client stops reading (the proxy's sends back up), then drops its connection with no
    # close frame; the upstream never stops sending. Waiting for its close frame message by
    # message kept the upstream connection open for as long as it sent: now one deadline,
    # WS_CLOSE_TIMEOUT, bounds the close, then the connection is dropped
    ended: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def streaming(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            while not ws.closed:
                await ws.send_bytes(b"x" * 1_000_000)
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        finally:
            if not ended.done():
                ended.set_result(time.monotonic())
        return ws

    async with websocket_upstream(streaming) as upstream_url:
        route = {"name": "app", "upstream": upstream_url, "auth": "none"}
        proxy = await asyncio.to_thread(run_proxy, {"routes": [route]})
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(HANDSHAKE)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await asyncio.sleep(3.0)  # reads nothing: the proxy's sends to this client back up
        writer.transport.abort()
        left = time.monotonic()
        assert await asyncio.wait_for(ended, 3 * WS_CLOSE_TIMEOUT) - left < 2 * WS_CLOSE_TIMEOUT


@pytest.mark.parametrize("ended_by", ["upstream", "client", "client-vanishing"])
async def test_a_websocket_is_logged_with_the_101_it_got_however_it_ends(
    run_proxy: Callable[..., ProxyProcess], ended_by: str
) -> None:
    # aiohttp cancels the handler when the connection ends after a close, which the access log
    # took for a client abort (499); the client got its 101 and a whole session, as nginx logs it
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hi")
        if ended_by == "upstream":
            await ws.close(code=WSCloseCode.OK)
        else:
            async for _ in ws:
                pass
        return ws

    async with websocket_upstream(handler) as upstream_url:
        route = {"name": "app", "upstream": upstream_url, "auth": "none"}
        proxy = await asyncio.to_thread(run_proxy, {"routes": [route]})
        if ended_by == "client-vanishing":
            # no close frame: the TCP connection just drops
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(HANDSHAKE)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            await reader.readexactly(4)  # the upstream's "hi" frame
            writer.transport.abort()
        else:
            async with aiohttp.ClientSession() as client:
                ws = await client.ws_connect(f"http://127.0.0.1:{proxy.port}/ws")
                assert await ws.receive_str(timeout=5) == "hi"
                if ended_by == "upstream":
                    assert (await ws.receive(timeout=5)).type is WSMsgType.CLOSE
                await ws.close()
        deadline = time.monotonic() + 10
        while not (lines := _access_lines(proxy, "/ws")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert [line["status"] for line in lines] == [101]


async def test_a_websocket_keeps_relaying_while_the_proxy_drains(
    run_proxy: Callable[..., ProxyProcess], upstream: Upstream
) -> None:
    # after SIGTERM an open WebSocket may finish until the shutdown deadline: its messages still
    # go both ways, and the client's close ends it (and the drain) at once
    route = {"name": "app", "upstream": upstream.url, "auth": "none"}
    proxy = await asyncio.to_thread(run_proxy, {"server": {"shutdown_timeout": "20s"}, "routes": [route]})
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"http://127.0.0.1:{proxy.port}/ws")
        assert await ws.receive_str(timeout=5) == "hello -"
        proxy.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        await ws.send_str("still there")
        assert await ws.receive_str(timeout=5) == "echo:still there"
        await ws.close()
    # well before the deadline: nothing else was in flight
    assert await asyncio.to_thread(proxy.process.wait, 10) == 0, proxy.logs()


async def test_a_websocket_cut_at_the_shutdown_deadline_is_closed_going_away_on_both_sides(
    run_proxy: Callable[..., ProxyProcess],
) -> None:
    # RFC 6455 section 7.4.1: 1001 is a server going down; 1000 would tell the client the
    # conversation is over and it need not reconnect (to another replica)
    upstream_saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hi")
        async for _ in ws:
            pass
        upstream_saw.set_result(ws.close_code)
        return ws

    async with websocket_upstream(handler) as upstream_url:
        route = {"name": "app", "upstream": upstream_url, "auth": "none"}
        proxy = await asyncio.to_thread(run_proxy, {"server": {"shutdown_timeout": "1s"}, "routes": [route]})
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(f"http://127.0.0.1:{proxy.port}/ws")
            assert await ws.receive_str(timeout=5) == "hi"
            proxy.process.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=10)
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == WSCloseCode.GOING_AWAY
            await ws.close()
        assert await asyncio.wait_for(upstream_saw, 10) == WSCloseCode.GOING_AWAY
    assert await asyncio.to_thread(proxy.process.wait, 10) == 0, proxy.logs()


def _access_lines(proxy: ProxyProcess, path: str) -> list[dict[str, object]]:
    return [r for r in json_records(proxy.logs()) if r.get("logger") == "authproxy.access" and r.get("path") == path]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(b"Sec-WebSocket-Version: 13\r\n", id="no-key"),
        pytest.param(
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 5\r\n", id="unknown-version"
        ),
    ],
)
async def test_an_invalid_handshake_is_refused_before_the_upstream_is_dialled(fields: bytes) -> None:
    dialled: list[str] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        dialled.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    async with (
        websocket_upstream(handler) as upstream_url,
        serve_proxy(Route(upstream_url)) as url,
    ):
        host, proxy_port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(proxy_port))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + fields + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    assert dialled == []


async def test_an_http10_request_asking_to_upgrade_is_forwarded_as_a_plain_request() -> None:
    # RFC 9110 section 7.8: Upgrade in an HTTP/1.0 request is ignored, and RFC 6455 section 4.1
    # asks for HTTP/1.1: no 101 goes to an HTTP/1.0 client, no WebSocket is opened for it
    upgrades: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        upgrades.append(request.headers.get("Upgrade"))
        return web.Response(text="plain")

    async with websocket_upstream(handler) as upstream_url, serve_proxy(Route(upstream_url)) as url:
        head = HANDSHAKE.decode().replace("HTTP/1.1", "HTTP/1.0").replace("\r\n", "\n").rstrip("\n")
        status, _, body = await raw_request(url, head)
    assert (status, body, upgrades) == (200, b"plain", [None])


@pytest.mark.parametrize(
    ("received", "sent"),
    [
        pytest.param(1000, 1000, id="normal"),
        pytest.param(4001, 4001, id="application-code"),
        pytest.param(1005, 1000, id="no-status-is-never-sent"),
        pytest.param(1006, 1000, id="abnormal-is-never-sent"),
        pytest.param(1015, 1000, id="tls-failure-is-never-sent"),
        pytest.param(999, 1000, id="below-the-range"),
        pytest.param(5000, 1000, id="above-the-range"),
        pytest.param(None, 1000, id="no-code"),
    ],
)
def test_only_close_codes_that_may_go_on_the_wire_are_passed_on(received: object, sent: int) -> None:
    # RFC 6455 section 7.4.1: 1005, 1006 and 1015 are reserved for reporting, never sent
    assert _close_code(received) == sent


async def test_a_message_over_the_size_limit_is_never_relayed() -> None:
    received: list[int] = []

    async def unlimited(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)  # this upstream would take any size
        await ws.prepare(request)
        async for msg in ws:
            received.append(len(msg.data))
            await ws.send_str(f"got {len(msg.data)}")
        return ws

    async with (
        websocket_upstream(unlimited) as upstream_url,
        serve_proxy(Route(upstream_url)) as url,
        aiohttp.ClientSession() as client,
    ):
        ws = await client.ws_connect(url + "/ws", max_msg_size=0)
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"x" * (MAX_WS_MESSAGE + 1))
        msg = await ws.receive(timeout=10)
        # the proxy ends the WebSocket rather than buffer and pass on the message
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), msg
        await ws.close()
    assert received == []


@pytest.mark.parametrize(
    ("method", "fields", "upgrade"),
    [
        pytest.param("GET", {"Upgrade": "websocket", "Connection": "Upgrade"}, True, id="handshake"),
        pytest.param("GET", {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"}, True, id="as-firefox-sends"),
        pytest.param("POST", {"Upgrade": "websocket", "Connection": "Upgrade"}, False, id="not-a-get"),
        pytest.param("GET", {"Upgrade": "h2c", "Connection": "Upgrade"}, False, id="another-protocol"),
        pytest.param("GET", {"Upgrade": "websocket", "Connection": "keep-alive"}, False, id="connection-not-upgrade"),
        pytest.param("GET", {}, False, id="plain-get"),
    ],
)
def test_only_a_get_asking_to_upgrade_to_websocket_is_forwarded_as_one(
    method: str, fields: dict[str, str], upgrade: bool
) -> None:
    # RFC 6455 section 4.1: the opening handshake is a GET with both fields
    assert is_websocket_upgrade(method, CIMultiDict(fields)) is upgrade
