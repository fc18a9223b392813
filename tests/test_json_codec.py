"""``authproxy.json_codec``: orjson's speed with the standard library's answers.

``loads`` must give exactly what ``json.loads`` gives (the same value and types, or an error of
the same kind) for any input, including what orjson reads differently or refuses; ``dumps_sorted``
must write what reads back as the value written, keys sorted."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from authproxy.json_codec import dumps_sorted, loads

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()  # unpaired surrogates too
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(read: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", read(data)
    except (ValueError, RecursionError) as e:
        return "error", type(e)


@given(_VALUES)
@example(2**64)
@example(2**63)
@example(-(2**63) - 1)
@example({"sub": "1234567890123456789012", "n": 10**30})
@example(float("nan"))
@example("\ud800")
def test_loads_reads_any_json_text_as_json_loads_does(value: Any) -> None:
    for data in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        kind, got = _outcome(loads, data)
        expected_kind, expected = _outcome(json.loads, data)
        assert kind == expected_kind
        assert _same(got, expected) if kind == "value" else got is expected


@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda text: text.encode("utf-8", "surrogatepass")))
@example(b"1e400")
@example(b"\xef\xbb\xbf{}")
@example(b'{"a":1,"a":2}')
@example(b"[" * 5000)
@example(b"-0")
@example(b'"\\ud800"')
@example("{}".encode("utf-16"))
def test_loads_accepts_and_refuses_what_json_loads_does(data: bytes) -> None:
    kind, got = _outcome(loads, data)
    expected_kind, expected = _outcome(json.loads, data)
    assert kind == expected_kind
    assert _same(got, expected) if kind == "value" else issubclass(got, ValueError) == issubclass(expected, ValueError)


@given(_VALUES)
def test_dumps_sorted_reads_back_as_the_value_written(value: Any) -> None:
    written = dumps_sorted(value)
    if isinstance(value, float) and not math.isfinite(value):
        assert written in (b"null", json.dumps(value).encode())
        return
    read = json.loads(written)
    if _has_non_finite(value):
        return  # orjson writes null for them
    assert _same(read, value)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    return False


@pytest.mark.parametrize("value", [{"b": 1, "a": {"d": 2, "c": 3}}, {"z": "é", "y": 10**30}, {"s": "\udc80", "a": 1}])
def test_dumps_sorted_is_compact_with_sorted_keys(value: dict[str, Any]) -> None:
    assert (
        dumps_sorted(value)
        == json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        or dumps_sorted(value) == json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    )
