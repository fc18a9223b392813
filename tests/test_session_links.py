"""Linked sessions on SSO origins (authproxy.sessions.manager + link), over both stores.

An SSO origin's cookie names a link to the central session: loading it gives the central session,
only on the origin the link was issued to; ending the central session ends the link; ending the
session through the link ends the central one (single logout).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from authproxy.config import CookieConfig
from authproxy.origins import Origins
from authproxy.sessions.link import LINK_KEY_PREFIX, SessionLink
from authproxy.sessions.manager import Session, SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.store import SessionStore
from authproxy.sessions.ticket import ID_BYTES, KEY_BYTES, Ticket, seal_ticket
from tests.test_sessions import ABSOLUTE, IDLE, NEW_SECRET, OLD_SECRET, Clock, record

ORIGINS = Origins.build("https://app.example.com", ["https://wiki.example.org", "https://tickets.example.net"])
A, B, C = "app.example.com", "wiki.example.org", "tickets.example.net"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        backend: SessionStore = MemoryStore()
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"), key_prefix="links:")
    yield backend
    await backend.close()


def manager(store: SessionStore, clock: Clock, secrets: list[str] | None = None) -> SessionManager:
    return SessionManager(
        store,
        secrets=secrets or [NEW_SECRET],
        cookie=CookieConfig(),
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
        origins=ORIGINS,
    )


async def test_a_link_opens_the_central_session_on_its_own_origin_only(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, central_cookie = await sessions.create(record(clock))
    link_cookie = await sessions.create_link(central, "https://wiki.example.org")
    assert link_cookie is not None and link_cookie != central_cookie

    linked = await sessions.load(link_cookie, B + ":443")
    assert linked is not None and linked.store_key == central.store_key and linked.record.sub == "alice"
    assert linked.link_key is not None and linked.link_key.startswith(LINK_KEY_PREFIX)
    # the link's cookie is no session on the authenticating origin, nor on another SSO origin
    assert await sessions.load(link_cookie, A) is None
    assert await sessions.load(link_cookie, C) is None
    # and the central cookie is no link on an SSO origin
    assert await sessions.load(central_cookie, B) is None
    assert await sessions.load(central_cookie, A) is not None


async def test_ending_the_central_session_ends_every_link(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, _ = await sessions.create(record(clock))
    wiki = await sessions.create_link(central, "https://wiki.example.org")
    tickets = await sessions.create_link(central, "https://tickets.example.net")
    assert await sessions.end_sessions(sid="provider-sid-1") == 1  # back-channel logout of the provider session
    assert await sessions.load(wiki, B) is None
    assert await sessions.load(tickets, C) is None


async def test_sign_out_through_a_link_ends_the_central_session_and_its_other_links(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, central_cookie = await sessions.create(record(clock))
    wiki = await sessions.create_link(central, "https://wiki.example.org")
    tickets = await sessions.create_link(central, "https://tickets.example.net")
    linked = await sessions.load(wiki, B)
    assert linked is not None
    await sessions.delete(linked)
    assert await sessions.load(central_cookie, A) is None
    assert await sessions.load(wiki, B) is None
    assert await sessions.load(tickets, C) is None
    assert linked.link_key is not None and await store.get(linked.link_key) is None


async def test_a_replaced_link_is_forgotten_but_the_central_session_stays(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, central_cookie = await sessions.create(record(clock))
    old = await sessions.create_link(central, "https://wiki.example.org")
    await sessions.forget_link(old)
    assert await sessions.load(old, B) is None
    assert await sessions.load(central_cookie, A) is not None


async def test_a_link_ends_when_the_central_session_expires(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, _ = await sessions.create(record(clock))
    wiki = await sessions.create_link(central, "https://wiki.example.org")
    clock.now += IDLE + 1  # the central session is idle-expired (its record says so)
    assert await sessions.load(wiki, B) is None


async def test_removing_a_secret_ends_the_links_of_the_sessions_made_with_it(store: SessionStore) -> None:
    # docs/operations.md: removing a secret signs out every session still made with it, on every domain
    clock = Clock()
    _, central_cookie = await manager(store, clock, [OLD_SECRET]).create(record(clock))
    rotating = manager(store, clock, [NEW_SECRET, OLD_SECRET])
    central = await rotating.load(central_cookie, A)
    assert central is not None
    wiki = await rotating.create_link(central, "https://wiki.example.org")  # its own cookie sealed with NEW
    assert await rotating.load(wiki, B) is not None

    rotated = manager(store, clock, [NEW_SECRET])
    assert await rotated.load(central_cookie, A) is None
    assert await rotated.load(wiki, B) is None
    # the link is gone, not merely refused: a replica still holding OLD opens nothing with it either
    assert await rotating.load(wiki, B) is None
    # and a handoff grant minted during the rotation (it keeps what a link keeps) hands nothing on
    assert await rotated.load_central(central.cookie) is None


async def test_a_session_made_with_the_new_secret_keeps_its_links_when_the_old_one_goes(
    store: SessionStore,
) -> None:
    clock = Clock()
    rotating = manager(store, clock, [NEW_SECRET, OLD_SECRET])
    central, _ = await rotating.create(record(clock))
    wiki = await rotating.create_link(central, "https://wiki.example.org")
    linked = await manager(store, clock, [NEW_SECRET]).load(wiki, B)
    assert linked is not None and linked.store_key == central.store_key


async def test_no_link_for_a_session_past_its_absolute_expiry(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    central, _ = await sessions.create(record(clock))
    clock.now += ABSOLUTE + 1
    assert await sessions.create_link(central, "https://wiki.example.org") is None


def test_cookies_on_an_sso_origin_are_host_only() -> None:
    sessions = SessionManager(
        MemoryStore(),
        secrets=[NEW_SECRET],
        cookie=CookieConfig(domain="example.com", secure=True),
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        origins=ORIGINS,
    )
    assert sessions.cookie_attributes(60, A)["domain"] == "example.com"
    assert "domain" not in sessions.cookie_attributes(60, B)


# ---------------------------------------------------------------------- the link record, read back

LINK = SessionLink(
    seal_ticket(Ticket(b"i" * ID_BYTES, b"k" * KEY_BYTES), NEW_SECRET.encode()), "https://wiki.example.org", 1000.0
)
MISSING = object()


def _link_json(**changes: object) -> bytes:
    fields = {**json.loads(LINK.to_bytes()), **changes}
    return json.dumps({name: value for name, value in fields.items() if value is not MISSING}).encode()


def test_a_link_record_reads_back_as_written() -> None:
    assert SessionLink.from_bytes(LINK.to_bytes()) == LINK


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"{not json", "a session link is not JSON", id="not-json"),
        pytest.param(b'["central"]', "a session link is not a JSON object", id="not-an-object"),
        pytest.param(_link_json(central=7), "session link field central: expected a string", id="central-not-text"),
        pytest.param(_link_json(central=""), "session link field central: expected a string", id="central-empty"),
        pytest.param(
            _link_json(central=MISSING), "session link field central: expected a string", id="central-missing"
        ),
        pytest.param(_link_json(origin=""), "session link field origin: expected a string", id="origin-empty"),
        pytest.param(_link_json(origin=MISSING), "session link field origin: expected a string", id="origin-missing"),
        pytest.param(_link_json(created_at=True), "field created_at: expected a number", id="created-at-bool"),
        pytest.param(_link_json(created_at="1000"), "field created_at: expected a number", id="created-at-text"),
    ],
)
def test_a_malformed_link_record_is_refused_whole(data: bytes, says: str) -> None:
    # a link is sealed, so only a store written by something else holds one of these: it must
    # never be half read into a session
    with pytest.raises(ValueError, match=says):
        SessionLink.from_bytes(data)


def test_a_link_and_a_session_never_show_the_central_cookie_in_their_repr() -> None:
    # a cookie value is a bearer secret: a link or session reaching a log line or a traceback
    # must not carry it there
    session = Session(Ticket(b"i" * ID_BYTES, b"k" * KEY_BYTES), record(Clock()), LINK.central)
    assert LINK.central not in repr(LINK)
    assert LINK.central not in repr(session)
