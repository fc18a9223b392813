"""Aggregating py-spy's raw (collapsed) stacks (bench/profile.py)."""

from __future__ import annotations

import pytest

from bench.profile import aggregate, short_frame


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("load (authproxy/sessions/manager.py:112)", "authproxy/sessions/manager.py:load"),
        ("load (/work/main/authproxy/sessions/manager.py:112)", "authproxy/sessions/manager.py:load"),
        (
            "_write (/work/main/.venv/lib/python3.11/site-packages/aiohttp/http_writer.py:104)",
            "aiohttp/http_writer.py:_write",
        ),
        ("run (/usr/lib/python3.11/asyncio/runners.py:118)", "stdlib/asyncio/runners.py:run"),
        ("<module> (<frozen runpy>:88)", "<frozen runpy>:<module>"),
        ("no parentheses", "no parentheses"),
    ],
    ids=["relative", "absolute-repo", "site-packages", "stdlib", "frozen", "unparsable"],
)
def test_short_frame(frame: str, expected: str) -> None:
    assert short_frame(frame) == expected


def test_aggregate_counts_self_at_the_leaf_and_inclusive_once_per_sample() -> None:
    raw = "\n".join(
        [
            'process 1:"python";thread (0x1);a (x.py:1);b (y.py:2);a (x.py:1) 3',
            'process 1:"python";thread (0x1);a (x.py:1);c (z.py:3) 1',
            "garbage line without a count",
        ]
    )
    profile = aggregate(raw)
    assert profile.samples == 4
    assert profile.self_time == {"x.py:a": 3, "z.py:c": 1}
    # a is on the stack of every sample, twice in the first stack: counted once per sample
    assert profile.inclusive["x.py:a"] == 4
    assert profile.top_self(1) == [("x.py:a", 0.75)]


def test_inclusive_ranking_leaves_out_the_entry_chain() -> None:
    raw = "authproxy/cli.py (authproxy/cli.py:1);main (authproxy/cli.py:2);load (authproxy/sessions/manager.py:3) 5"
    profile = aggregate(raw.replace("authproxy/cli.py (", "main2 ("))
    assert [frame for frame, _ in profile.top_inclusive(5, "authproxy/")] == ["authproxy/sessions/manager.py:load"]
