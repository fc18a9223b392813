"""The cross-domain handoff's checks and records (authproxy.oidc.handoff, sessions.link; pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authproxy.oidc.handoff import (
    GRANT_TTL,
    REPLICA_CLOCK_SKEW,
    HandoffFlow,
    HandoffGrant,
    authorize_url,
    callback_url,
    grant_refusal,
    state_digest,
    well_formed_state,
)
from authproxy.oidc.pkce import new_state
from authproxy.sessions.link import SessionLink
from authproxy.sessions.ticket import new_ticket, seal_ticket

NOW = 1_800_000_000.0
B = "https://wiki.example.org"
STATE = new_state()
FLOW = HandoffFlow(STATE, B, "/page?x=1", NOW - 30)
CENTRAL = seal_ticket(new_ticket(), b"s" * 32)  # the central session's cookie value
GRANT = HandoffGrant(CENTRAL, B, state_digest(STATE), NOW - 5)


def test_a_fresh_grant_for_this_origin_and_flow_is_accepted() -> None:
    assert grant_refusal(GRANT, FLOW, origin=B, state=STATE, now=NOW) is None


@pytest.mark.parametrize(
    ("grant", "flow", "origin", "state", "reason"),
    [
        pytest.param(GRANT, FLOW, B, new_state(), "state does not match", id="state-in-url-is-not-this-browsers"),
        pytest.param(GRANT, replace(FLOW, origin="https://x.example.net"), B, STATE, "another origin",
                     id="flow-of-another-origin"),
        pytest.param(replace(GRANT, origin="https://x.example.net"), FLOW, B, STATE, "code issued to another origin",
                     id="code-for-another-origin"),
        pytest.param(replace(GRANT, state_digest=state_digest(new_state())), FLOW, B, STATE,
                     "code issued for another handoff", id="code-of-another-browser"),
        pytest.param(replace(GRANT, issued_at=NOW - GRANT_TTL - 1), FLOW, B, STATE, "expired", id="expired-code"),
        pytest.param(replace(GRANT, issued_at=NOW + 120), FLOW, B, STATE, "expired", id="code-from-the-future"),
    ],
)  # fmt: skip
def test_grant_refusals(grant: HandoffGrant, flow: HandoffFlow, origin: str, state: str, reason: str) -> None:
    refusal = grant_refusal(grant, flow, origin=origin, state=state, now=NOW)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("ahead", [0.05, REPLICA_CLOCK_SKEW])
def test_a_code_issued_by_a_replica_whose_clock_is_slightly_ahead_is_accepted(ahead: float) -> None:
    assert grant_refusal(replace(GRANT, issued_at=NOW + ahead), FLOW, origin=B, state=STATE, now=NOW) is None


def test_grant_ttl_is_at_most_a_minute() -> None:
    assert GRANT_TTL <= 60


@pytest.mark.parametrize(
    ("state", "expected"),
    [(new_state(), True), ("", False), (None, False), ("a" * 129, False), ("abc def", False), ("abc&x=1", False)],
    ids=["new-state", "empty", "none", "too-long", "space", "ampersand"],
)
def test_well_formed_state(state: str | None, expected: bool) -> None:
    assert well_formed_state(state) is expected


def test_records_round_trip_and_refuse_garbage() -> None:
    assert HandoffGrant.from_bytes(GRANT.to_bytes()) == GRANT
    assert HandoffFlow.from_bytes(FLOW.to_bytes()) == FLOW
    link = SessionLink(CENTRAL, B, NOW)
    assert SessionLink.from_bytes(link.to_bytes()) == link
    for garbage in (b"", b"[]", b'{"central": 7, "origin": "x", "created_at": 1}', b'{"origin": 1}'):
        with pytest.raises(ValueError):
            SessionLink.from_bytes(garbage)
        with pytest.raises(ValueError):
            HandoffGrant.from_bytes(garbage)


def test_grant_keeps_a_digest_of_state_never_the_state() -> None:
    assert STATE not in GRANT.to_bytes().decode()


def test_urls_carry_only_origin_state_and_code() -> None:
    assert authorize_url("https://app.example.com", "/oauth2", origin=B, state="s") == (
        "https://app.example.com/oauth2/sso/authorize?origin=https%3A%2F%2Fwiki.example.org&state=s"
    )
    assert callback_url(B, "/oauth2", code="c", state="s") == B + "/oauth2/sso/callback?code=c&state=s"


def test_a_grant_never_shows_the_central_cookie_in_its_repr() -> None:
    assert CENTRAL not in repr(GRANT)
