"""With ``session.cache`` on (the default), a logout on one replica ends the session on every other at once.

Two real proxy processes share one redis-server, each with its in-process session cache. Both
have served the session (so both hold it in memory) before it is ended on one of them, by the
user's sign-out or by the provider's back-channel logout; the very next request to the other
replica must find no session. A refresh on one replica must likewise be what the other forwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.logout import (
    Stack,
    browser,
    fault_stack,
    id_token_claims,
    log_in,
    logout_claims,
    session_cookie,
    sign_logout_token,
    status_with_cookie,
    upstream_seen,
    xhr,
)

# the cache as a new configuration has it (on by default); only its backstop is lengthened, so
# that nothing but the invalidations can make a replica forget the session during a test
CACHE = {"cache": {"max_age": "60s"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fault_stack(tmp_path_factory.mktemp("cache"), replicas=2, redis=True, session_options=CACHE) as started:
        yield started


async def _back_channel_logout(url: str, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/oauth2/backchannel_logout", data={"logout_token": token}) as answer,
    ):
        return answer.status


async def _cached_by_both(stack: Stack, cookie: str) -> None:
    """Both replicas serve the session, and prove they do it from memory."""
    for proxy in stack.proxies:
        assert await status_with_cookie(proxy.url + "/app", cookie) == 200  # read from Redis, now cached
    assert stack.redis is not None
    stack.redis.freeze()
    try:
        # Redis hangs: only a cached session can still answer (within the feed's liveness window)
        for proxy in stack.proxies:
            assert await status_with_cookie(proxy.url + "/app", cookie) == 200
    finally:
        stack.redis.thaw()


async def test_sign_out_on_one_replica_ends_the_cached_session_on_the_other(stack: Stack) -> None:
    async with browser() as b:
        await log_in(stack, "alice", b)
        cookie = session_cookie(b)
        assert cookie is not None
        await _cached_by_both(stack, cookie)
        answer = await b.get(stack.proxies[0].url + "/oauth2/sign_out", follow_redirects=False)
        assert answer.status == 302
    assert await status_with_cookie(stack.proxies[1].url + "/app", cookie) == 401
    assert await status_with_cookie(stack.proxies[0].url + "/app", cookie) == 401


async def test_back_channel_logout_on_one_replica_ends_the_cached_session_on_the_other(stack: Stack) -> None:
    async with browser() as b:
        _, seen = await log_in(stack, "bob", b)
        cookie = session_cookie(b)
        assert cookie is not None
        await _cached_by_both(stack, cookie)
        identity = id_token_claims(seen)
        token = sign_logout_token(stack.fault, logout_claims(stack.fault, sub=identity["sub"], sid=identity["sid"]))
        assert await _back_channel_logout(stack.proxies[1].url, token) == 200
    assert await status_with_cookie(stack.proxies[0].url + "/app", cookie) == 401
    assert await status_with_cookie(stack.proxies[1].url + "/app", cookie) == 401


async def test_cached_sessions_still_carry_the_identity(stack: Stack) -> None:
    async with browser() as b:
        await log_in(stack, "carol", b)
        for proxy in stack.proxies:
            for _ in range(3):
                page = await xhr(b, proxy.url + "/app/who")
                assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "carol"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Replica 0 with the cache turned off, replica 1 with the default cache (a rolling change)."""
    with fault_stack(
        tmp_path_factory.mktemp("mixed"),
        replicas=2,
        redis=True,
        session_options=CACHE,
        replica_session_options=[{"cache": {"enabled": False}}],
    ) as started:
        yield started


async def test_a_replica_without_the_cache_still_ends_the_session_in_the_others_caches(mixed: Stack) -> None:
    async with browser() as b:
        await log_in(mixed, "alice", b)
        cookie = session_cookie(b)
        assert cookie is not None
        cached = mixed.proxies[1]
        assert await status_with_cookie(cached.url + "/app", cookie) == 200  # now in replica 1's cache
        assert mixed.redis is not None
        mixed.redis.freeze()
        try:
            # Redis hangs: only replica 1's cache can still answer, which proves it holds the session
            assert await status_with_cookie(cached.url + "/app", cookie) == 200
        finally:
            mixed.redis.thaw()
        answer = await b.get(mixed.proxies[0].url + "/oauth2/sign_out", follow_redirects=False)
        assert answer.status == 302
    assert await status_with_cookie(cached.url + "/app", cookie) == 401
