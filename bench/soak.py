"""Soak test (part of ``make bench``, never of ``make test``): mixed traffic for a long while.

Virtual users sign in through the development provider, browse with their session while access
tokens expire and are refreshed, and some sign out and start over; all through one authproxy
process with the Redis store. Every unexpected answer is an error (the target is 0) and the
proxy's RSS is sampled over time (the target is flat). ``SOAK_SECONDS`` sets the length (600 by
default), ``SOAK_USERS`` the number of virtual users (16).

    .venv/bin/python bench/soak.py
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authproxy.demo.provider import DemoClient, DemoProvider
from tests.support.fault_provider import serve_app
from tests.support.net import free_port
from tests.support.proxy_process import start_proxy
from tests.support.redis_server import start_redis_server
from tests.support.scripted_browser import ScriptedBrowser, login_demo
from tests.support.upstream import Upstream

PROVIDER_HOST = "127.0.0.2"
CLIENT_ID = "soak"
CLIENT_SECRET = "soak-client-secret-0123456789abcdefghij"
ACCESS_TOKEN_TTL = 20  # seconds: many refreshes in a run
USERS = ("alice", "bob", "carol")


@dataclass
class Tally:
    requests: int = 0
    logins: int = 0
    logouts: int = 0
    errors: list[str] = field(default_factory=list)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def virtual_user(url: str, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        async with ScriptedBrowser(user_agent=f"soak-{uuid.uuid4()}") as browser:
            user = rng.choice(USERS)
            page = await login_demo(browser, url + "/app/home", user)
            if page.status != 200:
                tally.errors.append(f"login {user}: {page.status}")
                await asyncio.sleep(1)
                continue
            tally.logins += 1
            session_end = time.monotonic() + rng.uniform(20, 90)
            while time.monotonic() < min(session_end, deadline):
                answer = await browser.get(
                    url + f"/app/item/{rng.randrange(1000)}",
                    headers={"Accept": "application/json"},
                    follow_redirects=False,
                )
                tally.requests += 1
                if answer.status != 200:
                    tally.errors.append(f"request as {user}: {answer.status}")
                elif dict((k.lower(), v) for k, v in answer.json()["headers"]).get("x-forwarded-user") != user:
                    tally.errors.append(f"request as {user}: wrong identity")
                await asyncio.sleep(rng.uniform(0.01, 0.2))
            if rng.random() < 0.5:
                out = await browser.get(url + "/oauth2/sign_out", follow_redirects=False)
                tally.logouts += 1
                if out.status != 302:
                    tally.errors.append(f"sign_out: {out.status}")


async def soak(seconds: float, users: int) -> int:
    directory = Path(tempfile.mkdtemp(prefix="authproxy-soak-"))
    redis = start_redis_server(directory)
    redis_url = redis.url
    port = free_port()
    provider_port = free_port(PROVIDER_HOST)
    provider = DemoProvider(
        f"http://{PROVIDER_HOST}:{provider_port}",
        [DemoClient(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"])],
        access_token_ttl=ACCESS_TOKEN_TTL,
    )
    config: dict[str, Any] = {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        "session": {
            "store": "redis",
            "redis": {"url": redis_url},
            "secrets": ["s" * 40],
            "cookie": {"secure": False},
            "refresh_before_expiry": "5s",
        },
        "routes": [],
    }
    tally = Tally()
    samples: list[tuple[float, float]] = []
    try:
        with serve_app(provider.create_app(), PROVIDER_HOST, provider_port), serve_app(Upstream().app()) as upstream:
            config["routes"] = [{"name": "app", "upstream": upstream}]
            proxy = start_proxy(config, directory, args=("--log-level", "warning"))
            try:
                started = time.monotonic()
                deadline = started + seconds
                workers = [asyncio.create_task(virtual_user(proxy.url, deadline, tally, n)) for n in range(users)]
                while time.monotonic() < deadline:
                    samples.append((time.monotonic() - started, rss_mib(proxy.pid)))
                    await asyncio.sleep(min(10.0, max(1.0, seconds / 30)))
                await asyncio.gather(*workers)
                samples.append((time.monotonic() - started, rss_mib(proxy.pid)))
                alive = proxy.process.poll() is None
            finally:
                proxy.terminate()
    finally:
        redis.kill()
        shutil.rmtree(directory, ignore_errors=True)
    report(seconds, users, tally, samples, provider.stats.refresh_grants, alive)
    return 0 if not tally.errors and alive else 1


def report(
    seconds: float, users: int, tally: Tally, samples: list[tuple[float, float]], refreshes: int, alive: bool
) -> None:
    warm = [rss for t, rss in samples if t >= min(60.0, seconds / 4)] or [samples[-1][1]]
    lines = [
        f"## Soak: {seconds:.0f} s, {users} virtual users, Redis store",
        "",
        f"requests {tally.requests}, logins {tally.logins}, logouts {tally.logouts}, "
        f"refresh grants {refreshes}, errors {len(tally.errors)}, proxy alive at the end: {alive}",
        "",
        f"RSS after warm-up: min {min(warm):.1f} MiB, max {max(warm):.1f} MiB (growth {max(warm) - min(warm):.1f} MiB)",
        "",
        "| t (s) | RSS (MiB) |",
        "|---:|---:|",
        *(f"| {t:.0f} | {rss:.1f} |" for t, rss in samples),
    ]
    if tally.errors:
        lines += ["", "First errors:", *(f"- {e}" for e in tally.errors[:10])]
    text = "\n".join(lines)
    print(text)
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / "soak-results.md").write_text(text + "\n")


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    users = int(os.environ.get("SOAK_USERS", "16"))
    return asyncio.run(soak(seconds, users))


if __name__ == "__main__":
    raise SystemExit(main())
