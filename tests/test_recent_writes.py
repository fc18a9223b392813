"""Reading back a session record this process wrote without opening it again
(``authproxy.sessions.written``): only the very bytes it stored, only for the ticket that sealed
them; anything else is opened as before."""

from __future__ import annotations

import pytest

from authproxy.config import CookieConfig
from authproxy.sessions.manager import Session, SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import seal_record
from authproxy.sessions.ticket import new_ticket
from authproxy.sessions.written import RecentWrites
from tests.support.records import NOW, alice_record

KEY = "session:k1"


@pytest.mark.parametrize("max_entries", [0, -1])
def test_a_memory_of_no_writes_is_a_mistake(max_entries: int) -> None:
    with pytest.raises(ValueError, match="positive max_entries"):
        RecentWrites(max_entries)


def test_the_bytes_written_give_back_the_record_written() -> None:
    writes = RecentWrites()
    ticket = new_ticket()
    record = alice_record()
    sealed = seal_record(record.to_bytes(), ticket)
    writes.remember(KEY, ticket.key, sealed, record)
    assert writes.recall(KEY, ticket.key, bytes(sealed)) is record


@pytest.mark.parametrize(
    "case",
    ["same-record-sealed-again", "another-record", "another-ticket-key", "another-store-key", "one-byte-changed"],
)
def test_anything_but_the_bytes_written_for_that_ticket_is_not_recalled(case: str) -> None:
    writes = RecentWrites()
    ticket = new_ticket()
    record = alice_record()
    sealed = seal_record(record.to_bytes(), ticket)
    writes.remember(KEY, ticket.key, sealed, record)
    key, ticket_key, read = KEY, ticket.key, sealed
    if case == "same-record-sealed-again":
        read = seal_record(record.to_bytes(), ticket)  # a fresh nonce: another write
    elif case == "another-record":
        read = seal_record(alice_record(access_token="at-2").to_bytes(), ticket)
    elif case == "another-ticket-key":
        ticket_key = new_ticket().key
    elif case == "another-store-key":
        key = "session:k2"
    else:
        read = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert writes.recall(key, ticket_key, read) is None


def test_a_forgotten_write_and_the_oldest_past_the_bound_are_not_recalled() -> None:
    writes = RecentWrites(max_entries=2)
    ticket = new_ticket()
    sealed = {name: seal_record(alice_record(sub=name).to_bytes(), ticket) for name in ("a", "b", "c")}
    for name, blob in sealed.items():
        writes.remember(name, ticket.key, blob, alice_record(sub=name))
    assert len(writes) == 2
    assert writes.recall("a", ticket.key, sealed["a"]) is None
    writes.forget("b")
    assert writes.recall("b", ticket.key, sealed["b"]) is None
    recalled = writes.recall("c", ticket.key, sealed["c"])
    assert recalled is not None and recalled.sub == "c"


def _manager(store: MemoryStore) -> SessionManager:
    return SessionManager(
        store,
        secrets=["s" * 40],
        cookie=CookieConfig(secure=False),
        idle_timeout=3600,
        absolute_timeout=86400,
        clock=lambda: NOW,
    )


async def test_a_manager_reads_back_its_own_write_unopened_and_anyone_elses_opened() -> None:
    store = MemoryStore()
    mine, other = _manager(store), _manager(store)
    session, _ = await mine.create(alice_record())
    blob = await store.get(session.store_key)
    assert mine.open_stored(session.ticket, session.store_key, blob) is session.record

    # another process (replica, worker) writes the session: its bytes are opened, not recalled
    changed = Session(session.ticket, alice_record(access_token="at-2"), session.cookie)
    assert await other.save(changed, only_if_present=True)
    blob = await store.get(session.store_key)
    read = mine.open_stored(session.ticket, session.store_key, blob)
    assert read is not None and read is not changed.record and read.access_token == "at-2"
    assert mine.open_stored(session.ticket, session.store_key, None) is None

    # its own later write is recalled again; after a delete, nothing is
    assert await mine.save(
        Session(session.ticket, alice_record(access_token="at-3"), session.cookie), only_if_present=True
    )
    blob = await store.get(session.store_key)
    recalled = mine.open_stored(session.ticket, session.store_key, blob)
    assert recalled is not None and recalled.access_token == "at-3"
    await mine.delete(Session(session.ticket, recalled, session.cookie))
    assert len(mine._written) == 0
