"""One cookie read from the Cookie field (authproxy.cookie_header) is the one aiohttp's parser reads."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from authproxy.cookie_header import find_cookie, request_cookie


def aiohttp_cookie(fields: list[str], name: str) -> str | None:
    """What ``request.cookies`` gives for ``name`` when the request carries ``fields``."""
    request = make_mocked_request("GET", "/", headers=CIMultiDict(("Cookie", field) for field in fields))
    return request.cookies.get(name)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(["a=1; s=v1.abc-_; b=2"], (True, "v1.abc-_"), id="among-others"),
        pytest.param(["a=1;s=v1.x;b=2"], (True, "v1.x"), id="no-spaces"),
        pytest.param(["  s=v1.x\t; a=1 "], (True, "v1.x"), id="spaces-and-tabs-around-pairs"),
        pytest.param(["a=1"], (True, None), id="absent"),
        pytest.param([], (True, None), id="no-cookie-field"),
        pytest.param(["s=v1.a; s=v1.b"], (True, "v1.b"), id="twice-the-last-as-aiohttp"),
        pytest.param(["s="], (True, ""), id="empty"),
        pytest.param(["s"], (True, ""), id="no-equals-sign"),
        pytest.param(["a=1;; s=v1.x"], (True, "v1.x"), id="empty-pair"),
        pytest.param(["s_flow=v1.a"], (True, None), id="other-name-with-prefix"),
        pytest.param(["s=v1.x=y/z"], (True, "v1.x=y/z"), id="any-cookie-octets"),
        pytest.param(["a=1", "s=v1.x"], (False, None), id="two-fields-aiohttp-reads-the-first"),
        pytest.param(['s="v1.a"'], (False, None), id="quoted"),
        pytest.param(['a="x;s=v1.b;y"; b=2'], (False, None), id="semicolon-inside-a-quoted-value"),
        pytest.param(["a=1 s=v1.b"], (False, None), id="space-inside-a-pair-separates-for-aiohttp"),
        pytest.param(["s = v1.b"], (False, None), id="spaces-around-equals"),
        pytest.param(["e=Wed, 09 Jun 2021 10:18:14 GMT; s=v1.b"], (False, None), id="date-with-a-comma"),
        pytest.param(["s=v1.\\x"], (False, None), id="backslash"),
        pytest.param(["a=John Smith; s=v1.x"], (False, None), id="another-cookie-malformed"),
        pytest.param(['a=John Smith; b="q;r"'], (True, None), id="malformed-without-the-name"),
        pytest.param(["a=en,fr; s=v1.x"], (True, "v1.x"), id="comma-in-a-value"),
        pytest.param(["=v1.x; s=v1.y"], (False, None), id="pair-without-a-name"),
        pytest.param(["s=v1.é"], (False, None), id="not-ascii"),
    ],
)
def test_a_cookie_is_read_here_only_when_aiohttp_cannot_read_it_otherwise(
    fields: list[str], expected: tuple[bool, str | None]
) -> None:
    assert find_cookie(fields, "s") == expected
    clear, value = expected
    if clear:
        assert value == aiohttp_cookie(fields, "s")


# pieces a Cookie field is made of, odd ones among them; two fields are the table's case above
FIELD_PIECES = ["s=v1.x", "a=1", "s", "=", "; ", ";", " ", "\t", '"', ",", "\\", "é", "Wed, 09 Jun 2021 10:18:14 GMT"]


@settings(max_examples=500)
@given(st.lists(st.sampled_from(FIELD_PIECES), max_size=8).map("".join))
def test_any_cookie_field_read_here_reads_as_aiohttp_reads_it(field: str) -> None:
    clear, value = find_cookie([field], "s")
    if clear:
        assert value == aiohttp_cookie([field], "s")


WELL_FORMED_PAIR = st.builds(
    lambda name, value: f"{name}={value}" if value is not None else name,
    st.sampled_from(["s", "a", "s_flow", "$s", "x-y"]),
    st.none() | st.text(st.sampled_from(list("v1.-_=/:%[]!~")), max_size=12),
)


@given(st.lists(WELL_FORMED_PAIR, min_size=1, max_size=5), st.sampled_from(["; ", ";", " ;\t"]))
def test_a_browser_s_cookie_field_is_read_here(pairs: list[str], separator: str) -> None:
    field = separator.join(pairs)
    assert find_cookie([field], "s") == (True, aiohttp_cookie([field], "s"))


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(["a=1; s=v1.x"], id="read-here"),
        pytest.param(['a="q;r"; s=v1.x'], id="read-by-aiohttp"),
        pytest.param(["a=1", "s=v1.x"], id="second-field-read-by-aiohttp"),
        pytest.param([], id="none"),
    ],
)
def test_request_cookie_is_what_request_cookies_holds(fields: list[str]) -> None:
    request = make_mocked_request("GET", "/", headers=CIMultiDict(("Cookie", field) for field in fields))
    assert request_cookie(request, "s") == aiohttp_cookie(fields, "s")
