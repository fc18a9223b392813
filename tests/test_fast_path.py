"""The fast path (``authproxy.fast_path``): simple GET/HEAD served without aiohttp's web layer.

Pure tables for what it takes (and leaves to aiohttp); then the real ``authproxy run`` in front
of the test upstream, driven over raw keep-alive sockets, proving that a client cannot tell the
two paths apart: the same headers reach the upstream, the same answers come back, streaming,
timeouts and error pages behave as on the aiohttp path, and a connection that asks for
something else is handed to aiohttp mid-stream without losing a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from authproxy.config import AllowConfig
from authproxy.fast_path import MAX_HANDOFFS_IN_ROW
from authproxy.fast_requests import MAX_HEAD, RecordMemo, answer_head, parse_head, simple_path
from authproxy.policy import compile_allow
from authproxy.sessions.record import SessionRecord
from authproxy.upstream_http import HeadTemplate
from tests.support.logout import (
    COOKIE,
    Stack,
    browser,
    fault_stack,
    log_in,
    session_cookie,
    upstream_seen,
    xhr,
)
from tests.support.logs import logged_line
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import MIB, Upstream, upstream_fixture  # noqa: F401

DATE = "Thu, 03 Dec 2026 08:00:00 GMT"


# ---------------------------------------------------------------------------------------------- pure


def _record(**changes: Any) -> SessionRecord:
    fields: dict[str, Any] = {
        "sub": "alice",
        "claims": {"sub": "alice", "groups": ["staff"]},
        "access_token": "at-1",
        "created_at": 0.0,
        "last_seen_at": 0.0,
        "absolute_expires_at": 1e12,
    }
    return SessionRecord(**{**fields, **changes})


HEAD = b"GET / HTTP/1.1\r\nHost: up\r\nX-Request-Id: 0123abcd\r\nAccept: */*\r\n\r\n"


def test_a_request_head_is_opened_at_its_request_id() -> None:
    template = HeadTemplate.around(HEAD, "X-Request-Id", "0123abcd")
    assert template is not None
    assert template.render("0123abcd") == HEAD
    assert template.render("ffff") == HEAD.replace(b"0123abcd", b"ffff")


@pytest.mark.parametrize(
    ("head", "value"),
    [
        pytest.param(HEAD, "99", id="value-not-there"),
        pytest.param(HEAD.replace(b"*/*", b"0123abcd"), "0123abcd", id="value-twice"),
        pytest.param(HEAD.replace(b"Accept: */*", b"X-Request-Id: 1"), "0123abcd", id="field-twice"),
        pytest.param(HEAD.replace(b"X-Request-Id", b"X-Other"), "0123abcd", id="no-such-field"),
        pytest.param(HEAD, "0123", id="part-of-the-value"),
        pytest.param(HEAD, "", id="empty"),
    ],
)
def test_a_request_head_is_not_opened_where_the_place_is_unclear(head: bytes, value: str) -> None:
    assert HeadTemplate.around(head, "X-Request-Id", value) is None


def test_what_a_record_means_is_kept_only_while_that_very_record_stands() -> None:
    memo: RecordMemo[bool] = RecordMemo()
    record, route, other_route = _record(), object(), object()
    admits_staff = compile_allow(AllowConfig(groups=["staff"]))
    memo.put(record, route, admits_staff.allows(record.claims))
    assert memo.get(record, route) is True
    assert memo.get(record, other_route) is None
    # a changed session is a new record (refresh, new claims): nothing derived from the old one counts
    changed = dataclasses.replace(record, claims={"sub": "alice", "groups": ["guests"]})
    assert memo.get(changed, route) is None
    memo.put(changed, route, admits_staff.allows(changed.claims))
    assert memo.get(changed, route) is False
    assert memo.get(dataclasses.replace(changed), route) is None
    # even a record whose claims or tokens were swapped in place is decided again
    record.access_token = "at-2"
    assert memo.get(record, route) is None


def test_a_record_memo_keeps_nothing_of_a_record_no_one_holds() -> None:
    memo: RecordMemo[str] = RecordMemo()
    record, route = _record(), object()
    memo.put(record, route, "derived")
    del record
    gc.collect()
    assert len(memo) == 0


def test_the_record_memo_stays_bounded() -> None:
    memo: RecordMemo[int] = RecordMemo(max_entries=3)
    records = [_record() for _ in range(10)]
    route = object()
    for n, record in enumerate(records):
        memo.put(record, route, n)
        assert len(memo) <= 3 and memo.get(record, route) == n


@pytest.mark.parametrize(
    ("head", "method", "target"),
    [
        pytest.param(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/a?b=1", id="get"),
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n", "HEAD", "/", id="head"),
    ],
)
def test_simple_heads_are_parsed(head: bytes, method: str, target: str) -> None:
    parsed = parse_head(head)
    assert parsed is not None and (parsed.method, parsed.target, parsed.version) == (method, target, "1.1")
    assert ("Host", "x") in parsed.fields and parsed.keep_alive


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: \xc3\xa9\r\n\r\n", id="non-ascii"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", id="too-big"),
        pytest.param(b"GET / HTTP/1.1\r\nHost x\r\n\r\n", id="garbled-field"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", id="upgrade"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", id="too-many-fields"),
    ],
)
def test_unusual_heads_are_left_to_aiohttp(head: bytes) -> None:
    assert parse_head(head) is None


@pytest.mark.parametrize(
    "field",
    ["Content-Length: 5", "Transfer-Encoding: chunked", "content-length: 0", "Expect: 100-continue", "Upgrade: h2c"],
)
def test_a_head_announcing_a_body_or_a_switch_is_left_to_aiohttp(field: str) -> None:
    # the fast path reads heads only: whatever follows such a head is not the next request
    assert parse_head(f"GET / HTTP/1.1\r\nHost: x\r\n{field}\r\n\r\n".encode()) is None


@pytest.mark.parametrize(
    ("fields", "keep_alive"),
    [
        pytest.param("Connection: close", False, id="close"),
        pytest.param("Connection: keep-alive, Close", False, id="close-among-tokens"),
        pytest.param("Connection: keep-alive\r\nConnection: close", False, id="close-in-a-second-field"),
        pytest.param("Connection: close\r\nConnection: closed", False, id="close-in-the-first-field"),
        pytest.param("Connection: closed, x-close-later", True, id="close-only-inside-tokens"),
        pytest.param("Connection: keep-alive", True, id="keep-alive"),
        pytest.param("X-A: close", True, id="close-in-another-field"),
    ],
)
def test_connection_close_is_seen(fields: str, keep_alive: bool) -> None:
    parsed = parse_head(f"GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n".encode())
    assert parsed is not None and parsed.keep_alive is keep_alive


def test_http_1_0_does_not_keep_the_connection() -> None:
    parsed = parse_head(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    assert parsed is not None and parsed.version == "1.0" and not parsed.keep_alive


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("/app/x?q=1&r", ("/app/x", "q=1&r"), id="path-and-query"),
        pytest.param("/", ("/", ""), id="root"),
        pytest.param("/oauth2x", ("/oauth2x", ""), id="prefix-lookalike"),
        pytest.param("/a%2Fb", None, id="percent-encoded"),
        pytest.param("/public/../admin", None, id="dot-segments"),
        pytest.param("/a/./b", None, id="dot-segment"),
        pytest.param("/a/..;x/b", None, id="dot-segment-with-parameter"),
        pytest.param("/shop;jsessionid=1/cart?q", ("/shop;jsessionid=1/cart", "q"), id="segment-parameter"),
        pytest.param("/a\\b", None, id="backslash"),
        pytest.param("//evil/x", None, id="double-slash-start"),
        pytest.param("/a//b", None, id="double-slash"),
        pytest.param("/oauth2/start", None, id="auth-endpoint"),
        pytest.param("/oauth2", None, id="auth-prefix"),
        pytest.param("/oauth2;x/start", None, id="auth-endpoint-with-parameter"),
        pytest.param("http://h/x", None, id="absolute-form"),
        pytest.param("*", None, id="asterisk"),
        pytest.param("/x#frag", None, id="fragment"),
    ],
)
def test_only_plain_paths_outside_the_auth_prefix_take_the_fast_path(
    target: str, expected: tuple[str, str] | None
) -> None:
    assert simple_path(target, "/oauth2") == expected


def _fields(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    status_line, *lines = head.decode().removesuffix("\r\n\r\n").split("\r\n")
    return status_line, [(name, value) for name, _, value in (line.partition(": ") for line in lines)]


@pytest.mark.parametrize(
    ("method", "status", "given", "keep_alive", "chunked", "expected"),
    [
        pytest.param("GET", 200, [("Content-Length", "5")], True, False,
                     [("Content-Length", "5"), ("Content-Type", "application/octet-stream")], id="length"),
        pytest.param("GET", 200, [("Content-Type", "text/plain")], True, True,
                     [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")], id="no-length-chunked"),
        pytest.param("HEAD", 200, [("Content-Length", "5")], True, False, [("Content-Length", "5")], id="head"),
        pytest.param("GET", 204, [("Content-Length", "0")], True, False, [], id="no-content"),
        pytest.param("GET", 304, [("ETag", "x")], True, False, [("ETag", "x")], id="not-modified"),
        pytest.param("GET", 200, [("Content-Length", "0")], False, False,
                     [("Content-Length", "0"), ("Connection", "close")], id="closing"),
        pytest.param("GET", 200, [("Content-Length", "1"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
                                  ("Keep-Alive", "t=5"), ("Transfer-Encoding", "chunked"), ("Set-Cookie", "a=1"),
                                  ("Set-Cookie", "b=2")], True, False,
                     [("Content-Length", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                      ("Content-Type", "application/octet-stream")], id="hop-by-hop-dropped-repeats-kept"),
    ],
)  # fmt: skip
def test_answers_are_framed_as_aiohttp_frames_them(
    method: str,
    status: int,
    given: list[tuple[str, str]],
    keep_alive: bool,
    chunked: bool,
    expected: list[tuple[str, str]],
) -> None:
    head, is_chunked = answer_head(method, status, "Reason", CIMultiDict(given), keep_alive=keep_alive, date=DATE)
    status_line, fields = _fields(head)
    assert status_line == f"HTTP/1.1 {status} Reason" and is_chunked is chunked
    assert ("Date", DATE) in fields and any(k == "Server" and v.startswith("Python/") for k, v in fields)
    assert [f for f in fields if f[0] not in ("Date", "Server")] == expected


def test_an_upstream_date_and_server_are_kept() -> None:
    given = CIMultiDict({"Date": "then", "Server": "app/1", "Content-Length": "0"})
    _, fields = _fields(answer_head("GET", 200, "OK", given, keep_alive=True, date=DATE)[0])
    assert ("Date", "then") in fields and ("Server", "app/1") in fields and ("Date", DATE) not in fields


# ---------------------------------------------------------------------------------------------- real proxy


class Connection:
    """One keep-alive client connection that reads answers one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, method: str = "GET", timeout: float = 10.0) -> tuple[int, CIMultiDict[str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields.add(name.strip(), value.strip())
        if method == "HEAD" or status in (204, 304):
            return status, fields, b""
        if "Content-Length" in fields:
            return (
                status,
                fields,
                await asyncio.wait_for(self.reader.readexactly(int(fields["Content-Length"])), timeout),
            )
        if fields.get("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size = int((await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)).strip(), 16)
                data = await asyncio.wait_for(self.reader.readexactly(size + 2), timeout)
                if size == 0:
                    return status, fields, body
                body += data[:-2]
        return status, fields, await asyncio.wait_for(self.reader.read(), timeout)

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Connection]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    connection = Connection(reader, writer)
    try:
        yield connection
    finally:
        await connection.close()


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: app.test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def seen(body: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(body)
    return answer


def handovers(proxy: ProxyProcess) -> dict[str, int]:
    """``authproxy_connection_handovers_total`` by ``to``: aiohttp (handed over), fast_path (given back)."""
    with urllib.request.urlopen(proxy.admin_url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counts = {"aiohttp": 0, "fast_path": 0}
    for line in text.splitlines():
        if line.startswith("authproxy_connection_handovers_total{"):
            labels, value = line.rsplit(" ", 1)
            to = labels.split('to="', 1)[1].split('"', 1)[0]
            counts[to] += int(float(value))
    return counts


HEADER_TIMEOUT = 1.0


@pytest.fixture
async def proxy(run_proxy: Callable[..., ProxyProcess], upstream: Upstream) -> ProxyProcess:
    config = {
        "server": {"client_header_timeout": f"{HEADER_TIMEOUT}s"},
        "routes": [
            {"name": "app", "upstream": upstream.url, "auth": "none", "timeout": "1s"},
            {
                "name": "stripped",
                "match": {"path_prefix": "/strip"},
                "upstream": upstream.url + "/base",
                "auth": "none",
                "strip_path_prefix": True,
                "pass_host_header": False,
            },
        ],
    }
    return await asyncio.to_thread(run_proxy, config)


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"


@pytest.mark.parametrize(
    ("framing", "body", "size"),
    [
        pytest.param(f"Content-Length: {len(SMUGGLED)}", SMUGGLED, len(SMUGGLED), id="content-length"),
        pytest.param(
            "Transfer-Encoding: chunked",
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
            len(SMUGGLED),
            id="chunked",
        ),
    ],
)
async def test_a_get_with_a_body_is_read_whole_and_nothing_in_it_is_taken_for_a_request(
    proxy: ProxyProcess, framing: str, body: bytes, size: int
) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/echo", framing) + body)
        status, _, answer = await connection.answer()
        assert status == 200 and seen(answer)["path"] == "/echo" and seen(answer)["body_size"] == size
        await connection.send(get("/after"))
        status, _, answer = await connection.answer()
        assert status == 200 and seen(answer)["path"] == "/after"


async def test_a_head_longer_than_the_fast_path_reads_is_answered_by_aiohttp_not_buffered(
    proxy: ProxyProcess,
) -> None:
    # no end of head in sight: the fast path stops buffering and aiohttp refuses the long line
    # (kept, it would wait for the header timeout and close without a word)
    async with connect(proxy.url) as connection:
        await connection.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Long: " + b"a" * (MAX_HEAD + 100))
        status, _, _ = await connection.answer()
    assert status in (400, 431)


async def test_a_request_no_route_matches_is_404_and_never_forwarded(
    run_proxy: Callable[..., ProxyProcess], upstream: Upstream
) -> None:
    # SPEC section 2: no route, 404 (the upstream would echo any path with a 200)
    config = {"routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "none"}]}
    proxy = await asyncio.to_thread(run_proxy, config)
    async with connect(proxy.url) as connection:
        await connection.send(get("/app/x"))
        status, _, body = await connection.answer()
        assert status == 200 and seen(body)["path"] == "/app/x"
        for request in (get("/elsewhere"), get("/elsewhere", "Content-Length: 0", method="POST")):
            await connection.send(request)
            status, _, body = await connection.answer()
            assert status == 404 and b"/elsewhere" not in body


async def test_a_request_with_two_hosts_is_refused(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/echo", "Host: other.test"))
        status, _, _ = await connection.answer()
    assert status == 400


def _comparable(fields: list[list[str]]) -> list[tuple[str, str]]:
    # the request id is new for every request, the upstream's peer port differs per connection
    return [(k.lower(), v) for k, v in fields if k.lower() != "x-request-id"]


async def test_both_paths_send_the_upstream_the_same_headers_and_answer_alike(proxy: ProxyProcess) -> None:
    spoofing = ("X-Forwarded-User: mallory", "X_Forwarded_User: mallory", "X-Auth-Request-Email: m@x", "Accept: */*")
    async with connect(proxy.url) as fast:
        await fast.send(get("/echo?a=1", *spoofing))
        fast_status, fast_fields, fast_body = await fast.answer()
    async with connect(proxy.url) as slow:
        # a request with a body hands the connection to aiohttp; the GET after it stays there
        await slow.send(get("/echo", "Content-Length: 0", method="POST"))
        assert (await slow.answer())[0] == 200
        await slow.send(get("/echo?a=1", *spoofing))
        slow_status, slow_fields, slow_body = await slow.answer()
    assert fast_status == slow_status == 200
    fast_seen, slow_seen = seen(fast_body), seen(slow_body)
    assert _comparable(fast_seen["headers"]) == _comparable(slow_seen["headers"])
    assert (fast_seen["path"], fast_seen["query"]) == (slow_seen["path"], slow_seen["query"]) == ("/echo", "a=1")
    names = {k.lower() for k, _ in fast_seen["headers"]}
    assert not names & {"x-forwarded-user", "x_forwarded_user", "x-auth-request-email"}
    for fields in (fast_fields, slow_fields):
        fields.popall("Date")
    assert sorted(fast_fields.items()) == sorted(slow_fields.items())


async def test_a_repeated_request_reaches_the_upstream_as_a_new_one_each_time(proxy: ProxyProcess) -> None:
    spoofing = ("X-Forwarded-User: mallory", "X-Request-Id: chosen-by-client", "Accept: */*")
    requests = [
        get("/echo?a=1", *spoofing),
        get("/echo?a=1", *spoofing),
        get("/echo?a=1", *spoofing),
        get("/echo?a=2", *spoofing),
        get("/echo?a=2", "Accept: text/plain"),
        get("/strip/echo?a=2", "Accept: text/plain"),
        get("/strip/echo?a=2", "Accept: text/plain"),
        get("/echo?a=2", "Accept: text/plain", method="HEAD"),
    ]
    answers = []
    async with connect(proxy.url) as connection:
        for request in requests:
            await connection.send(request)
            answers.append(await connection.answer(method=request.split(b" ", 1)[0].decode()))
    fresh: list[dict[str, Any]] = []
    fresh_fields: list[CIMultiDict[str]] = []
    for request in requests[:-1]:
        async with connect(proxy.url) as connection:
            await connection.send(request)
            _, answer_fields, body = await connection.answer()
            fresh.append(seen(body))
            fresh_fields.append(answer_fields)
    assert all(status == 200 for status, _, _ in answers)
    for (_, answer_fields, _), alone_fields in zip(answers, fresh_fields, strict=False):
        answer_fields.popall("Date"), alone_fields.popall("Date")
        assert sorted(answer_fields.items()) == sorted(alone_fields.items())
    repeated = [seen(body) for _, _, body in answers[:-1]]
    for on_one_connection, alone in zip(repeated, fresh, strict=True):
        assert _comparable(on_one_connection["headers"]) == _comparable(alone["headers"])
        assert (on_one_connection["path"], on_one_connection["query"]) == (alone["path"], alone["query"])
        assert not {k.lower() for k, _ in on_one_connection["headers"]} & {"x-forwarded-user"}
    ids = [v for answer in repeated for k, v in answer["headers"] if k.lower() == "x-request-id"]
    assert len(ids) == len(repeated) == len(set(ids)) and "chosen-by-client" not in ids


async def test_keep_alive_serves_many_requests_and_hands_over_mid_connection(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        for i in range(3):
            await connection.send(get(f"/echo?i={i}"))
            status, _, body = await connection.answer()
            assert status == 200 and seen(body)["query"] == f"i={i}"
        # an unknown auth endpoint, a dot segment and an encoded path: aiohttp's answers
        await connection.send(get("/oauth2/nothing-here"))
        assert (await connection.answer())[0] == 404
        await connection.send(get("/a/../b"))
        assert (await connection.answer())[0] == 400
        await connection.send(get("/echo%2Fx"))
        status, _, body = await connection.answer()
        assert status == 200 and seen(body)["path"] == "/echo%2Fx"


async def test_a_path_parameter_is_served_here_unless_dropping_it_changes_the_route(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        # ;jsessionid within the app route: forwarded as sent, by the fast path
        await connection.send(get("/echo;jsessionid=1/x"))
        status, _, body = await connection.answer()
        assert status == 200 and seen(body)["path"] == "/echo;jsessionid=1/x"
        assert await asyncio.to_thread(handovers, proxy) == {"aiohttp": 0, "fast_path": 0}
        # chosen as the / route, read as /strip/x by a server that drops parameters: aiohttp's 400
        await connection.send(get("/strip;x/x"))
        assert (await connection.answer())[0] == 400
        assert (await asyncio.to_thread(handovers, proxy))["aiohttp"] == 1


async def test_a_connection_goes_back_and_forth_between_the_paths_without_losing_a_byte(proxy: ProxyProcess) -> None:
    # aiohttp's GETs (a 404 under the auth prefix) give the connection back to the fast path;
    # a POST keeps it with aiohttp until a GET is answered; a run of aiohttp's requests longer
    # than MAX_HANDOFFS_IN_ROW leaves it with aiohttp, which answers the same
    sequence = [
        (get("/oauth2/nothing-here"), 404, None),
        (get("/echo?n=1"), 200, "n=1"),
        (get("/oauth2/nothing-here", method="HEAD"), 404, None),
        (get("/echo?n=2"), 200, "n=2"),
        (get("/echo", "Content-Length: 3", method="POST") + b"a=1", 200, ""),
        (get("/echo?n=3"), 200, "n=3"),
        *[(get("/oauth2/nothing-here"), 404, None)] * 12,
        (get("/echo?n=4"), 200, "n=4"),
        (get("/echo?n=5"), 200, "n=5"),
    ]
    async with connect(proxy.url) as connection:
        for data, status, query in sequence:
            await connection.send(data)
            method = data.split(b" ", 1)[0].decode()
            got, _, body = await connection.answer(method=method)
            assert got == status, data
            if query is not None:
                assert seen(body)["query"] == query
    # handed over: the 404, the HEAD 404, the POST, then 404s until MAX_HANDOFFS_IN_ROW in a
    # row (the POST began the row, the GET after it was aiohttp's); given back: after each GET
    # or HEAD aiohttp answered while the row was shorter than that
    row = MAX_HANDOFFS_IN_ROW - 1
    assert await asyncio.to_thread(handovers, proxy) == {"aiohttp": 3 + row, "fast_path": 3 + row - 1}


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(get("/echo"), id="fast-path"),
        pytest.param(get("/echo", "Content-Length: 3", method="POST") + b"a=1", id="aiohttp"),
    ],
)
async def test_the_upstream_connection_is_kept_for_the_next_request_on_both_paths(
    proxy: ProxyProcess, request_bytes: bytes
) -> None:
    ports = []
    async with connect(proxy.url) as connection:
        for _ in range(3):
            await connection.send(request_bytes)
            status, _, body = await connection.answer()
            assert status == 200
            ports.append(seen(body)["peer_port"])
    assert ports[0] and len(set(ports)) == 1, ports


async def test_a_connection_given_back_is_not_closed_later_by_aiohttps_keep_alive_timer(proxy: ProxyProcess) -> None:
    # aiohttp answers the 404 and gives the connection back; its own keep-alive timer (the
    # header timeout, HEADER_TIMEOUT here) must then be let go, or it would close the
    # connection under the fast path's requests that follow
    async with connect(proxy.url) as connection:
        await connection.send(get("/oauth2/nothing-here"))
        assert (await connection.answer())[0] == 404
        for i in range(8):
            await asyncio.sleep(HEADER_TIMEOUT / 4)
            await connection.send(get(f"/echo?i={i}"))
            status, _, body = await connection.answer()
            assert status == 200 and seen(body)["query"] == f"i={i}"


async def test_a_head_with_bare_line_feeds_is_answered_like_aiohttp_answers_it(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(b"GET /echo HTTP/1.1\nHost: app.test\nConnection: close\n\n")
        data = await asyncio.wait_for(connection.reader.read(), 5)
    # aiohttp refuses it (400), and at once, not after the head timeout
    assert data.startswith(b"HTTP/1.") and b" 400 " in data.split(b"\r\n", 1)[0]


async def test_pipelined_requests_are_answered_in_order(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/echo?n=1") + get("/echo?n=2") + get("/echo?n=3", "Content-Length: 0", method="PUT"))
        answers = [await connection.answer() for _ in range(3)]
    assert [seen(body)["query"] for _, _, body in answers] == ["n=1", "n=2", "n=3"]
    assert seen(answers[2][2])["method"] == "PUT"


async def test_strip_prefix_and_upstream_host(proxy: ProxyProcess, upstream: Upstream) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/strip/echo?x"))
        _, _, body = await connection.answer()
    answer = seen(body)
    assert answer["path"] == "/base/echo" and answer["query"] == "x"
    assert dict((k.lower(), v) for k, v in answer["headers"])["host"] == upstream.url.removeprefix("http://")


async def test_head_and_chunked_and_length_delimited_bodies(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/big?mb=1", method="HEAD"))
        status, fields, body = await connection.answer("HEAD")
        assert status == 200 and fields["Content-Length"] == str(MIB) and body == b""
        await connection.send(get("/big?mb=2"))
        status, fields, body = await connection.answer()
        assert fields["Content-Length"] == str(2 * MIB) and len(body) == 2 * MIB
        await connection.send(get("/big?mb=2&chunked=1"))
        status, fields, body = await connection.answer()
        assert fields["Transfer-Encoding"] == "chunked" and len(body) == 2 * MIB


async def test_a_chunked_answer_whose_end_comes_late_is_ended_once(proxy: ProxyProcess) -> None:
    # /chunked pauses before its last chunk: the end of the body is read on its own, after the
    # last data, and must close the answer exactly once, or the next answer starts with its bytes
    async with connect(proxy.url) as connection:
        for _ in range(2):
            await connection.send(get("/chunked"))
            status, fields, body = await connection.answer()
            assert status == 200 and fields["Transfer-Encoding"] == "chunked"
            assert body == b"alpha\nbeta\ngamma\n"
        await connection.send(get("/echo?after=chunked"))
        status, _, body = await connection.answer()
        assert status == 200 and seen(body)["query"] == "after=chunked"


async def test_chunks_reach_the_client_as_the_upstream_writes_them(proxy: ProxyProcess, upstream: Upstream) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/sse"))
        head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head
        first = await asyncio.wait_for(connection.reader.readuntil(b"\n\n"), 5)
        assert b"data:" in first  # before the upstream has finished
        upstream.release.set()


@pytest.fixture
async def streaming_proxy(run_proxy: Callable[..., ProxyProcess], upstream: Upstream) -> ProxyProcess:
    """A route whose timeout is far longer than the tests below wait: only the proxy ends an exchange."""
    config = {"routes": [{"name": "app", "upstream": upstream.url, "auth": "none", "timeout": "60s"}]}
    return await asyncio.to_thread(run_proxy, config)


async def test_a_client_that_closes_during_an_event_stream_ends_the_upstream_exchange_at_once(
    streaming_proxy: ProxyProcess, upstream: Upstream
) -> None:
    # a closed EventSource or a tab navigated away: the client's FIN comes while the stream is
    # quiet. It used to hold the upstream's stream until two more writes or the route timeout;
    # as with nginx, the exchange now ends at once and is logged as 499
    async with connect(streaming_proxy.url) as connection:
        await connection.send(get("/sse"))
        head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head and b"Transfer-Encoding: chunked" in head
        await asyncio.wait_for(connection.reader.readuntil(b"\n\n"), 5)  # the first event
        connection.writer.write_eof()
        await asyncio.wait_for(upstream.sse_abandoned.wait(), 5)
        # the connection ends (cut: a reset is as good as a close here), without the last chunk
        try:
            rest = await asyncio.wait_for(connection.reader.read(), 5)
        except ConnectionResetError:
            rest = b""
        assert not rest.endswith(b"0\r\n\r\n")
    await logged_line(streaming_proxy, '"path":"/sse"', '"status":499')


async def test_a_client_that_half_closed_before_its_answer_began_still_gets_the_whole_stream(
    streaming_proxy: ProxyProcess, upstream: Upstream
) -> None:
    # a client that sends its request and shuts its side at once (nc -N, some scripts) waits
    # for the answer: its FIN came before the answer, so the stream is relayed to its end
    async with connect(streaming_proxy.url) as connection:
        await connection.send(get("/sse"))
        connection.writer.write_eof()
        head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head and b"Connection: close" in head
        await asyncio.sleep(0.3)
        upstream.release.set()
        rest = await asyncio.wait_for(connection.reader.read(), 5)
    assert b"data: second" in rest and b"data: third" in rest and rest.endswith(b"0\r\n\r\n")
    assert not upstream.sse_abandoned.is_set()


@pytest.mark.parametrize("framing", ["", "&chunked=1"], ids=["content-length", "chunked"])
async def test_a_half_closed_client_that_reads_slowly_still_holds_the_upstream_back(
    streaming_proxy: ProxyProcess, framing: str
) -> None:
    # a client that shuts its side after its request (nc -N) and then reads nothing: the
    # download must wait for it, not pile up in the proxy's memory (it read the whole 300 MiB
    # into the client's send buffer, ~300 MB of RSS within seconds)
    before = streaming_proxy.rss()
    async with connect(streaming_proxy.url) as connection:
        await connection.send(get(f"/big?mb=300{framing}"))
        connection.writer.write_eof()
        await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.sleep(3)
        grown = streaming_proxy.rss() - before
    assert grown < 64 * MIB, f"the proxy's memory grew by {grown / MIB:.0f} MiB"


async def test_upstream_failures_are_502_and_504_pages(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/reset", "Accept: application/json"))
        status, fields, body = await connection.answer()
        assert status == 502 and json.loads(body)["error"] and "Traceback" not in body.decode()
        assert fields["X-Request-Id"] == json.loads(body)["request_id"]
        await connection.send(get("/slow?s=3", "Accept: text/html"))
        status, fields, body = await connection.answer(timeout=5)
        assert status == 504 and fields["Content-Type"].startswith("text/html") and b"<html" in body.lower()
        # the connection is still good
        await connection.send(get("/echo"))
        assert (await connection.answer())[0] == 200


async def test_an_upstream_going_silent_mid_body_cuts_the_answer_short(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/stall"))
        started = time.monotonic()
        head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head
        # the idle timeout (the route's 1 s) ends the connection without the final chunk
        data = await asyncio.wait_for(connection.reader.read(), 5)
        assert not data.endswith(b"0\r\n\r\n") and time.monotonic() - started < 4
    # logged with the status that was sent, not as a client that left (499): the upstream failed
    line = await logged_line(proxy, '"path":"/stall"')
    assert '"status":200' in line, line


async def test_connection_close_is_honoured(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/echo", "Connection: close"))
        status, fields, _ = await connection.answer()
        assert status == 200 and fields["Connection"] == "close"
        assert await connection.closed()


async def test_a_head_that_never_completes_is_cut_off(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\n")
        started = time.monotonic()
        assert await connection.closed(timeout=HEADER_TIMEOUT + 3)
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.8
    async with connect(proxy.url) as idle:
        await idle.send(get("/echo"))
        assert (await idle.answer())[0] == 200
        # idle after an answer: the same clock runs again
        assert await idle.closed(timeout=HEADER_TIMEOUT + 3)


async def test_a_client_that_leaves_mid_download_is_logged_as_499(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/big?mb=64"))
        await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
    line = await logged_line(proxy, '"status":499')
    assert '"path":"/big"' in line and "mb=64" not in line
    # the proxy serves on
    async with connect(proxy.url) as again:
        await again.send(get("/echo"))
        assert (await again.answer())[0] == 200


async def test_a_client_that_leaves_while_aiohttps_path_waits_is_logged_as_499_and_nothing_else(
    streaming_proxy: ProxyProcess,
) -> None:
    # HTTP/1.0 goes through aiohttp's web layer, which cancels the handler when its client
    # leaves; the cancellation must go on up to aiohttp, not end the handler as if it had answered
    async with connect(streaming_proxy.url) as connection:
        await connection.send(b"GET /slow?s=5 HTTP/1.0\r\nHost: app.test\r\n\r\n")
        await asyncio.sleep(0.5)  # the proxy is waiting for the upstream's answer
    await logged_line(streaming_proxy, '"path":"/slow"', '"status":499')
    await asyncio.sleep(0.5)
    assert [line for line in streaming_proxy.logs().splitlines() if '"level":"error"' in line] == []


@pytest.mark.parametrize("version", ["1.1", "1.0"], ids=["fast-path", "aiohttp"])
async def test_a_client_that_stops_reading_is_cut_off_after_the_route_timeout(
    proxy: ProxyProcess, upstream: Upstream, version: str
) -> None:
    # a client that takes nothing more of a download (a slow-read attack, a peer gone without a
    # reset) held its connection and the upstream's exchange open for good. As with nginx's
    # send_timeout, the proxy waits the route's timeout (1 s here) for it to take more, then
    # closes both. HTTP/1.0 requests are answered by aiohttp's path
    async with connect(proxy.url) as connection:
        await connection.send(f"GET /big?mb=300 HTTP/{version}\r\nHost: app.test\r\n\r\n".encode())
        await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(upstream.big_abandoned.wait(), 10)
        received = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(connection.reader.read(MIB), 5):
                received += len(chunk)
    assert received < 300 * MIB
    await logged_line(proxy, '"status":499')
    lines = proxy.logs().splitlines()
    cut = next(line for line in lines if "client stopped taking" in line)
    assert '"route":"app"' in cut and '"timeout_s":1.0' in cut
    request_id = json.loads(cut)["request_id"]
    logged = next(json.loads(line) for line in lines if f'"request_id":"{request_id}"' in line and '"status"' in line)
    assert logged["path"] == "/big" and logged["status"] == 499


@pytest.mark.parametrize("version", ["1.1", "1.0"], ids=["fast-path", "aiohttp"])
async def test_an_upstream_cannot_set_the_proxys_own_cookies(proxy: ProxyProcess, version: str) -> None:
    # the session cookie would sign the browser in as whoever it names: it is the proxy's alone
    names = "name=__Host-authproxy_session&name=__Host-authproxy_session_flow_0123&name=theme"
    async with connect(proxy.url) as connection:
        await connection.send(f"GET /set-cookies?{names} HTTP/{version}\r\nHost: app.test\r\n\r\n".encode())
        status, fields, _ = await connection.answer()
        assert status == 200
    assert fields.getall("Set-Cookie") == ["theme=planted; Path=/"]
    await logged_line(proxy, "upstream tried to set authproxy's own cookie")


@pytest.mark.parametrize("version", ["1.1", "1.0"], ids=["fast-path", "aiohttp"])
async def test_an_answer_forwarded_without_identity_is_left_to_its_caching(proxy: ProxyProcess, version: str) -> None:
    # an auth: none route: the same page for everyone, which a shared cache may keep
    async with connect(proxy.url) as connection:
        await connection.send(f"GET /cached HTTP/{version}\r\nHost: app.test\r\n\r\n".encode())
        status, fields, _ = await connection.answer()
    assert status == 200 and "Cache-Control" not in fields


async def test_pipelined_answers_a_client_does_not_take_are_not_piled_up(proxy: ProxyProcess) -> None:
    # 4,000 pipelined requests for 8 KiB each, none of the answers read: each one is written
    # whole, so only the wait between requests stops 32 MiB gathering in the proxy's memory
    before = proxy.rss()
    async with connect(proxy.url) as connection:
        await connection.send(get("/big?kb=8") * 4000)
        await asyncio.sleep(3)
        grown = proxy.rss() - before
        # the route's timeout (1 s) after the client stopped taking answers, it was cut off
        received = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(connection.reader.read(MIB), 5):
                received += len(chunk)
    assert grown < 16 * MIB, f"the proxy's memory grew by {grown / MIB:.0f} MiB"
    assert received < 4000 * 8 * 1024


async def test_a_slow_client_that_keeps_reading_gets_its_whole_download(proxy: ProxyProcess) -> None:
    # the route's timeout bounds each wait for the client to take more, not the whole download:
    # 48 MiB (more than the kernel's socket buffers hold) taken a little at a time with pauses
    # lasts well beyond the route's 1 s, and the proxy waits for the client many times
    async with connect(proxy.url) as connection:
        await connection.send(get("/big?mb=48"))
        head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head
        started, received = time.monotonic(), 0
        while received < 48 * MIB:
            chunk = await asyncio.wait_for(connection.reader.read(MIB), 5)
            assert chunk, f"cut off after {received} bytes"
            received += len(chunk)
            await asyncio.sleep(0.02)
        assert received == 48 * MIB and time.monotonic() - started > 2
    assert "client stopped taking" not in proxy.logs()


async def test_fast_path_answers_are_logged_and_counted(proxy: ProxyProcess) -> None:
    async with connect(proxy.url) as connection:
        await connection.send(get("/echo?secret_token=abc"))
        await connection.answer()
    line = await logged_line(proxy, '"path":"/echo"')
    entry = json.loads(line)
    assert entry["route"] == "app" and entry["status"] == 200 and entry["client_ip"] == "127.0.0.1"
    assert "abc" not in line


# ---------------------------------------------------------------------------------------------- signing in
#
# With a provider: a request without a session on a route that needs one gets the gate's answer
# (SPEC section 4: 302 to /oauth2/start for a browser navigation, 401 JSON otherwise). The fast
# path writes the answer Gate.unauthenticated makes; aiohttp's path answers with the same.


@pytest.fixture(scope="module")
def signing_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fault_stack(tmp_path_factory.mktemp("fast-path-sign-in")) as started:
        yield started


async def _on_both_paths(url: str, request: bytes) -> tuple[tuple[int, CIMultiDict[str], bytes], ...]:
    """``request``'s answer on a fresh connection (the fast path's), then after a POST (aiohttp's)."""
    method = request.split(b" ", 1)[0].decode()
    async with connect(url) as fresh:
        await fresh.send(request)
        fast = await fresh.answer(method=method)
    async with connect(url) as handed_over:
        # a POST keeps the connection with aiohttp; the GET after it is aiohttp's to answer
        await handed_over.send(get("/oauth2/nothing-here", "Content-Length: 0", method="POST"))
        await handed_over.answer()
        await handed_over.send(request)
        slow = await handed_over.answer(method=method)
    for _, fields, _ in (fast, slow):
        fields.popall("Date")
    return fast, slow


NAVIGATION = "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        pytest.param(get("/app?x=1&y=%2F", NAVIGATION), 302, id="navigation-login-redirect"),
        pytest.param(get("/app?x=1", NAVIGATION, method="HEAD"), 302, id="head-navigation"),
        pytest.param(get("/app?x=1", "Accept: application/json"), 401, id="api-401"),
        pytest.param(get("/app", NAVIGATION, f"Cookie: {COOKIE}=tampered.value; theme=dark"), 302,
                     id="unknown-cookie-is-no-session"),
        pytest.param(get("/app", "Accept: */*", f"Cookie: {COOKIE}=tampered.value"), 401, id="unknown-cookie-api"),
    ],
)  # fmt: skip
async def test_without_a_session_both_paths_give_the_gates_answer(
    signing_in: Stack, request_head: bytes, status: int
) -> None:
    fast, slow = await _on_both_paths(signing_in.public_url, request_head)
    assert fast[0] == slow[0] == status
    assert sorted(fast[1].items()) == sorted(slow[1].items())
    assert fast[2] == slow[2]
    if status == 302:
        assert fast[1]["Location"].startswith("/oauth2/start?rd=/app")
        assert fast[1]["Cache-Control"] == "no-store"
    else:
        assert json.loads(fast[2])["error"] == "unauthenticated"


SIGN_IN_ANSWER_PATH = "/app/sign-in-answer"


async def test_a_sign_in_answer_keeps_the_connection_and_is_logged(signing_in: Stack) -> None:
    proxy = signing_in.proxies[0]
    before = await asyncio.to_thread(handovers, proxy)
    async with connect(signing_in.public_url) as connection:
        for _ in range(3):
            await connection.send(get(f"{SIGN_IN_ANSWER_PATH}?x=1", NAVIGATION))
            status, _, _ = await connection.answer()
            assert status == 302
    # answered by the fast path itself: the connection was never handed to aiohttp
    assert await asyncio.to_thread(handovers, proxy) == before
    marker = f'"path":"{SIGN_IN_ANSWER_PATH}"'
    deadline = time.monotonic() + 5
    while proxy.logs().count(marker) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    lines = [json.loads(line) for line in proxy.logs().splitlines() if marker in line]
    assert [(entry["status"], entry["route"]) for entry in lines] == [(302, "app")] * 3


async def test_a_whole_sign_in_on_one_connection_never_needs_aiohttp(signing_in: Stack) -> None:
    # the login redirect, /oauth2/start, the callback and the page after them, on one
    # keep-alive connection: all four answered by the fast path (authproxy.fast_endpoints)
    proxy = signing_in.proxies[0]
    before = await asyncio.to_thread(handovers, proxy)
    async with browser() as b:
        _, seen = await log_in(signing_in, "alice", b)
        again = await xhr(b, signing_in.public_url + "/app?again=1")
        assert again.status == 200 and upstream_seen(again)["x-forwarded-user"] == seen["x-forwarded-user"] == "alice"
    assert await asyncio.to_thread(handovers, proxy) == before
    await logged_line(proxy, '"route":"_auth"', '"path":"/oauth2/callback"')
    logged = [json.loads(line) for line in proxy.logs().splitlines() if '"route":"_auth"' in line]
    assert {entry["path"] for entry in logged} >= {"/oauth2/start", "/oauth2/callback"}
    assert any(entry["path"] == "/oauth2/callback" and entry.get("user") == "alice" for entry in logged)


@pytest.mark.parametrize(
    ("cookie_field", "signed_in"),
    [
        pytest.param("{name}={value}; theme=dark", True, id="plain"),
        # aiohttp's parser (and so the gate's) takes a space as a separator between pairs
        pytest.param("theme=dark {name}={value}", True, id="space-separated"),
        # and a quoted value whole, semicolons included: the ticket inside is no cookie of its own
        pytest.param('theme="dark;{name}={value};x"', False, id="inside-a-quoted-value"),
        pytest.param("{name}=; theme=dark", False, id="empty"),
    ],
)
async def test_both_paths_read_the_session_cookie_alike(signing_in: Stack, cookie_field: str, signed_in: bool) -> None:
    async with browser() as b:
        await log_in(signing_in, "alice", b)
        value = session_cookie(b)
    assert value is not None
    field = "Cookie: " + cookie_field.format(name=COOKIE, value=value)
    fast, slow = await _on_both_paths(signing_in.public_url, get("/app/cookie-read", "Accept: application/json", field))
    assert fast[0] == slow[0] == (200 if signed_in else 401)
    if signed_in:
        # read as the session cookie, so never passed on (SPEC section 4)
        for _, _, body in (fast, slow):
            assert [name for name, sent in json.loads(body)["headers"] if value in sent] == []


@pytest.mark.parametrize(
    ("target", "extra", "status", "cache_control"),
    [
        pytest.param("/app/cached", (), 200, "private", id="no-cache-control"),
        pytest.param("/app/cached", ('If-None-Match: "v1"',), 304, "private", id="not-modified"),
        pytest.param("/app/cached?cc=public,%20max-age=60", (), 200, "public, max-age=60", id="the-applications-own"),
        pytest.param("/app/cached?cc=no-store", ('If-None-Match: "v1"',), 304, "no-store", id="not-modified-own"),
    ],
)  # fmt: skip
async def test_a_signed_in_answer_without_cache_control_is_kept_out_of_shared_caches(
    signing_in: Stack, target: str, extra: tuple[str, ...], status: int, cache_control: str
) -> None:
    # a CDN or corporate proxy in front would otherwise keep alice's page (Last-Modified makes it
    # heuristically fresh, RFC 9111 section 4.2.2) and serve it to others without asking authproxy
    async with browser() as b:
        await log_in(signing_in, "alice", b)
        value = session_cookie(b)
    assert value is not None
    request_head = get(target, f"Cookie: {COOKIE}={value}", *extra)
    fast, slow = await _on_both_paths(signing_in.public_url, request_head)
    assert fast[0] == slow[0] == status
    assert fast[1].getall("Cache-Control") == slow[1].getall("Cache-Control") == [cache_control]
    # the same answer again on one connection: its head is made once and kept (the fast path's)
    async with connect(signing_in.public_url) as connection:
        for _ in range(2):
            await connection.send(request_head)
            again, fields, _ = await connection.answer()
            assert again == status and fields.getall("Cache-Control") == [cache_control]


async def test_a_signed_in_post_answered_by_aiohttp_is_kept_out_of_shared_caches(signing_in: Stack) -> None:
    async with browser() as b:
        await log_in(signing_in, "alice", b)
        value = session_cookie(b)
    assert value is not None
    async with connect(signing_in.public_url) as connection:
        for target, cache_control in (("/app/cached", "private"), ("/app/cached?cc=max-age=0", "max-age=0")):
            await connection.send(
                get(target, f"Cookie: {COOKIE}={value}", f"Origin: {signing_in.public_url}", "Content-Length: 3",
                    method="POST") + b"abc"
            )  # fmt: skip
            status, fields, _ = await connection.answer()
            assert status == 200 and fields.getall("Cache-Control") == [cache_control]


def _cookie_attributes(fields: CIMultiDict[str]) -> list[str]:
    """Each Set-Cookie field without its value (which is new for every answer)."""
    return sorted(value.split(";", 1)[1] if ";" in value else "" for value in fields.getall("Set-Cookie", []))


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        pytest.param(get("/oauth2/start?rd=/app%3Fx%3D1", NAVIGATION), 302, id="start"),
        pytest.param(get("/oauth2/callback?state=not-this-browsers&code=x", NAVIGATION), 400, id="callback-bad-state"),
        pytest.param(
            get("/oauth2/callback?error=access_denied&iss={issuer}", NAVIGATION), 403, id="callback-provider-error"
        ),
        pytest.param(get("/oauth2/callback?error=access_denied", NAVIGATION), 400, id="callback-error-without-iss"),
        pytest.param(get("/oauth2/callback?state=s", "Accept: application/json"), 400, id="callback-api-client"),
        pytest.param(get("/oauth2/start?rd=/app", NAVIGATION, "Host: other.test"), 400, id="start-two-hosts"),
    ],
)
async def test_the_sign_in_endpoints_answer_alike_on_both_paths(
    signing_in: Stack, request_head: bytes, status: int
) -> None:
    assert signing_in.provider is not None
    request_head = request_head.replace(b"{issuer}", quote(signing_in.provider.issuer, safe="").encode())
    fast, slow = await _on_both_paths(signing_in.public_url, request_head)
    assert fast[0] == slow[0] == status
    # the state, nonce, cookie values and request ids are new for each answer; the rest is equal
    assert sorted(fast[1].keys()) == sorted(slow[1].keys())
    assert _cookie_attributes(fast[1]) == _cookie_attributes(slow[1])
    for name in ("Content-Type", "Cache-Control"):
        assert fast[1].get(name) == slow[1].get(name)
    if status == 302:
        assert fast[1]["Location"].split("?", 1)[0] == slow[1]["Location"].split("?", 1)[0]
        assert "code_challenge_method=S256" in fast[1]["Location"]
    else:
        assert len(fast[2]) > 0 and abs(len(fast[2]) - len(slow[2])) < 64


async def test_a_head_request_to_the_sign_in_endpoints_is_aiohttps(signing_in: Stack) -> None:
    proxy = signing_in.proxies[0]
    before = await asyncio.to_thread(handovers, proxy)
    async with connect(signing_in.public_url) as connection:
        await connection.send(get("/oauth2/start?rd=/app", NAVIGATION, method="HEAD"))
        status, _, _ = await connection.answer(method="HEAD")
    assert status == 302
    assert (await asyncio.to_thread(handovers, proxy))["aiohttp"] == before["aiohttp"] + 1
