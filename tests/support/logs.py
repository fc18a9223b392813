"""Waiting for a proxy's log lines.

Access and auth lines reach the log after the response, not with it: the proxy gathers the lines
of one event-loop turn and writes them when the turn ends (``authproxy.logs``), and a client can
have its answer before that. A test that reads a line a request caused waits for it here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class HasLogs(Protocol):
    def logs(self) -> str: ...


async def logs_when(source: HasLogs, condition: Callable[[str], bool], within: float = 5.0) -> str:
    """``source``'s whole log, once ``condition`` holds for it (waited for ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        logs = source.logs()
        if condition(logs):
            return logs
        assert time.monotonic() < deadline, f"the log never met the condition; it ends:\n{logs[-2000:]}"
        await asyncio.sleep(0.05)


async def logs_with(source: HasLogs, *marks: str, within: float = 5.0) -> str:
    """``source``'s whole log, once a line holding every one of ``marks`` is in it."""
    return await logs_when(source, lambda logs: _line_with(logs, marks) is not None, within)


async def logged_line(source: HasLogs, *marks: str, within: float = 5.0) -> str:
    """The first line of ``source``'s log that holds every one of ``marks``, waited for ``within`` seconds."""
    line = _line_with(await logs_with(source, *marks, within=within), marks)
    assert line is not None
    return line


def _line_with(logs: str, marks: tuple[str, ...]) -> str | None:
    return next((line for line in logs.splitlines() if all(mark in line for mark in marks)), None)
