"""Form serialisation (authproxy.form_encoding) is urllib's urlencode, byte for byte."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy import form_encoding
from authproxy.form_encoding import form_urlencode


@pytest.mark.parametrize(
    "pairs",
    [
        pytest.param({}, id="empty"),
        pytest.param({"grant_type": "authorization_code", "code": "a-B_c.d~9"}, id="plain-tokens"),
        pytest.param({"redirect_uri": "https://app.example/oauth2/callback?x=1&y=2"}, id="url"),
        pytest.param({"scope": "openid profile email"}, id="spaces-become-plus"),
        pytest.param({"a b": "c+d", "e&f": "g=h", "ü": "€ /%"}, id="names-and-non-ascii"),
        pytest.param({"empty": ""}, id="empty-value"),
    ],
)
def test_forms_are_encoded_as_urlencode_encodes_them(pairs: dict[str, str]) -> None:
    assert form_urlencode(pairs) == urlencode(pairs)


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6))
def test_any_form_is_encoded_as_urlencode_encodes_it(pairs: dict[str, str]) -> None:
    assert form_urlencode(pairs) == urlencode(pairs)


@given(st.lists(st.tuples(st.sampled_from(sorted(form_encoding.CONSTANT_VALUED)), st.text(max_size=40)), max_size=300))
def test_configuration_values_quoted_once_are_still_urlencodes(pairs: list[tuple[str, str]]) -> None:
    # many different values pass the bound on what is remembered
    for name, value in pairs:
        assert form_urlencode({name: value}) == urlencode({name: value})


def test_per_login_values_are_never_remembered() -> None:
    code, verifier = "a code/with+quoting", "per-login verifier"
    form_urlencode({"grant_type": "authorization_code", "code": code, "code_verifier": verifier})
    remembered = set(form_encoding._known)
    assert "authorization_code" in remembered
    assert code not in remembered and verifier not in remembered
