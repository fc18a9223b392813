"""The upstream receives each request framed and addressed as the proxy judged it (SPEC section 4).

A request the proxy judges as one thing must not reach the upstream as another: a body the
upstream would split into two requests (the second one past the gate, carrying identity headers
of the client's choosing), a target that names another host than the one the route and its
sign-in were chosen for, or bytes after a message with faulty framing. Header bytes that are
not UTF-8 get an answer like any other, never a 500.

``authproxy run`` forwards to a recording upstream that reads requests one after the other on
each connection, framed by their ``Content-Length`` or chunks, as a keep-alive server does, and
keeps every request it read. The routes: ``public.test`` (no sign-in), ``private.test`` (sign-in
required) and ``/any`` on any host (no sign-in), all to that upstream.
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, FaultProviderServer
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy

SECRET: Final = "framing-tests-session-secret-0123456789abcdef"
SMUGGLED: Final = b"GET /admin HTTP/1.1\r\nHost: private.test\r\nX-Forwarded-User: mallory\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Received:
    """One request as the upstream read it."""

    line: str
    fields: list[tuple[str, str]]
    body: bytes

    def field(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key.lower() == name.lower()]


class RecordingUpstream(socketserver.ThreadingTCPServer):
    """A keep-alive HTTP/1.1 server that answers ``200 ok`` to every request it reads, and keeps them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.received: list[Received] = []
        self.lock = threading.Lock()

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class _Recorder(socketserver.StreamRequestHandler):
    server: RecordingUpstream

    def handle(self) -> None:
        self.connection.settimeout(10)
        try:
            while (request := self._read_one()) is not None:
                with self.server.lock:
                    self.server.received.append(request)
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.wfile.flush()
        except (OSError, ValueError):
            return

    def _read_one(self) -> Received | None:
        line = self.rfile.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            return None
        fields: list[tuple[str, str]] = []
        while (header := self.rfile.readline().decode("latin-1").rstrip("\r\n")) != "":
            name, _, value = header.partition(":")
            fields.append((name, value.lstrip(" \t")))  # as sent: trailing whitespace kept
        lengths = [int(value) for name, value in fields if name.lower() == "content-length"]
        if any(name.lower() == "transfer-encoding" for name, _ in fields):
            body = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(lengths[0]) if lengths else b""
        return Received(line, fields, body)


@dataclass
class Stack:
    proxy: ProxyProcess
    upstream: RecordingUpstream


