"""Proactive, race-free token refresh (SPEC section 5 "Refresh"; RFC 6749 section 6).

When a session's access token is within ``refresh_before_expiry`` of its expiry, the proxy
spends the refresh token (RFC 6749 section 6) before forwarding. Providers that rotate refresh
tokens and revoke the whole grant when a rotated one is presented again (OAuth 2.0 Security BCP,
RFC 9700 section 4.14.2) make a double refresh fatal: two workers spending the same token log
the user out. So at most one refresh per session runs at a time, everywhere:

- in one process, concurrent callers share one task per session (single flight);
- across workers and replicas, that task holds the store lock ``lock:<store key>``
  (``SET NX PX`` with a random token, compare-and-delete release, and a lease extended while
  the provider is still answering: ``store.hold_lock``);
- whoever holds the lock re-reads the record first: if someone else refreshed meanwhile, the
  fresh record is used and the provider is not called. The token spent is always the one in
  the store at that moment, never the one a (possibly late) request loaded earlier;
- whoever cannot get the lock polls the store until the record is fresh or the lock is free,
  and never calls the provider without the lock.

The new access token, the rotated refresh token and the new ID token are written with one
``SessionManager.save`` (a single ``SET``), so no reader ever sees half of a refresh.

Outcomes: ``invalid_grant`` deletes the session (:class:`SessionEnded`); a provider that is
unreachable, slow or answering 5xx leaves the session alone and the request proceeds on the old
access token while it is valid, else :class:`ProviderUnavailable` (503 with ``Retry-After``);
without a refresh token the session ends when its access token expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final, Literal, Protocol

from authproxy.errors import ProviderUnavailable, SessionEnded, StoreUnavailable, TokenEndpointError, TokenInvalid
from authproxy.logs import AUTH, log_line
from authproxy.sessions.manager import LOCK_PREFIX, Session, SessionManager
from authproxy.sessions.record import SessionRecord, is_expired
from authproxy.sessions.store import Lock, hold_lock

# how often a worker that finds the lock taken looks whether the holder has finished
POLL_INTERVAL: Final = 0.075
# the provider has rotated the refresh token once we get here: losing the new one to a store
# hiccup means the next refresh spends the old one and the provider revokes the grant, so the
# write is retried briefly (within the lock, whose lease is still being extended)
SAVE_ATTEMPTS: Final = 3
SAVE_RETRY_DELAY: Final = 0.1

RefreshResult = Literal["ok", "invalid_grant", "unavailable", "ended"]


class TokenSetLike(Protocol):
    """The fields of a token endpoint answer (RFC 6749 section 5.1) that a refresh stores."""

    @property
    def access_token(self) -> str: ...

    @property
    def expires_at(self) -> float | None:
        """Absolute Unix time; None when the provider gave no ``expires_in`` for an opaque token."""
        ...

    @property
    def refresh_token(self) -> str | None:
        """The rotated refresh token, or None when the provider kept the old one valid."""
        ...

    @property
    def id_token(self) -> str | None: ...


# spends a refresh token of the session whose record is given (a new ID token must be bound to it)
RefreshTokens = Callable[[str, SessionRecord], Awaitable[TokenSetLike]]


# ---------------------------------------------------------------------- pure decisions


def is_refresh_due(record: SessionRecord, refresh_before_expiry: float, now: float) -> bool:
    """Whether the access token expires within ``refresh_before_expiry`` of ``now`` (or has).

    A token of unknown lifetime (no ``expires_in``, and opaque) is never refreshed proactively.
    """
    return record.access_expires_at is not None and now >= record.access_expires_at - refresh_before_expiry


def is_access_valid(record: SessionRecord, now: float) -> bool:
    """Whether the access token can still be forwarded at ``now``."""
    return record.access_token is not None and (record.access_expires_at is None or now < record.access_expires_at)


def is_refreshed_since(seen: SessionRecord, current: SessionRecord, refresh_before_expiry: float, now: float) -> bool:
    """Whether ``current`` (just read from the store) makes a refresh of ``seen`` unnecessary.

    Either it is not due at all, or someone refreshed after ``seen`` was read and the result is
    still usable: a provider whose tokens live less than ``refresh_before_expiry`` must not turn
    every request into a refresh.
    """
    if not is_refresh_due(current, refresh_before_expiry, now):
        return True
    moved_on = current.version != seen.version or current.access_token != seen.access_token
    return moved_on and is_access_valid(current, now)


def build_refreshed_record(record: SessionRecord, tokens: TokenSetLike) -> SessionRecord:
    """``record`` with the tokens of a successful refresh; claims and timestamps unchanged.

    A provider that did not rotate the refresh token (RFC 6749 section 6: "MAY issue a new
    refresh token") leaves the old one valid, so it is kept; likewise the ID token, which a
    refresh response need not carry (OpenID Connect Core 1.0 section 12.2).
    """
    return replace(
        record,
        claims=dict(record.claims),
        access_token=tokens.access_token,
        access_expires_at=tokens.expires_at,
        refresh_token=tokens.refresh_token or record.refresh_token,
        id_token=tokens.id_token or record.id_token,
        version=record.version + 1,
    )


# ---------------------------------------------------------------------- store access


async def reload_session(sessions: SessionManager, session: Session) -> Session | None:
    """``session`` as the store holds it now, or None when it is gone, altered or expired."""
    return session_from_blob(sessions, session, await sessions.store.get(session.store_key))


def session_from_blob(sessions: SessionManager, session: Session, blob: bytes | None) -> Session | None:
    """``session`` with the record ``blob`` (read from the store), or None when gone, altered or expired."""
    record = sessions.open_stored(session.ticket, session.store_key, blob)
    if record is None or is_expired(record, sessions.idle_timeout, sessions.clock()):
        return None
    return Session(session.ticket, record, session.cookie, session.link_key)


def _still_there(current: Session | None) -> Session:
    if current is None:
        # ended meanwhile: refused refresh elsewhere, logout, back-channel logout, expiry
        raise SessionEnded("the session is no longer in the store")
    return current


def _own(session: Session) -> Session:
    # every caller of one flight gets a Session of its own (a linked session's link_key is set on
    # it); the record is shared, read-only like every record the session cache hands out
    return Session(session.ticket, session.record, session.cookie, session.link_key)


class _Flight:
    """One refresh of one session in this process, and the callers waiting for its outcome."""

    __slots__ = ("refreshed_user", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[Session]] = []
        # set when this flight refreshed the tokens: the "refresh ok" line is written after the
        # callers are on their way
        self.refreshed_user: str | None = None


class Refresher:
    """Keeps sessions' access tokens fresh: one refresh grant per session at a time, everywhere."""

    def __init__(
        self,
        sessions: SessionManager,
        refresh_tokens: RefreshTokens,
        *,
        refresh_before_expiry: float,
        lease: float = 10.0,
        wait_timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        """``refresh_tokens`` spends a session's refresh token at the provider (``ProviderClient.refresh``).

        ``lease`` is the store lock's lease, extended every third of itself while the provider
        answers, so it only bounds how long a crashed holder blocks others. ``wait_timeout``
        bounds how long a request waits for a refresh running elsewhere. ``on_result`` counts
        each outcome this process decides (metrics ``authproxy_refreshes_total{result}``).
        """
        self._sessions = sessions
        self._refresh_tokens = refresh_tokens
        self._before = refresh_before_expiry
        self._lease = lease
        self._wait_timeout = wait_timeout
        self._clock = clock
        self._on_result = on_result
        self._flights: dict[str, _Flight] = {}
        # the flights' tasks, until they end (a flight may outlive every request waiting for it)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Refreshes this process is running right now (holding or waiting for the lock)."""
        return len(self._flights)

    def is_due(self, record: SessionRecord, now: float) -> bool:
        """Whether the access token of ``record`` should be refreshed before forwarding at ``now``."""
        return is_refresh_due(record, self._before, now)

    async def ensure_fresh(self, session: Session) -> Session:
        """The session to forward with: ``session`` itself when not due, else refreshed or re-read.

        Raises :class:`SessionEnded` when the session was deleted (refresh refused, or expired
        without a refresh token), :class:`ProviderUnavailable` when the refresh failed
        transiently and the access token has already expired (the session is kept), and
        :class:`~authproxy.errors.StoreUnavailable` when the store cannot be reached.
        """
        if not self.is_due(session.record, self._clock()):
            return session
        key = session.store_key
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            task = asyncio.create_task(self._fly_and_deliver(key, session, flight))
            task.add_done_callback(functools.partial(self._landed, key, flight))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        # each caller waits on a future of its own: a request cancelled mid-refresh (client gone)
        # cancels only that, and the flight finishes and stores the result anyway (a grant the
        # provider may already have rotated must not be abandoned)
        waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        flight.waiters.append(waiter)
        return _own(await waiter)

    async def settle(self) -> None:
        """Shutdown: wait for the refreshes still running, at most as long as a request waits for one.

        A refresh goes on when the requests waiting for it are cut at the shutdown deadline; the
        provider may already have rotated the refresh token. Closing the provider client or the
        store under it would lose the new token (the next refresh is a reuse that revokes the
        grant) and leave the lock to its lease, so they close only after this.
        """
        if self._running:
            await asyncio.wait(list(self._running), timeout=self._wait_timeout)

    async def _fly_and_deliver(self, key: str, seen: Session, flight: _Flight) -> None:
        """Run the flight and hand its outcome to every caller waiting, the moment it is known.

        Set from here rather than from a done callback, each caller resumes one turn of the
        event loop sooner. The flight leaves ``_flights`` first, so no caller joins it after.
        """
        try:
            session = await self._fly(seen, flight)
        except Exception as e:
            self._end(key, flight)
            for waiter in flight.waiters:
                if not waiter.done():
                    waiter.set_exception(e)
            return
        self._end(key, flight)
        for waiter in flight.waiters:
            if not waiter.done():
                waiter.set_result(session)
        if flight.refreshed_user is not None:
            fields = {"event": "refresh", "result": "ok", "user": flight.refreshed_user}
            # scheduled after the callers' wake-ups: they forward first, the line follows
            asyncio.get_running_loop().call_soon(log_line, AUTH, logging.INFO, "refresh ok", fields)

    def _end(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _landed(self, key: str, flight: _Flight, task: asyncio.Task[None]) -> None:
        # a flight cancelled (at shutdown, even before it ran) leaves no caller waiting forever
        self._end(key, flight)
        for waiter in flight.waiters:
            if not waiter.done():
                waiter.cancel()

    def _report(self, result: RefreshResult) -> None:
        if self._on_result is not None:
            self._on_result(result)

    # ------------------------------------------------------------------ the flight

    async def _fly(self, seen: Session, flight: _Flight) -> Session:
        """One refresh of ``seen``'s session for this process: take the lock or wait for its holder."""
        if seen.record.refresh_token is None:
            # nothing to spend, so nothing to race for: no lock needed
            return await self._without_refresh_token(seen)
        store = self._sessions.store
        lock_name = LOCK_PREFIX + seen.store_key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_timeout
        while True:
            # the record comes with the lock, read after it was taken: one round trip
            async with hold_lock(store, lock_name, self._lease, read=seen.store_key) as lock:
                if lock is not None:
                    return await self._refresh_locked(seen, lock, flight)
            # another worker or replica is refreshing: use its result once it is stored
            current = await self._reload(seen)
            if is_refreshed_since(seen.record, current.record, self._before, self._clock()):
                return current
            if loop.time() >= deadline:
                log_line(
                    AUTH,
                    logging.WARNING,
                    "refresh failed: another worker held the refresh lock too long",
                    {"event": "refresh", "result": "unavailable", "user": current.record.sub},
                )
                return self._proceed_or_fail(current, None)
            await asyncio.sleep(POLL_INTERVAL)

    async def _reload(self, seen: Session) -> Session:
        return _still_there(await reload_session(self._sessions, seen))

    async def _refresh_locked(self, seen: Session, lock: Lock, flight: _Flight) -> Session:
        """Refresh while holding ``lock``, with the refresh token the store held when it was taken."""
        current = _still_there(session_from_blob(self._sessions, seen, lock.value))
        if is_refreshed_since(seen.record, current.record, self._before, self._clock()):
            return current
        refresh_token = current.record.refresh_token
        if refresh_token is None:
            return await self._without_refresh_token(current)
        sub = current.record.sub
        try:
            tokens = await self._refresh_tokens(refresh_token, current.record)
        except TokenEndpointError as e:
            if e.error == "invalid_grant":
                await self._sessions.delete(current)
                self._report("invalid_grant")
                log_line(
                    AUTH,
                    logging.INFO,
                    "refresh refused by the provider: session ended",
                    {"event": "refresh", "result": "invalid_grant", "user": sub},
                )
                raise SessionEnded("the provider refused the refresh token (invalid_grant)") from e
            # invalid_client, unauthorized_client...: our configuration or the provider's, not
            # this session's fault; keep the session as for an outage
            AUTH.warning(
                "refresh failed: the provider answered %s",
                e.error,
                extra={"fields": {"event": "refresh", "result": "unavailable", "user": sub}},
            )
            self._report("unavailable")
            return self._proceed_or_fail(current, e)
        except ProviderUnavailable as e:
            log_line(
                AUTH,
                logging.WARNING,
                "refresh failed: the provider is unavailable",
                {"event": "refresh", "result": "unavailable", "user": sub},
            )
            self._report("unavailable")
            return self._proceed_or_fail(current, e)
        except TokenInvalid as e:
            # the provider accepted the grant (and may have rotated the refresh token) but its
            # answer failed a check: the session cannot continue on tokens we will not trust
            await self._sessions.delete(current)
            self._report("ended")
            AUTH.warning(
                "refresh answer failed validation (%s): session ended",
                e.reason,
                extra={"fields": {"event": "refresh", "result": "ended", "user": sub}},
            )
            raise SessionEnded(f"the refreshed tokens failed validation: {e.reason}") from e
        refreshed = Session(
            current.ticket, build_refreshed_record(current.record, tokens), current.cookie, current.link_key
        )
        await self._save(refreshed, lock)
        self._report("ok")
        flight.refreshed_user = sub
        return refreshed

    async def _save(self, session: Session, lock: Lock) -> None:
        """Store the refreshed session and release ``lock`` with the same round trip."""
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                if not await self._sessions.save(session, only_if_present=True, release=lock):
                    # ended (logout, back-channel) while the provider was answering
                    self._report("ended")
                    raise SessionEnded("the session ended during the refresh")
                return
            except StoreUnavailable:
                if attempt == SAVE_ATTEMPTS:
                    log_line(
                        AUTH,
                        logging.ERROR,
                        "refreshed tokens could not be stored; the next refresh will likely be refused",
                        {"event": "refresh", "result": "store_error", "user": session.record.sub},
                    )
                    raise
                await asyncio.sleep(SAVE_RETRY_DELAY)

    def _proceed_or_fail(self, current: Session, error: Exception | None) -> Session:
        """After a refresh that did not happen: the old session while its token is valid, else 503."""
        # read the clock now: a slow provider may have taken the token past its expiry
        if is_access_valid(current.record, self._clock()):
            return current
        raise ProviderUnavailable("the access token expired and could not be refreshed") from error

    async def _without_refresh_token(self, current: Session) -> Session:
        """Without a refresh token the session lives exactly as long as its access token."""
        if is_access_valid(current.record, self._clock()):
            return current
        await self._sessions.delete(current)
        self._report("ended")
        log_line(
            AUTH,
            logging.INFO,
            "session ended: access token expired and there is no refresh token",
            {"event": "refresh", "result": "ended", "user": current.record.sub},
        )
        raise SessionEnded("the access token expired and there is no refresh token")
