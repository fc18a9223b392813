"""PKCE (RFC 7636 sections 4.1-4.2) and the state and nonce of SPEC section 3 `/start`."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import pytest

from authproxy.oidc.pkce import code_challenge_s256, new_code_verifier, new_nonce, new_state

UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]+")
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def test_challenge_matches_rfc_7636_appendix_b() -> None:
    assert (
        code_challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_challenge_is_base64url_sha256_without_padding() -> None:
    verifier = new_code_verifier()
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert code_challenge_s256(verifier) == expected
    assert "=" not in code_challenge_s256(verifier)


def test_verifier_is_64_unreserved_characters() -> None:
    for _ in range(200):
        verifier = new_code_verifier()
        assert len(verifier) == 64
        assert UNRESERVED.fullmatch(verifier)


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("a" * 42, id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("a" * 42 + "/", id="reserved-character"),
        pytest.param("a" * 42 + " ", id="space"),
        pytest.param("a" * 42 + "é", id="non-ascii"),
    ],
)
def test_malformed_verifier_is_refused(verifier: str) -> None:
    with pytest.raises(ValueError):
        code_challenge_s256(verifier)


@pytest.mark.parametrize("boundary", [43, 128], ids=["min-43", "max-128"])
def test_verifier_length_boundaries_are_accepted(boundary: int) -> None:
    assert len(code_challenge_s256("a" * boundary)) == 43


@pytest.mark.parametrize("generate", [new_state, new_nonce, new_code_verifier], ids=["state", "nonce", "code_verifier"])
def test_random_values_are_urlsafe_unique_and_carry_at_least_128_bits(generate: Callable[[], str]) -> None:
    values = {generate() for _ in range(1000)}
    assert len(values) == 1000
    for value in values:
        assert URLSAFE.fullmatch(value)
        # 6 bits per base64url character: 22 characters hold 132 bits
        assert len(value) * 6 >= 128
