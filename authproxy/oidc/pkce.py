"""Random values of one login: PKCE verifier and challenge (RFC 7636), ``state`` and ``nonce``.

- ``code_verifier``: RFC 7636 section 4.1, 43-128 characters of the unreserved set
  ``[A-Za-z0-9-._~]``; we use 64 characters (384 bits of entropy).
- ``code_challenge``: RFC 7636 section 4.2, method ``S256`` only:
  ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``. ``plain`` is never offered (section 7.2).
- ``state``: RFC 6749 section 10.12 (CSRF binding of the callback) and ``nonce``: OpenID Connect
  Core 1.0 section 3.1.2.1 (replay binding of the ID token); both 256 random bits.

Pure: no I/O, only the operating system's CSPRNG through :mod:`secrets`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Final

# 32 random bytes -> 43 base64url characters (256 bits; SPEC asks for >= 128 bits)
STATE_BYTES: Final = 32
NONCE_BYTES: Final = 32
# 48 random bytes -> exactly 64 base64url characters, inside RFC 7636's 43..128
VERIFIER_BYTES: Final = 48
VERIFIER_PATTERN: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_state() -> str:
    """A fresh, URL-safe ``state`` value of 256 random bits."""
    return secrets.token_urlsafe(STATE_BYTES)


def new_nonce() -> str:
    """A fresh, URL-safe ``nonce`` value of 256 random bits."""
    return secrets.token_urlsafe(NONCE_BYTES)


def new_code_verifier() -> str:
    """A fresh 64-character PKCE ``code_verifier`` (base64url is a subset of the unreserved set)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge_s256(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier``; ``ValueError`` if it breaks RFC 7636 section 4.1."""
    # a malformed verifier would be rejected by the provider only at the token request, after the
    # user has logged in: refuse it here, where the bug is
    if not VERIFIER_PATTERN.fullmatch(verifier):
        raise ValueError("code_verifier must be 43-128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
