"""aiohttp's request handler, giving its connection back to the fast path between requests.

The fast path (:mod:`authproxy.fast_path`) hands a connection to aiohttp when a request is not
its simple case: a login redirect, ``/oauth2/start``, the callback, a POST. Without a way back,
every later request on that connection pays for aiohttp's web layer too, and a browser that
signed in once (four requests on one keep-alive connection, three of them aiohttp's) would stay
on the slow path for the rest of its visit.

:class:`ReturningRequestHandler` is aiohttp's own ``RequestHandler`` with one addition: when a
response is complete and the connection is idle in a way the fast path can take over exactly,
it offers the transport back (``give_back``). Idle exactly means all of:

- the request was an HTTP/1.1 GET or HEAD with no body left to read, and the response was
  written whole with keep-alive (no upgrade, no WebSocket, no ``Connection: close``);
- no further request is queued, and the last bytes read ended a request head, so aiohttp's
  parser holds nothing of a next request (pipelined bytes stay with aiohttp);
- neither reading nor writing is paused (no flow control state to carry over).

Anything else, and any aiohttp internals this relies on being absent, keeps the connection with
aiohttp as before: the hand-back is an optimisation that can only be skipped, never half done.
On a give-back the handler leaves aiohttp's connection tracking and keep-alive timer and ends
its request loop without closing the transport; the fast path's protocol then receives the
connection's next bytes.

At shutdown (``close()``, from the server's ``pre_shutdown``) a connection with a request being
answered keeps reading it until its answer is done, then closes: aiohttp's own ``close()`` stops
reading at once, so an upload's remaining body and a WebSocket's frames (its close included)
would never arrive, and each would hang until the shutdown deadline cut it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.web_protocol import RequestHandler

# takes the transport back (True), or declines (False: the site is stopping)
GiveBack = Callable[[asyncio.Transport], bool]

_END_OF_HEAD: Final = b"\r\n\r\n"
_BODYLESS_METHODS: Final = frozenset({"GET", "HEAD"})


class ReturningRequestHandler(RequestHandler):
    """aiohttp's ``RequestHandler`` that offers an idle keep-alive connection back (``give_back``)."""

    __slots__ = ("_close_after_answer", "_ends_at_head", "_give_back")

    def __init__(self, manager: web.Server, *, give_back: GiveBack | None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._give_back = give_back
        self._ends_at_head = False
        self._close_after_answer = False

    def close(self) -> None:
        """Shutdown: close now when idle; when a request is being answered, once it is answered."""
        if getattr(self, "_request_in_progress", False):
            # reading goes on (the request's body, a WebSocket's frames); no next request starts
            self._close_after_answer = True
            return
        super().close()

    def data_received(self, data: bytes) -> None:
        # whether the parser can be holding part of a next request: bytes that end a head
        # leave nothing behind (a body belongs to a request already parsed and queued)
        if data:
            self._ends_at_head = data.endswith(_END_OF_HEAD)
        super().data_received(data)

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        response, reset = await super()._handle_request(request, start_time, request_handler)
        if self._close_after_answer:
            super().close()  # aiohttp's request loop ends after this answer and closes
        elif self._give_back is not None and not reset and self._idle_after(request, response):
            self._return_connection()
        return response, reset

    def _idle_after(self, request: web.BaseRequest, response: web.StreamResponse) -> bool:
        """Whether the connection is between requests with nothing aiohttp must still hold."""
        try:
            return (
                request.method in _BODYLESS_METHODS
                and request.version == HttpVersion11
                and request.content.is_eof()
                and response.keep_alive is True
                and self._ends_at_head
                and self._manager is not None
                and not self._force_close
                and not self._close
                and not self._messages
                and not self._upgraded
                and self._payload_parser is None
                and not self._paused
                and not self._reading_paused
                and not self._buffer_paused
                and self.transport is not None
                and not self.transport.is_closing()
            )
        except AttributeError:  # an aiohttp without these internals: keep the connection
            return False

    def _return_connection(self) -> None:
        transport = self.transport
        give_back = self._give_back
        assert transport is not None and give_back is not None
        if not give_back(transport):
            return
        # the fast path has the transport: end aiohttp's request loop after this response
        # without closing it, and leave aiohttp's keep-alive timer and connection tracking
        self._force_close = True
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self._manager is not None:
            self._manager.connection_lost(self, None)
        # nothing of aiohttp's (a shutdown, a late close) may reach the transport now
        self.transport = None
        task = self._task_handler
        if task is not None:
            task.add_done_callback(self._let_go)

    def _let_go(self, _task: asyncio.Task[None]) -> None:
        """aiohttp's request loop has ended: drop what connection_lost would have dropped.

        The request parser refers back to its handler; left in place, every handler that gave
        its connection back would be a reference cycle for the garbage collector to find.
        """
        self._parser = None
        self._request_handler = None
        self._request_factory = None
        self._task_handler = None
