"""Sessions over the store (SPEC section 5): cookie ticket in, decrypted record out.

The browser's cookie carries a sealed ticket (session id + that session's own record key); the
store holds only the record sealed under that key, at a key derived from the id. A Redis copy
therefore reveals no token and yields no usable cookie. Each login gets a brand-new ticket
(fixation defence). Records slide their idle expiry on use and never outlive the absolute one.
Sessions are indexed by ``sub`` and by the provider's ``sid`` so back-channel logout can end them
on every replica.

On an SSO origin (:mod:`authproxy.origins`) the cookie names a link to the central session
instead (:mod:`authproxy.sessions.link`): :meth:`SessionManager.load` follows it, so what callers
get is always the central session, and ending that ends every origin's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import hdrs, web

from authproxy.config import CookieConfig
from authproxy.errors import StoreError
from authproxy.origins import Origins
from authproxy.sessions.cache import SessionCache
from authproxy.sessions.cookie_field import set_cookie_field
from authproxy.sessions.invalidation import InvalidationFeed
from authproxy.sessions.link import LINK_KEY_PREFIX, SessionLink
from authproxy.sessions.record import (
    SessionRecord,
    idle_ttl,
    is_expired,
    open_record,
    open_session_record,
    seal_record,
)
from authproxy.sessions.store import Lock, SessionStore
from authproxy.sessions.ticket import Ticket, new_ticket, open_ticket, seal_ticket, store_key_for
from authproxy.sessions.written import RecentWrites

SESSION_KEY_PREFIX: Final = "session:"
SUB_INDEX_PREFIX: Final = "index:sub:"
SID_INDEX_PREFIX: Final = "index:sid:"
# a session's last-use time is written back at most this often: a write per request would double
# the store traffic of the hot path for a precision nobody needs. With a short idle_timeout, at
# most a tenth of it: a session then ends no earlier than 90% of idle_timeout after its last use
TOUCH_INTERVAL: Final = 60.0
TOUCH_SHARE: Final = 0.1
# the per-session lock the refresher holds (authproxy.sessions.refresh uses the same name)
LOCK_PREFIX: Final = "lock:"
TOUCH_LOCK_LEASE: Final = 5.0
# cookie values opened with the secrets (AES-SIV), kept per process (emptied whole when full)
OPENED_TICKETS_MAX: Final = 10_000
_EXPIRED: Final = "Thu, 01 Jan 1970 00:00:00 GMT"  # what aiohttp's del_cookie sets


def _add_cookie(response: web.StreamResponse, name: str, field: str) -> None:
    """Add a ``Set-Cookie`` field, in place of one the response already sets for ``name`` (as
    aiohttp's ``set_cookie`` keeps one cookie per name)."""
    headers = response.headers
    if hdrs.SET_COOKIE in headers:
        prefix = name + "="
        kept = [value for value in headers.getall(hdrs.SET_COOKIE) if not value.startswith(prefix)]
        del headers[hdrs.SET_COOKIE]
        for value in kept:
            headers.add(hdrs.SET_COOKIE, value)
    headers.add(hdrs.SET_COOKIE, field)


def _index_key(prefix: str, value: str) -> str:
    # hashed so no identifier (sub, sid) appears in a store key
    return prefix + hashlib.sha256(value.encode()).hexdigest()


def sub_index(sub: str) -> str:
    return _index_key(SUB_INDEX_PREFIX, sub)


def sid_index(sid: str) -> str:
    return _index_key(SID_INDEX_PREFIX, sid)


@dataclass
class Session:
    """A live session: its ticket (from the cookie) and its decrypted record.

    ``cookie`` is the session's cookie value on the authenticating origin (its ticket as sealed
    when it was created), which is what links and handoff grants keep of it. Loaded on an SSO
    origin, it is the central session, and ``link_key`` names the store entry of the origin's own
    cookie.
    """

    ticket: Ticket
    record: SessionRecord
    cookie: str = field(repr=False)  # a bearer secret, like the ticket
    link_key: str | None = None

    @functools.cached_property
    def store_key(self) -> str:
        return SESSION_KEY_PREFIX + store_key_for(self.ticket.id)


class SessionManager:
    """Creates, loads, saves and ends sessions; sets and clears the session cookie."""

    def __init__(
        self,
        store: SessionStore,
        *,
        secrets: Sequence[str],
        cookie: CookieConfig,
        idle_timeout: float,
        absolute_timeout: float,
        clock: Callable[[], float] = time.time,
        cache: SessionCache | None = None,
        feed: InvalidationFeed | None = None,
        origins: Origins | None = None,
    ) -> None:
        """``cache`` (with the ``feed`` that keeps it in step across replicas) serves repeat
        requests of a session from memory; see :mod:`authproxy.sessions.cache`. ``origins`` tells
        which request hosts are SSO origins, whose cookies name links."""
        self.store = store
        self.origins = origins
        self.cache = cache
        self.feed = feed
        self._secrets = [s.encode() for s in secrets]
        self._opened: dict[str, tuple[Ticket, str]] = {}
        self.cookie = cookie
        self.cookie_name = cookie.full_name
        # an SSO origin's cookies are host-only, so they carry __Host- when Secure whatever
        # session.cookie.domain says: a sibling host under that domain cannot plant them
        self._one_cookie_name = origins is None or not origins.several or cookie.full_name == cookie.host_only_name
        self.idle_timeout = idle_timeout
        self.touch_interval = min(TOUCH_INTERVAL, idle_timeout * TOUCH_SHARE)
        self.absolute_timeout = absolute_timeout
        self.clock = clock
        # what this process stored last per session: read back under a lock without opening it
        self._written = RecentWrites()

    # ------------------------------------------------------------------ tickets and cookies

    def seal(self, ticket: Ticket) -> str:
        return seal_ticket(ticket, self._secrets[0])

    def open(self, value: str | None) -> Ticket | None:
        """The ticket in a cookie value, or None when absent, malformed or not ours."""
        if not value:
            return None
        return open_ticket(value, self._secrets)

    def _open_keyed(self, value: str | None) -> tuple[Ticket, str] | None:
        """The ticket in a session cookie and its session's store key, or None.

        Only session cookies come this way (``load``), and the central session's cookie values
        that links and grants keep; single-use flow cookies use ``open``.
        """
        if not value:
            return None
        # the same cookie comes with every request of a session: open it once. Only valid
        # values are kept, so the cache holds nothing an attacker chose but could not seal
        opened = self._opened.get(value)
        if opened is None:
            ticket = open_ticket(value, self._secrets)
            if ticket is None:
                return None
            if len(self._opened) >= OPENED_TICKETS_MAX:
                self._opened.clear()
            opened = self._opened[value] = (ticket, SESSION_KEY_PREFIX + store_key_for(ticket.id))
        return opened

    def satellite_of(self, host: str | None) -> str | None:
        """The SSO origin of a request ``Host``, or None on the authenticating origin."""
        return self.origins.satellite_of(host) if self.origins is not None else None

    def cookie_name_at(self, host: str | None) -> str:
        """The session cookie's name in a response to (and a request from) ``host``.

        ``cookie_name`` on the authenticating origin; on an SSO origin, whose cookies are
        host-only, ``session.cookie``'s host-only name (``__Host-`` when Secure).
        """
        if self._one_cookie_name or self.satellite_of(host) is None:
            return self.cookie_name
        return self.cookie.host_only_name

    def cookie_attributes(
        self, max_age: int | None, host: str | None = None, *, host_only: bool = False
    ) -> dict[str, object]:
        """Cookie attributes for a response to ``host``; an SSO origin's cookies are host-only,
        and so is every cookie set with ``host_only`` (``session.cookie.domain`` left out)."""
        attributes: dict[str, object] = {
            "path": "/",
            "httponly": True,
            "secure": self.cookie.secure,
            "samesite": self.cookie.same_site.capitalize(),
        }
        if self.cookie.domain and not host_only and self.satellite_of(host) is None:
            attributes["domain"] = self.cookie.domain
        if max_age is not None:
            attributes["max_age"] = max_age
        return attributes

    def set_cookie(
        self,
        response: web.StreamResponse,
        name: str,
        value: str,
        max_age: int,
        *,
        host: str | None = None,
        host_only: bool = False,
    ) -> None:
        attributes = self.cookie_attributes(max_age, host, host_only=host_only)
        _add_cookie(response, name, set_cookie_field(name, value, **attributes))  # type: ignore[arg-type]

    def clear_cookie(
        self, response: web.StreamResponse, name: str, *, host: str | None = None, host_only: bool = False
    ) -> None:
        attributes = self.cookie_attributes(0, host, host_only=host_only)
        field = set_cookie_field(name, "", expires=_EXPIRED, **attributes)  # type: ignore[arg-type]
        _add_cookie(response, name, field)

    # ------------------------------------------------------------------ sessions

    async def load(self, cookie_value: str | None, host: str | None = None) -> Session | None:
        """The session a cookie names, or None (tampered, unknown, expired: no session).

        ``host`` is the request's ``Host``: on an SSO origin the cookie names a link, which is
        followed to the central session (and honoured only on the origin it was issued to).
        """
        if not cookie_value:
            return None
        opened = self._open_keyed(cookie_value)
        if opened is None:
            return None
        ticket, session_key = opened
        origin = self.satellite_of(host)
        if origin is not None:
            return await self._load_linked(ticket, origin)
        return await self._load_session(ticket, session_key, cookie_value)

    async def _load_linked(self, ticket: Ticket, origin: str) -> Session | None:
        link_key = LINK_KEY_PREFIX + store_key_for(ticket.id)
        blob = await self.store.get(link_key)
        plaintext = open_record(blob, ticket) if blob is not None else None
        if plaintext is None:
            return None
        try:
            link = SessionLink.from_bytes(plaintext)
        except ValueError:
            return None
        if link.origin != origin:
            return None
        session = await self.load_central(link.central)
        if session is None:
            # the central session ended (sign-out elsewhere, back-channel logout), or the secret
            # that sealed its cookie was removed: so has this one
            await self.store.delete(link_key)
            return None
        session.link_key = link_key
        return session

    async def load_central(self, cookie_value: str) -> Session | None:
        """The session on the authenticating origin whose cookie value a link or grant keeps.

        The value is opened with the current secrets (once per process, like a session cookie):
        a session whose cookie no secret opens any more is over on every origin.
        """
        opened = self._open_keyed(cookie_value)
        if opened is None:
            return None
        ticket, session_key = opened
        return await self._load_session(ticket, session_key, cookie_value)

    async def _load_session(self, ticket: Ticket, session_key: str, cookie_value: str) -> Session | None:
        now = self.clock()
        cache = self.cache
        record = cache.get(session_key, ticket.key, now) if cache is not None else None
        if record is None:
            generation = cache.generation if cache is not None else 0
            record = await self._read(session_key, ticket)
            if record is None:
                return None
            if cache is not None and not is_expired(record, self.idle_timeout, now):
                cache.put(session_key, ticket.key, record, generation=generation, now=now)
        if is_expired(record, self.idle_timeout, now):
            await self.store.delete(session_key)
            if cache is not None:
                cache.invalidate(session_key)
            return None
        session = Session(ticket, record, cookie_value)
        if now - record.last_seen_at >= self.touch_interval:
            await self._touch(session, now)
        return session

    async def _read(self, session_key: str, ticket: Ticket) -> SessionRecord | None:
        return open_session_record(await self.store.get(session_key), ticket)

    def open_stored(self, ticket: Ticket, session_key: str, blob: bytes | None) -> SessionRecord | None:
        """The record ``blob`` (just read from ``session_key``) holds for ``ticket``; None when absent or not one.

        When the bytes are the ones this process stored there last, the record it sealed into them
        (shared: read-only for the caller); otherwise the bytes are opened.
        """
        if blob is None:
            return None
        written = self._written.recall(session_key, ticket.key, blob)
        return written if written is not None else open_session_record(blob, ticket)

    async def _invalidate(self, *keys: str) -> None:
        """After a write or delete: drop ``keys`` from this process's cache and every replica's."""
        for key in keys:
            self._written.forget(key)
        if self.cache is not None:
            for key in keys:
                self.cache.invalidate(key)
        # published even when this process keeps no cache: other replicas may keep one
        if self.feed is not None:
            await self.feed.publish(keys)

    async def _touch(self, session: Session, now: float) -> None:
        """Slide the idle expiry without ever writing back a record a refresh has replaced.

        The write happens only under the session's refresh lock, on a fresh read; when the lock is
        busy a refresh is running and will write the record (and its last use) itself.
        """
        lock = await self.store.acquire_lock(LOCK_PREFIX + session.store_key, TOUCH_LOCK_LEASE, read=session.store_key)
        if lock is None:
            return
        try:
            current = open_session_record(lock.value, session.ticket)
            if current is None:
                return
            current.last_seen_at = now
            session.record = current
            await self.save(session, only_if_present=True, release=lock)
        finally:
            await lock.release()  # nothing left to do when the write released it

    async def create(self, record: SessionRecord, *, forget: Sequence[str] = ()) -> tuple[Session, str]:
        """Store a new session under a fresh ticket; the session and its cookie value.

        The record and its sub/sid index entries go to the store together (with the deletion of
        the store keys in ``forget``, such as the sign-in's loop counter), and into this process's
        cache: the browser's next request (the redirect after sign-in) needs no read.
        """
        ticket = new_ticket()
        session = Session(ticket, record, self.seal(ticket))
        now = self.clock()
        ttl = idle_ttl(record, self.idle_timeout, now)
        key = session.store_key
        indexes = [sub_index(record.sub)] if record.sub else []
        if record.sid:
            indexes.append(sid_index(record.sid))
        generation = self.cache.generation if self.cache is not None else 0
        if ttl > 0:
            blob = seal_record(record.to_bytes(), session.ticket)
            await self.store.set_indexed(key, blob, ttl, indexes, self.absolute_timeout, forget=forget)
            self._written.remember(key, session.ticket.key, blob, record)
            if self.cache is not None:
                self.cache.put(key, session.ticket.key, record, generation=generation, now=now)
        return session, session.cookie

    async def save(self, session: Session, *, only_if_present: bool = False, release: Lock | None = None) -> bool:
        """Write the session; with ``only_if_present``, never recreate one that ended meanwhile.

        Updates of an existing session (refresh, last-use) pass ``only_if_present``: a logout on
        another replica may delete the record while the update is under way, and writing it back
        would resurrect a session no index can reach any more. False when it was gone. They also
        announce the write to the other replicas' caches, and release ``release`` (the session's
        lock) once the write has landed, in one round trip where the store can.
        """
        now = self.clock()
        ttl = idle_ttl(session.record, self.idle_timeout, now)
        key = session.store_key
        if ttl <= 0:
            try:
                await self.store.delete(key)
                await self._invalidate(key)
            finally:
                if release is not None:
                    await release.release()
            return False
        blob = seal_record(session.record.to_bytes(), session.ticket)
        if only_if_present:
            announce = self.feed.announcement([key]) if self.feed is not None else None
            cache = self.cache
            generation = cache.generation if cache is not None else 0
            stored = await self.store.set_if_present(key, blob, ttl, publish=announce, release=release)
            if stored:
                self._written.remember(key, session.ticket.key, blob, session.record)
            else:
                self._written.forget(key)
            # what was just written serves this process's next request (its own announcement is
            # skipped when it comes back); if anyone else wrote or deleted the session meanwhile,
            # or the write found it gone, the entry is dropped instead
            kept = (
                stored
                and cache is not None
                and cache.put(key, session.ticket.key, session.record, generation=generation, now=now)
            )
            if cache is not None and not kept:
                cache.invalidate(key)
            return stored
        await self.store.set(key, blob, ttl)
        self._written.remember(key, session.ticket.key, blob, session.record)
        if release is not None:
            await release.release()
        return True

    async def create_link(self, central: Session, origin: str) -> str | None:
        """A session on SSO origin ``origin`` linked to ``central``: its cookie value.

        The link lives as long as the central session may (its absolute expiry); the central
        session's idle expiry, refresh and end govern it meanwhile. None when ``central`` is over.
        """
        now = self.clock()
        ttl = central.record.absolute_expires_at - now
        if ttl <= 0:
            return None
        ticket = new_ticket()
        link = SessionLink(central.cookie, origin, now)
        await self.store.set(LINK_KEY_PREFIX + store_key_for(ticket.id), seal_record(link.to_bytes(), ticket), ttl)
        return self.seal(ticket)

    async def forget_link(self, cookie_value: str | None) -> None:
        """Delete the link a (replaced) SSO origin cookie names; its central session stays."""
        ticket = self.open(cookie_value)
        if ticket is not None:
            await self.store.delete(LINK_KEY_PREFIX + store_key_for(ticket.id))

    async def delete(self, session: Session) -> None:
        """End ``session`` (for a linked one, the central session: every origin's ends with it)."""
        try:
            if session.link_key is not None:
                await self.store.delete(session.link_key)
            await self.store.delete(session.store_key)
        except StoreError:
            # a delete that timed out may still land (a paused or hung Redis): no cache may go on
            # serving the session meanwhile, here or on another replica; the store decides
            with contextlib.suppress(StoreError):
                await self._invalidate(session.store_key)
            raise
        await self._invalidate(session.store_key)
        if session.record.sub:
            await self.store.index_remove(sub_index(session.record.sub), session.store_key)
        if session.record.sid:
            await self.store.index_remove(sid_index(session.record.sid), session.store_key)

    async def end_sessions(self, *, sub: str | None = None, sid: str | None = None) -> int:
        """End every session of a provider session (``sid``) or of a user (``sub``)."""
        indexes = []
        if sid:
            indexes.append(sid_index(sid))
        elif sub:
            indexes.append(sub_index(sub))
        ended = 0
        for index in indexes:
            members = await self.store.index_members(index)
            if not members:
                continue
            # an index may still name sessions that already ended another way
            live = [m for m in members if await self.store.get(m) is not None]
            if live:
                await self.store.delete(*live)
            # every member, live or not: a delete that timed out and landed later (a sign-out's)
            # reached no cache, and a retried logout must
            await self._invalidate(*members)
            await self.store.index_remove(index, *members)
            ended += len(live)
        return ended
