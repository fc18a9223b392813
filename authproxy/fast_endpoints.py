"""The sign-in endpoints on the fast path: ``/oauth2/start`` and ``/oauth2/callback`` by their own handlers.

A browser's login is four requests on one keep-alive connection: the protected page (answered
on the fast path with the login redirect), ``/oauth2/start``, the callback, and the page again.
Handing the middle two to aiohttp's web layer, and taking the connection back after each, cost
more CPU than either endpoint's own work apart from the token request. So the fast path serves
a plain GET of those two paths itself, by calling the very handlers aiohttp would call
(:meth:`authproxy.oidc.flow.LoginFlows.start` and ``callback``) with a real aiohttp request
object built from the head it parsed (:func:`make_request`); every check stays in one place.

Only the simple case is taken: HTTP/1.1 GET, exactly the endpoint's path (no ``%``, no dot
segments, no fragment), one ``Host``. Anything else (HEAD, another method, an odd target) goes
to aiohttp as before. The answer is the handler's ``web.Response``, written as aiohttp writes it
(:func:`answer_fields`: its fields, then each cookie as a ``Set-Cookie`` field).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from authproxy.oidc.flow import LoginFlows

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SET_COOKIE: Final = "Set-Cookie"


def endpoint_handlers(flows: LoginFlows | None, auth_prefix: str) -> dict[str, Handler]:
    """The handlers the fast path serves, by exact path."""
    if flows is None:
        return {}
    return {auth_prefix + "/start": flows.start, auth_prefix + "/callback": flows.callback}


def endpoint_of(method: str, target: str, handlers: dict[str, Handler]) -> tuple[Handler, str, str] | None:
    """``(handler, path, query)`` when ``target`` is one of the endpoints, plainly written; else None."""
    if method != "GET" or "#" in target:
        return None
    path, _, query = target.partition("?")
    handler = handlers.get(path)
    if handler is None:
        return None
    return handler, path, query


class Peer:
    """What an aiohttp request reads of the protocol that received it (``BaseRequest.__init__``)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.ssl_context = transport.get_extra_info("sslcontext")


def make_request(
    method: str, path: str, query: str, fields: CIMultiDict[str], *, keep_alive: bool, peer: Peer
) -> web.Request:
    """An aiohttp request for a bodyless HTTP/1.1 request, as aiohttp's parser and server make it.

    The URL is built as aiohttp's parser builds an origin-form target (already encoded); the
    body is aiohttp's empty payload. The request is never prepared or written through: the
    answer is written by the fast path, so no stream writer is attached.
    """
    url = URL.build(path=path, query_string=query, encoded=True)
    message = RawRequestMessage(
        method,
        path + ("?" + query if query else ""),
        HttpVersion11,
        CIMultiDictProxy(fields),
        tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in fields.items()),
        not keep_alive,
        None,
        False,
        False,
        url,
    )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    writer: Any = None
    request = web.BaseRequest(message, EMPTY_PAYLOAD, cast("Any", peer), writer, cast("Any", task), loop)
    return cast("web.Request", request)


def answer_fields(response: web.StreamResponse) -> CIMultiDict[str]:
    """The response's fields with its cookies, as aiohttp's ``_prepare_headers`` adds them."""
    fields: CIMultiDict[str] = CIMultiDict(response.headers)
    for cookie in response.cookies.values():
        fields.add(SET_COOKIE, cookie.output(header="")[1:])
    return fields
