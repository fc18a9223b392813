"""The lean Redis client (authproxy.sessions.resp): wire format, answers in order, failures.

Against a real ``redis-server`` where Redis can show the behaviour; a silent TCP peer stands in
only for a server that accepts a connection and then never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import hiredis
import pytest
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authproxy.errors import StoreError, StoreUnavailable
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.resp import Endpoint, LeanRedis, encode_command, error_for_reply, may_run_twice
from tests.support.redis_server import RedisServer

# ---------------------------------------------------------------------- pure pieces


def test_integers_travel_as_bulk_strings() -> None:
    assert (
        encode_command("SET", "k", b"v", "PX", 1500)
        == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
    )


def test_text_travels_as_utf8_and_negative_integers_in_decimal() -> None:
    assert encode_command("SET", "clé", -1) == "*3\r\n$3\r\nSET\r\n$4\r\nclé\r\n$2\r\n-1\r\n".encode()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("READONLY You can't write against a read only replica.", ReadOnlyError, id="replica"),
        pytest.param("LOADING Redis is loading the dataset in memory", BusyLoadingError, id="loading"),
        pytest.param("WRONGTYPE Operation against a key holding the wrong kind of value", ResponseError, id="refused"),
    ],
)
def test_error_answers_become_redis_py_exceptions(text: str, error: type[Exception]) -> None:
    assert type(error_for_reply(hiredis.ReplyError(text))) is error


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        pytest.param("redis://127.0.0.1:6379/0", True, id="plain"),
        pytest.param("redis://127.0.0.1:6379", True, id="no-database"),
        pytest.param("rediss://:pw@r.example:6380/3", True, id="tls-password"),
        pytest.param("unix:///run/redis.sock", True, id="unix"),
        pytest.param("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", False, id="query-options"),
        pytest.param("unix:///run/redis.sock?db=2", False, id="unix-database"),
        pytest.param("redis://127.0.0.1:6379/zero", False, id="odd-path"),
    ],
)
def test_only_urls_it_fully_understands_take_the_lean_client(url: str, lean: bool) -> None:
    assert Endpoint.understands(url) is lean


def test_a_database_is_selected_and_credentials_sent_before_any_command() -> None:
    assert Endpoint(host="h", database=3).handshake() == (encode_command("SELECT", 3), 1)
    wire, count = Endpoint(host="h", username="u", password="pw", database=1).handshake()
    assert count == 2 and wire == encode_command("AUTH", "u", "pw") + encode_command("SELECT", 1)
    assert Endpoint(host="h").handshake() == (b"", 0)


# ---------------------------------------------------------------------- against redis-server


@pytest.fixture
async def lean(redis_server: RedisServer) -> AsyncIterator[LeanRedis]:
    client = LeanRedis.from_url(redis_server.url, timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_standalone_store_uses_the_lean_client(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url)
    assert isinstance(store._client, LeanRedis)
    await store.close()


async def test_answers_reach_their_callers_when_commands_interleave(lean: LeanRedis) -> None:
    await lean.execute_many([("SET", f"k{i}", f"v{i}") for i in range(50)])
    answers = await asyncio.gather(*(lean.get(f"k{i}") for i in range(50)))
    assert answers == [f"v{i}".encode() for i in range(50)]


async def test_a_caller_that_gives_up_does_not_shift_the_answers(lean: LeanRedis) -> None:
    await lean.set("a", b"answer-a")
    await lean.set("b", b"answer-b")
    abandoned = asyncio.create_task(lean.get("a"))
    await asyncio.sleep(0)  # sent, not yet answered
    abandoned.cancel()
    assert await lean.get("b") == b"answer-b"
    assert abandoned.cancelled()


async def test_set_answers_like_redis_py(lean: LeanRedis) -> None:
    assert await lean.set("k", b"1", px=10_000, nx=True) is True
    assert await lean.set("k", b"2", px=10_000, nx=True) is None
    assert await lean.set("absent", b"2", px=10_000, xx=True) is None
    assert await lean.getdel("k") == b"1" and await lean.get("k") is None


async def test_several_commands_go_out_together_and_an_error_answer_raises(lean: LeanRedis) -> None:
    assert await lean.execute_many([("SET", "n", "x"), ("GET", "n")]) == [b"OK", b"x"]
    with pytest.raises(ResponseError):
        await lean.execute_many([("SET", "n", "x"), ("INCR", "n")])


async def test_the_database_in_the_url_is_the_one_used(redis_server: RedisServer) -> None:
    one = LeanRedis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1", timeout=2.0)
    zero = LeanRedis.from_url(redis_server.url.rsplit("/", 1)[0] + "/0", timeout=2.0)
    try:
        await one.set("where", b"db1")
        assert await zero.get("where") is None and await one.get("where") == b"db1"
    finally:
        await one.aclose()
        await zero.aclose()


async def test_a_wrong_password_is_a_connection_error(lean: LeanRedis, redis_server: RedisServer) -> None:
    await lean.execute_command("ACL", "SETUSER", "app", "on", ">right", "~*", "+@all")
    address = f"127.0.0.1:{redis_server.port}/0"
    good = LeanRedis.from_url(f"redis://app:right@{address}", timeout=2.0)
    bad = LeanRedis.from_url(f"redis://app:wrong@{address}", timeout=2.0)
    try:
        assert await good.ping()
        with pytest.raises(RedisConnectionError):
            await bad.ping()
    finally:
        await good.aclose()
        await bad.aclose()


async def test_a_closed_client_refuses_commands_instead_of_dialling_again(redis_server: RedisServer) -> None:
    client = LeanRedis.from_url(redis_server.url, timeout=2.0)
    assert await client.ping()
    await client.aclose()
    with pytest.raises(RedisConnectionError, match="the client was closed"):
        await client.get("k")


async def test_commands_in_flight_fail_when_redis_goes_away_and_the_next_one_reconnects(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_settings(url=redis_server.url, timeout=1.0)
    try:
        await store.set("k", b"v", 60)
        redis_server.kill()
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        redis_server.start()
        await store.set("k", b"back", 60)
        assert await store.get("k") == b"back"
    finally:
        await store.close()


async def test_a_wrong_type_is_a_store_error_not_an_outage(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url)
    try:
        await store.set("plain", b"v", 60)
        with pytest.raises(StoreError) as raised:
            await store.index_add("plain", "member", 60)
        assert not isinstance(raised.value, StoreUnavailable)
    finally:
        await store.close()


# ---------------------------------------------------------------------- peers that answer late or never

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP server on 127.0.0.1 running ``handler`` per connection: its port and the connections."""
    accepted: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None


