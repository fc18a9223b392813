"""Warnings at start for settings that work but hurt: logged once, in words that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from authproxy.oidc.client import refreshes_on_every_request
from tests.support.ops import json_records, login, start_ops_stack

WARNING = "the provider's access tokens live no longer than session.refresh_before_expiry"


@pytest.mark.parametrize(
    ("lifetime", "refresh_before_expiry", "every_request"),
    [
        pytest.param(30, 60, True, id="shorter"),
        pytest.param(60, 60, True, id="equal"),
        pytest.param(61, 60, False, id="longer"),
        pytest.param(3600, 60, False, id="usual"),
    ],
)
def test_a_token_that_is_due_for_refresh_when_issued_would_refresh_on_every_request(
    lifetime: float, refresh_before_expiry: float, every_request: bool
) -> None:
    assert refreshes_on_every_request(lifetime, refresh_before_expiry) is every_request


def warnings_in(logs: str) -> list[dict[str, object]]:
    return [r for r in json_records(logs) if str(r.get("msg", "")).startswith(WARNING)]


async def test_short_lived_access_tokens_are_warned_about_once_from_the_first_token_answer(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path, access_token_ttl=30) as stack:  # refresh_before_expiry: 60s (default)
        for user in ("alice", "bob"):
            async with stack.browser() as b:
                page = await login(b, stack, "/app/", user)
                assert page.status == 200, page
        found = warnings_in(stack.proxy.logs())
    assert len(found) == 1, found
    assert found[0]["level"] == "warning"
    assert found[0]["access_token_lifetime_s"] == 30 and found[0]["refresh_before_expiry_s"] == 60.0


async def test_no_warning_when_access_tokens_outlive_the_refresh_margin(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path, access_token_ttl=300) as stack:
        async with stack.browser() as b:
            page = await login(b, stack, "/app/")
            assert page.status == 200, page
        assert warnings_in(stack.proxy.logs()) == []
