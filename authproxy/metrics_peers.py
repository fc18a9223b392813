"""Every worker's metrics in one scrape (``--workers N``).

The workers share the admin port (SO_REUSEPORT), so a scrape reaches one of them at random. So
that it still sees them all, each worker also serves its own exposition on a Unix socket in a
directory the supervisor makes for the run (mode 0700, removed when it ends), and the worker a
scrape reaches asks the others there and answers with every worker's series, each under its own
``worker`` label. A worker that does not answer within :data:`PEER_TIMEOUT` (stopping, stuck) is
left out of that scrape rather than holding it up: Prometheus sees its series go stale, as it
would see a process that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

PEER_TIMEOUT: Final = 2.0
# a body far beyond any worker's exposition (a few hundred series), far below a memory problem
MAX_EXPOSITION: Final = 16 * 1024 * 1024
SOCKET_GLOB: Final = "worker-*.sock"


def peer_socket(directory: Path, worker: int) -> Path:
    """Where worker ``worker`` serves its own exposition."""
    return directory / f"worker-{worker}.sock"


class _Families:
    """A collector handing out metric families already made."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_expositions(texts: Sequence[str]) -> bytes:
    """One exposition holding every sample of ``texts``, each family once (its first help and type).

    The workers' series differ by their ``worker`` label, so nothing is summed: samples are
    only gathered under their family, in the order the texts come.
    """
    merged: dict[str, Metric] = {}
    for text in texts:
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError:
            log.warning("a worker's metrics could not be read; left out of this scrape")
            continue
        for family in families:
            kept = merged.get(family.name)
            if kept is None:
                merged[family.name] = family
            elif kept.type == family.type:
                kept.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry)


class Peers:
    """The other workers of this run, asked for their expositions at scrape time."""

    def __init__(self, directory: Path, worker: int) -> None:
        self.directory = directory
        self.worker = worker

    @property
    def own_socket(self) -> Path:
        return peer_socket(self.directory, self.worker)

    async def merged(self, own: bytes) -> bytes:
        """``own`` exposition and every other worker's that answers in time, merged."""
        others = sorted(path for path in self.directory.glob(SOCKET_GLOB) if path != self.own_socket)
        texts = [own.decode()]
        if others:
            answers = await asyncio.gather(*(self._ask(path) for path in others))
            texts.extend(text for text in answers if text is not None)
        return merge_expositions(texts)

    async def _ask(self, path: Path) -> str | None:
        try:
            async with (
                asyncio.timeout(PEER_TIMEOUT),
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as http,
                http.get("http://worker/metrics") as answer,
            ):
                if answer.status != 200:
                    return None
                body = bytearray()
                async for chunk in answer.content.iter_any():
                    body += chunk
                    if len(body) > MAX_EXPOSITION:
                        return None
                return body.decode()
        except (OSError, aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as e:
            # stopping or stuck: its series are left out of this scrape
            fields = {"socket": path.name, "error": type(e).__name__}
            log.debug("worker metrics not collected", extra={"fields": fields})
            return None


def remove_socket(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
