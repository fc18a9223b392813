"""One timer per connection, moved lazily, for deadlines that change on every request.

A keep-alive connection waits for something with a deadline many times a second (the next
request head, the upstream's answer). Scheduling and cancelling a timer for each wait costs more
than the rest of the work around it, so a :class:`LazyDeadline` only notes each wait's deadline;
its one timer, when it fires before the deadline then in force, goes back to sleep for what is
left, and calls ``expired`` once a deadline has really passed. Between waits (``clear``) a firing
timer simply stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LazyDeadline:
    """Calls ``expired`` when the deadline in force (``watch``) passes without a ``clear``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def watch(self, deadline: float) -> None:
        """From now on ``deadline`` (loop time) is in force; the timer moves only to fire earlier."""
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._fire)
            self._timer_at = deadline

    def clear(self) -> None:
        """No deadline in force (the timer, if any, stops when it fires)."""
        self._deadline = None

    def cancel(self) -> None:
        """No deadline and no timer (the connection is gone)."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self.watch(deadline)
            return
        self._deadline = None
        self._expired()