@pytest.fixture
def stack(fault_provider: FaultProviderServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upstream = RecordingUpstream(free_port())
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{upstream.server_address[1]}"
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": "http://private.test", "client_header_timeout": "1s"},
        "provider": {"issuer": fault_provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        "session": {"secrets": [SECRET], "cookie": {"secure": False}},
        "routes": [
            {"name": "public", "match": {"host": "public.test"}, "upstream": target, "auth": "none"},
            {"name": "private", "match": {"host": "private.test"}, "upstream": target},
            {"name": "any-host", "match": {"path_prefix": "/any"}, "upstream": target, "auth": "none"},
        ],
    }
    proxy = start_proxy(config, tmp_path_factory.mktemp("framing"))
    try:
        yield Stack(proxy, upstream)
    finally:
        proxy.kill()
        upstream.shutdown()
        upstream.server_close()


def exchange(proxy: ProxyProcess, data: bytes) -> bytes:
    """Send ``data`` on one connection and read until the proxy closes it (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def test_a_compressed_body_reaches_the_upstream_as_sent(stack: Stack) -> None:
    # decompressed, this body would go upstream under its compressed Content-Length, and the
    # upstream would read the request hidden after that length as a second one, past the gate
    compressed = gzip.compress(b"a" * 128 + SMUGGLED)
    head = (
        f"POST /form HTTP/1.1\r\nHost: public.test\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(compressed)}\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(stack.proxy, head.encode() + compressed)
    assert statuses(answer) == [200]
    [received] = stack.upstream.requests()
    assert received.line == "POST /form HTTP/1.1"
    assert received.body == compressed and received.field("Content-Encoding") == ["gzip"]


@pytest.mark.parametrize("codings", [b"gzip, chunked", b"Deflate,Chunked"])
def test_a_transfer_coding_other_than_chunked_is_refused_not_forwarded_unnamed(stack: Stack, codings: bytes) -> None:
    # the proxy re-chunks a body it forwards: any other coding would reach the upstream still
    # applied to the bytes but named nowhere, so the upstream would read gzip as the body itself
    body = gzip.compress(b"hello " * 20)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = b"POST /form HTTP/1.1\r\nHost: public.test\r\nTransfer-Encoding: " + codings + b"\r\n\r\n"
    answer = exchange(stack.proxy, head + chunked)
    assert statuses(answer) == [501]
    assert stack.upstream.requests() == []


@pytest.mark.parametrize(
    "target",
    ["http://public.test/secret", "http://PUBLIC.test:80/secret", "http://mallory@public.test/secret"],
)
def test_a_target_naming_another_host_than_host_is_refused(stack: Stack, target: str) -> None:
    # the route would be chosen for public.test (no sign-in) and the upstream given Host: private.test
    answer = exchange(stack.proxy, f"GET {target} HTTP/1.1\r\nHost: private.test\r\nConnection: close\r\n\r\n".encode())
    assert statuses(answer) == [400] and b"another host" in answer
    assert stack.upstream.requests() == []


def test_a_target_naming_the_host_of_host_is_served_as_that_host(stack: Stack) -> None:
    answer = exchange(
        stack.proxy, b"GET http://public.test/page?x=1 HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n"
    )
    assert statuses(answer) == [200]
    [received] = stack.upstream.requests()
    assert received.line == "GET /page?x=1 HTTP/1.1" and received.field("Host") == ["public.test"]


def test_after_an_http_1_0_message_with_transfer_encoding_nothing_more_is_read(stack: Stack) -> None:
    # RFC 9112 section 6.1: such framing is faulty; a front proxy reading it by another rule
    # would take what follows for part of the body, the proxy for a request of its own
    answer = exchange(
        stack.proxy,
        b"POST /form HTTP/1.0\r\nHost: public.test\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n" + b"GET /smuggled HTTP/1.1\r\nHost: public.test\r\n\r\n",
    )
    assert statuses(answer) == [200]
    assert [request.line.split()[1] for request in stack.upstream.requests()] == ["/form"]


def test_a_sign_in_from_a_browser_sending_header_bytes_that_are_not_utf_8_starts(stack: Stack) -> None:
    # the login loop's counter hashes the User-Agent; the redirect is read from X-Auth-Request-Redirect
    answer = exchange(
        stack.proxy,
        b"GET /oauth2/start HTTP/1.1\r\nHost: private.test\r\nUser-Agent: \xff\xfe\x80\r\n"
        b"X-Auth-Request-Redirect: /\xff\xfe\r\nConnection: close\r\n\r\n",
    )
    assert statuses(answer) == [302]


def test_after_an_upgrade_that_is_declined_the_connection_ends(stack: Stack) -> None:
    # the request is answered as a plain GET; aiohttp reads nothing more from such a connection,
    # so it is closed rather than left holding the pipelined request unanswered
    answer = exchange(
        stack.proxy,
        b"GET /first HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: public.test\r\n\r\n",
    )
    assert statuses(answer) == [200]
    assert [request.line.split()[1] for request in stack.upstream.requests()] == ["/first"]


@pytest.mark.parametrize("path", ["/page", "/any/page", "/oauth2/start"])
def test_a_host_field_that_is_not_a_host_is_refused(stack: Stack, path: str) -> None:
    # RFC 9112 section 3.2; it would otherwise reach the upstream as X-Forwarded-Host
    answer = exchange(stack.proxy, f"GET {path} HTTP/1.1\r\nHost: a b@c/d\r\nConnection: close\r\n\r\n".encode())
    assert statuses(answer) == [400]
    assert stack.upstream.requests() == []


@pytest.mark.parametrize(("path", "status"), [("/oauth2/backchannel_logout", 400), ("/oauth2/sign_out", 302)])
def test_a_form_that_never_arrives_holds_an_endpoint_no_longer_than_the_header_timeout(
    stack: Stack, path: str, status: int
) -> None:
    # a body announced and never sent would otherwise hold the connection, and a file
    # descriptor, for good: enough of them and the proxy accepts no one
    with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=10) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: private.test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 1000\r\n\r\nlogout_token=".encode()
        )
        started = time.monotonic()
        answer = connection.recv(65536)
        assert statuses(answer) == [status] and time.monotonic() - started < 5


# a plain HTTP/1.1 GET is the fast path's; with an empty body the same request is aiohttp's
PATHS = [pytest.param(b"", id="fast-path"), pytest.param(b"Content-Length: 0\r\n", id="aiohttp")]


@pytest.mark.parametrize("extra", PATHS)
def test_trailing_whitespace_is_no_part_of_a_field_value_on_either_path(stack: Stack, extra: bytes) -> None:
    # RFC 9112 section 5.1: the upstream gets the value without it, whichever path serves
    answer = exchange(
        stack.proxy,
        b"GET /page HTTP/1.1\r\nHost: public.test\r\nX-Note: as sent \t\r\n" + extra + b"Connection: close\r\n\r\n",
    )
    assert statuses(answer) == [200]
    [received] = stack.upstream.requests()
    assert received.field("X-Note") == ["as sent"]


@pytest.mark.parametrize("extra", PATHS)
@pytest.mark.parametrize("field", ["User-Agent", "Content-Type", "Max-Forwards"])
def test_a_field_that_may_appear_once_given_twice_is_refused_on_either_path(
    stack: Stack, extra: bytes, field: str
) -> None:
    line = f"{field}: a\r\n{field}: b\r\n".encode()
    answer = exchange(
        stack.proxy, b"GET /page HTTP/1.1\r\nHost: public.test\r\n" + line + extra + b"Connection: close\r\n\r\n"
    )
    assert statuses(answer) == [400]
    assert stack.upstream.requests() == []
