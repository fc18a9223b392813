"""Abuse limits (SPEC sections 2 and 5): the per-IP rate limit on /start and /callback, and
oversized request heads, which get a 4xx and never take the proxy down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import redis
import yaml

from authproxy.oidc.flow import rate_subject
from tests.support.ops import start_ops_stack
from tests.support.proxy_process import start_proxy


async def _statuses(client: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with client.get(url, allow_redirects=False, headers={"User-Agent": f"ua-{len(statuses)}"}) as answer:
            statuses.append(answer.status)
            if answer.status == 429:
                assert answer.headers["Retry-After"].isdigit()
    return statuses


def _flow_records(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match="authproxy:flow:*"))
    finally:
        client.close()


def test_auth_endpoints_are_rate_limited_per_client_ip_and_callback_counts_too(tmp_path: Path) -> None:
    config = {"server": {"rate_limit": {"auth_per_minute": 5}}}
    with start_ops_stack(tmp_path, config=config) as stack:

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                assert await _statuses(client, stack.url + "/oauth2/start?rd=/", 3) == [302, 302, 302]
                async with client.get(stack.url + "/oauth2/callback?code=x&state=y") as answer:
                    assert answer.status == 400  # the 4th counted attempt: a bad state, but counted
                assert await _statuses(client, stack.url + "/oauth2/start?rd=/", 2) == [302, 429]
                async with client.get(stack.url + "/oauth2/callback?code=x&state=y") as answer:
                    assert answer.status == 429
                async with client.get(stack.url + "/public/still-served") as answer:
                    assert answer.status == 200  # only the auth endpoints are limited

        asyncio.run(run())


def test_kept_forms_count_against_the_sign_in_budget_of_their_address(tmp_path: Path) -> None:
    # each kept form stays in the session store for 10 minutes: a client posting forms without a
    # browser's headers (which the cross-origin check lets pass) may keep no more of them than
    # it may start sign-ins
    config = {
        "server": {"rate_limit": {"auth_per_minute": 5}},
        "routes": [{"name": "forms", "upstream": "http://127.0.0.1:9", "preserve_post": True}],
    }
    form = {"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"}
    with start_ops_stack(tmp_path, config=config) as stack:

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                kept = []
                for _ in range(6):
                    async with client.post(
                        stack.url + "/orders", data=b"item=1", headers=form, allow_redirects=False
                    ) as answer:
                        kept.append(answer.status)
                assert kept == [303] * 5 + [429]
                assert await _statuses(client, stack.url + "/oauth2/start?rd=/", 1) == [429]

        asyncio.run(run())


def test_behind_a_trusted_proxy_each_client_has_its_own_budget_and_loop_count(tmp_path: Path) -> None:
    # the load balancer's address is every client's peer: counted by it, ten users of one browser
    # build would lock everyone out of signing in
    config = {"server": {"rate_limit": {"auth_per_minute": 5}, "trusted_proxies": ["127.0.0.0/8"]}}
    with start_ops_stack(tmp_path, config=config) as stack:

        async def starts(client: aiohttp.ClientSession, forwarded_for: str, count: int) -> list[int]:
            statuses = []
            for _ in range(count):
                headers = {"X-Forwarded-For": forwarded_for, "User-Agent": "one browser build"}
                async with client.get(
                    stack.url + "/oauth2/start?rd=/", headers=headers, allow_redirects=False
                ) as answer:
                    statuses.append(answer.status)
            return statuses

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                for i in range(12):
                    assert await starts(client, f"203.0.113.{i}", 1) == [302]
                assert await starts(client, "198.51.100.1", 6) == [302] * 5 + [429]
                # what a client writes left of the entry the proxy appended is not its address
                assert await starts(client, "203.0.113.200, 198.51.100.1", 1) == [429]

        asyncio.run(run())


def test_an_ipv6_client_has_one_budget_for_its_whole_64_prefix(tmp_path: Path) -> None:
    # one IPv6 host is handed a /64 and may use any of its 2^64 addresses: counted per address,
    # a client would sign in (and keep forms, and store flows) without limit
    config = {"server": {"rate_limit": {"auth_per_minute": 5}, "trusted_proxies": ["127.0.0.0/8"]}}
    with start_ops_stack(tmp_path, config=config) as stack:

        async def start(client: aiohttp.ClientSession, address: str) -> int:
            headers = {"X-Forwarded-For": address}
            async with client.get(stack.url + "/oauth2/start?rd=/", headers=headers, allow_redirects=False) as answer:
                return answer.status

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                one_host = [await start(client, f"2001:db8:0:1::{n:x}") for n in range(1, 7)]
                assert one_host == [302] * 5 + [429]
                assert await start(client, "2001:db8:0:1:ffff:ffff:ffff:ffff") == 429
                # the next /64 is another client's
                assert await start(client, "2001:db8:0:2::1") == 302

        asyncio.run(run())


def test_the_rate_limit_is_shared_by_replicas_on_one_redis(tmp_path: Path, redis_url: str) -> None:
    config = {
        "server": {"rate_limit": {"auth_per_minute": 6}},
        "session": {"store": "redis", "redis": {"url": redis_url}},
    }
    with start_ops_stack(tmp_path / "a", config=config) as stack:
        settings = yaml.safe_load(stack.proxy.config_path.read_text())
        settings["server"] = {k: v for k, v in settings["server"].items() if k not in ("listen", "admin_listen")}
        other = start_proxy(settings, tmp_path / "b")
        try:

            async def run() -> None:
                async with aiohttp.ClientSession() as client:
                    assert await _statuses(client, stack.url + "/oauth2/start?rd=/", 3) == [302] * 3
                    assert await _statuses(client, other.url + "/oauth2/start?rd=/", 3) == [302] * 3
                    assert await _statuses(client, stack.url + "/oauth2/start?rd=/", 1) == [429]
                    assert await _statuses(client, other.url + "/oauth2/start?rd=/", 1) == [429]

            flows_before = _flow_records(redis_url)
            asyncio.run(run())
            # a start stores its flow in the round trip that counts it; a refused one deletes it
            assert _flow_records(redis_url) - flows_before == 6
        finally:
            other.kill()


def test_oversized_request_heads_get_a_4xx_and_the_proxy_keeps_serving(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path) as stack:

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                huge = {"X-Big": "a" * 20000}
                async with client.get(stack.url + "/public/x", headers=huge) as answer:
                    assert 400 <= answer.status < 500
                    assert "Traceback" not in await answer.text()
                many = {f"X-Header-{n}": "v" for n in range(300)}
                async with client.get(stack.url + "/public/x", headers=many) as answer:
                    assert 400 <= answer.status < 500
                async with client.get(stack.url + "/public/x") as answer:
                    assert answer.status == 200
            assert stack.proxy.process.poll() is None

        asyncio.run(run())


@pytest.mark.parametrize(
    ("client_ip", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("2001:db8:0:1:ffff:ffff:ffff:ffff", "2001:db8:0:1::/64"),
        ("2001:db8:0:2::1", "2001:db8:0:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, ""),
        ("not:an:address", "not:an:address"),
    ],
)
def test_the_rate_limit_counts_an_ipv4_address_or_an_ipv6_64(client_ip: str | None, counted_as: str) -> None:
    assert rate_subject(client_ip) == counted_as
