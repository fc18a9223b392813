"""The lazily moved per-connection timer (authproxy.deadlines): fires for the deadline in force only."""

from __future__ import annotations

import asyncio

from authproxy.deadlines import LazyDeadline


async def _watched() -> tuple[LazyDeadline, list[float], asyncio.AbstractEventLoop]:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    return LazyDeadline(loop, lambda: fired.append(loop.time())), fired, loop


async def test_a_deadline_that_passes_while_in_force_expires_once() -> None:
    deadline, fired, loop = await _watched()
    deadline.watch(loop.time() + 0.02)
    await asyncio.sleep(0.1)
    assert len(fired) == 1


async def test_a_cleared_deadline_never_expires() -> None:
    deadline, fired, loop = await _watched()
    deadline.watch(loop.time() + 0.02)
    deadline.clear()
    await asyncio.sleep(0.1)
    assert fired == []


async def test_a_later_deadline_is_waited_for_and_an_earlier_one_moves_the_timer() -> None:
    deadline, fired, loop = await _watched()
    started = loop.time()
    deadline.watch(started + 0.03)
    deadline.watch(started + 5.0)  # the next wait's, further out: the timer sleeps on
    await asyncio.sleep(0.1)
    assert fired == []
    deadline.watch(loop.time() + 0.01)  # nearer than the timer: it moves
    await asyncio.sleep(0.2)
    assert len(fired) == 1 and fired[0] < started + 5.0


async def test_a_cancelled_deadline_leaves_no_timer_behind() -> None:
    deadline, fired, loop = await _watched()
    deadline.watch(loop.time() + 0.02)
    deadline.cancel()
    await asyncio.sleep(0.06)
    assert fired == []