async def test_a_connection_that_stopped_answering_is_replaced() -> None:
    async with peer(silent) as (port, accepted):
        client = LeanRedis(Endpoint(host="127.0.0.1", port=port), connect_timeout=1.0, stall_timeout=0.1)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await client.ping()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await client.ping()
            assert len(accepted) == 2  # the first connection was dropped, not queued behind
        finally:
            await client.aclose()


async def test_a_command_not_answered_by_its_deadline_fails_and_keeps_its_place() -> None:
    # the peer answers the first PING only after the second was sent: the first has timed out by
    # then, and its late answer must not be taken for the second's
    second_sent = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(encode_command("PING")))
        await second_sent.wait()
        await reader.readexactly(len(encode_command("ECHO", "second")))
        writer.write(b"+PONG\r\n$6\r\nsecond\r\n")
        await writer.drain()

    async with peer(late) as (port, accepted):
        client = LeanRedis(
            Endpoint(host="127.0.0.1", port=port), connect_timeout=1.0, stall_timeout=5.0, command_timeout=0.1
        )
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(RedisTimeoutError):
                await client.ping()
            assert 0.1 <= loop.time() - started < 1.0
            second = asyncio.ensure_future(client.execute_command("ECHO", "second"))
            await asyncio.sleep(0.01)
            second_sent.set()
            assert await asyncio.wait_for(second, 1.0) == b"second"
            assert len(accepted) == 1  # one connection all along
        finally:
            await client.aclose()


async def test_the_redis_store_answers_a_silent_server_unavailable_within_its_timeout() -> None:
    async with peer(silent) as (port, _):
        store = RedisStore.from_settings(url=f"redis://127.0.0.1:{port}", timeout=0.2)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(StoreUnavailable):
                await store.get("k")
            assert loop.time() - started < 1.0
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("command", "may"),
    [
        pytest.param(("GET", "k"), True, id="get"),
        pytest.param(("SET", "k", "v", "PX", 1000), True, id="set"),
        pytest.param(("DEL", "k"), True, id="del"),
        pytest.param(("PUBLISH", "c", "m"), True, id="publish"),
        pytest.param(("SET", "lock", "token", "NX", "PX", 1000), False, id="set-nx-a-lock"),
        pytest.param(("SET", "k", "v", "get"), False, id="set-get"),
        pytest.param(("INCR", "k"), False, id="incr"),
        pytest.param(("GETDEL", "flow"), False, id="getdel"),
        pytest.param(("EVAL", "return 1", 0), False, id="script"),
    ],
)
def test_only_commands_that_may_run_twice_are_sent_again(command: tuple[str | int, ...], may: bool) -> None:
    assert may_run_twice(command) is may


@pytest.mark.parametrize(
    ("command", "resent"), [(("INCR", "counter"), False), (("GET", "k"), True)], ids=["incr", "get"]
)
async def test_a_reset_after_the_write_resends_no_command_that_may_have_run(
    command: tuple[str, ...], resent: bool
) -> None:
    # the kept connection is cut once the command has reached Redis: Redis may have run it, so
    # an INCR or a lock's SET NX is not sent again (a count doubled, a lock held by nobody); a GET is
    runs: list[bytes] = []

    async def cut_after_one_ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(encode_command("PING")))
        writer.write(b"+PONG\r\n")
        await writer.drain()
        runs.append(await reader.read(4096))  # the command arrives, "runs", and the peer is gone
        writer.close()

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        runs.append(await reader.read(4096))
        writer.write(b"$1\r\nv\r\n")
        await writer.drain()

    handlers = iter([cut_after_one_ping, answers])

    async def next_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await next(handlers)(reader, writer)

    async with peer(next_connection) as (port, _):
        client = LeanRedis(Endpoint(host="127.0.0.1", port=port), connect_timeout=1.0, stall_timeout=5.0)
        try:
            assert await client.ping()  # the kept connection
            if resent:
                assert await client.execute_command(*command) == b"v"
            else:
                with pytest.raises(RedisConnectionError):
                    await client.execute_command(*command)
        finally:
            await client.aclose()
    assert len(runs) == (2 if resent else 1), runs
