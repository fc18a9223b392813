"""Matching a callback to its login flow (SPEC section 3, ``/oauth2/callback``), as plain functions.

A callback completes a flow only when its ``state`` names a flow this browser's flow cookie
opens, taken from the store once, and younger than ten minutes. Each refusal says why: the
reason is what the ``login_failed`` log line tells an operator. ``tests/test_login.py`` checks
the same refusals end to end (status 400, no token request).
"""

from __future__ import annotations

import pytest

from authproxy.errors import FlowError
from authproxy.oidc.flow import FLOW_TTL, LoginFlow, browser_fingerprint, open_flow
from authproxy.sessions.record import seal_record
from authproxy.sessions.ticket import Ticket, new_ticket

STARTED = 1_700_000_000.0
STATE = "state-of-this-login"


def sealed_flow(ticket: Ticket, state: str = STATE, started_at: float = STARTED) -> bytes:
    flow = LoginFlow(state, "the-nonce", "v" * 43, "/after", started_at)
    return seal_record(flow.to_bytes(), ticket)


def test_the_flow_of_this_state_opens_under_its_ticket() -> None:
    ticket = new_ticket()
    flow = open_flow(STATE, ticket, sealed_flow(ticket), STARTED + 1)
    assert (flow.state, flow.nonce, flow.redirect) == (STATE, "the-nonce", "/after")


def test_a_flow_is_good_until_its_ten_minutes_are_up() -> None:
    ticket = new_ticket()
    assert open_flow(STATE, ticket, sealed_flow(ticket), STARTED + FLOW_TTL).state == STATE


def refusal(state: str, ticket: Ticket | None, blob: bytes | None, now: float = STARTED + 1) -> str:
    with pytest.raises(FlowError) as refused:
        open_flow(state, ticket, blob, now)
    return refused.value.reason


def test_a_callback_without_state_is_refused_for_that() -> None:
    ticket = new_ticket()
    assert refusal("", ticket, sealed_flow(ticket)) == "no state"


def test_a_browser_without_the_flow_cookie_is_refused_for_that() -> None:
    assert refusal(STATE, None, sealed_flow(new_ticket())) == "no flow cookie for this state"


def test_a_flow_gone_from_the_store_is_refused_as_expired_or_used() -> None:
    assert refusal(STATE, new_ticket(), None) == "flow expired or already used"


def test_a_flow_sealed_for_another_browser_does_not_open() -> None:
    # the store's record under this key was not sealed with this cookie's key (a tampered store)
    assert refusal(STATE, new_ticket(), sealed_flow(new_ticket())) == "flow record does not open"


def test_a_flow_is_refused_for_any_other_state() -> None:
    ticket = new_ticket()
    assert refusal("another-state", ticket, sealed_flow(ticket)) == "state mismatch"
    assert refusal(STATE + "x", ticket, sealed_flow(ticket)) == "state mismatch"


def test_a_flow_older_than_ten_minutes_is_refused_even_if_the_store_still_holds_it() -> None:
    ticket = new_ticket()
    assert refusal(STATE, ticket, sealed_flow(ticket), now=STARTED + FLOW_TTL + 1) == "flow expired"


def test_a_user_agent_that_was_not_utf_8_is_counted_by_its_bytes() -> None:
    # the login loop counts per address and User-Agent; aiohttp reads such bytes as surrogates
    odd = b"\xff\xfe\x80".decode("utf-8", "surrogateescape")
    other = b"\xff\xfe\x81".decode("utf-8", "surrogateescape")
    assert browser_fingerprint("192.0.2.1", odd) != browser_fingerprint("192.0.2.1", other)
    assert len(browser_fingerprint("192.0.2.1", odd)) == 32
