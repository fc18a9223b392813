"""Checks of the JWTs a provider sends us, and the few JWTs and values we build for it.

- ID token validation: OpenID Connect Core 1.0 section 3.1.3.7 (signature by the provider's JWKS,
  ``alg`` allow-list, ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce``) and section 3.1.3.8
  (``at_hash``, computed as section 3.1.3.6 says).
- Logout token validation: OpenID Connect Back-Channel Logout 1.0 section 2.6 (claims of 2.4).
- JWT access tokens from API clients: RFC 9068 section 4 (``iss``, ``aud``, ``exp``, ``typ``).
- Token endpoint answers: RFC 6749 section 5.1 (``token_type`` Bearer, ``expires_in``).
- ``private_key_jwt`` client assertions: RFC 7523 sections 2.2 and 3 with OpenID Connect Core 1.0
  section 9 (``iss`` = ``sub`` = client_id, ``aud`` = token endpoint, ``jti``, short ``exp``).

PyJWT's algorithm objects check the signature (``PyJWK.Algorithm.verify``, by ``cryptography``);
the compact form is read here (RFC 7515 section 7.1), as strictly as PyJWT reads it, because its
``jwt.decode`` checks base64 character by character in Python, which was a tenth of a login's
CPU. Every claim check is ours, one ``_check_<claim>`` each, against a ``now`` passed in, so the
tests need no clock. Every failure is a ``TokenInvalid`` whose reason names the check and never
contains a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from authproxy.errors import ConfigError, ProviderUnavailable, TokenInvalid, UnknownKeyId
from authproxy.json_codec import loads

BACKCHANNEL_LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_LIFETIME: Final = 60.0
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
# RFC 9068 section 2.1 asks for "at+jwt"; many providers still write "JWT" (section 4 lets a
# resource server decide); anything else (e.g. "logout+jwt") is another kind of token
BEARER_TYPES: Final = frozenset({"at+jwt", "application/at+jwt", "jwt", "application/jwt"})
# Back-Channel Logout 1.0 section 4.1 (RFC 8725 section 3.11): "logout+jwt", or the generic
# "JWT" many providers write (Keycloak); a token typed as another kind (an "at+jwt" access
# token, a "secevent+jwt" security event) is no logout token, whatever its claims
LOGOUT_TYPES: Final = frozenset({"logout+jwt", "application/logout+jwt", "jwt", "application/jwt"})
# far above any real token (large group lists included), far below a memory problem
MAX_TOKEN_LENGTH: Final = 64 * 1024
RSA_MIN_BITS: Final = 2048
BEARER: Final = "Bearer"

# HMAC tokens (HS*, keyed by the client secret) go through jwt.decode, which verifies the
# signature only; the claims are checked below against the caller's ``now``. Short keys are
# refused outright rather than warned about (a warning per request helps nobody).
_URLSAFE_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_STANDARD_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_DECODE_OPTIONS: Final[jwt.types.Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}
# which JWKS keys can verify which alg (RFC 7518 section 3.1, RFC 8037 section 3.1)
_EC_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}
_RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EDDSA_CURVES: Final = frozenset({"Ed25519", "Ed448"})
_HASHES_BY_SIZE: Final = {"256": "sha256", "384": "sha384", "512": "sha512"}


# ----------------------------------------------------------------------------- keys


class KeySet:
    """The usable signature keys of a provider's JWKS (RFC 7517 section 5)."""

    def __init__(self, jwks: Sequence[Mapping[str, Any]]) -> None:
        self.jwks: tuple[Mapping[str, Any], ...] = tuple(jwks)
        # building a key parses big integers: do it once per (key, alg), not per request
        self._built: dict[tuple[int, str], jwt.PyJWK] = {}

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any]) -> KeySet:
        """Keep the keys meant for signatures that PyJWT can build; ``ProviderUnavailable`` if none."""
        raw_keys = doc.get("keys") if isinstance(doc, Mapping) else None
        if not isinstance(raw_keys, list):
            raise ProviderUnavailable("JWKS has no keys list")
        usable: list[Mapping[str, Any]] = []
        for jwk in raw_keys:
            if not _is_signature_key(jwk):
                continue
            algorithm = _default_algorithm(jwk)
            if algorithm is None:
                continue
            try:
                jwt.PyJWK(jwk, algorithm)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue  # one malformed key costs only itself
            usable.append(jwk)
        if not usable:
            raise ProviderUnavailable("JWKS holds no usable signature key")
        return cls(usable)

    def __len__(self) -> int:
        return len(self.jwks)

    def find(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """Keys to try for a token with ``kid`` and ``alg`` (Core 1.0 section 10.1.1).

        With a kid: the keys of that kid (``UnknownKeyId`` if none, so the caller can refetch).
        Without: the only key, or every key that fits ``alg`` (each one is tried in turn).
        """
        if kid is not None:
            indexes = [i for i, jwk in enumerate(self.jwks) if jwk.get("kid") == kid]
            if not indexes:
                raise UnknownKeyId(f"unknown kid {_printable(kid)!r}")
        else:
            indexes = list(range(len(self.jwks)))
        found = [self._build(i, alg) for i in indexes if _fits(self.jwks[i], alg)]
        if not found:
            raise TokenInvalid(f"no key for alg {alg}")
        return found

    def _build(self, index: int, alg: str) -> jwt.PyJWK:
        built = self._built.get((index, alg))
        if built is None:
            try:
                built = jwt.PyJWK(dict(self.jwks[index]), alg)
            except jwt.PyJWTError as e:
                raise TokenInvalid(f"unusable key for alg {alg}") from e
            self._built[(index, alg)] = built
        return built


_JWK_TEXT_MEMBERS: Final = ("kty", "alg", "crv", "kid", "use")


def _is_signature_key(jwk: object) -> bool:
    """A public key published for verifying signatures, its members of the types RFC 7517 gives.

    Encryption keys (``"use": "enc"``, or ``key_ops`` without ``verify``) must never verify
    signatures (RFC 7517 sections 4.2 and 4.3); an entry with ``d`` is a leaked private key.
    """
    if not isinstance(jwk, dict) or "d" in jwk:
        return False
    if any(name in jwk and not isinstance(jwk[name], str) for name in _JWK_TEXT_MEMBERS):
        return False
    if jwk.get("use", "sig") != "sig":
        return False
    operations = jwk.get("key_ops")
    return operations is None or (isinstance(operations, list) and "verify" in operations)


def _default_algorithm(jwk: Mapping[str, Any]) -> str | None:
    """An asymmetric algorithm the key could serve (to check PyJWT can build it), else None."""
    if "alg" in jwk:
        alg = jwk["alg"]
        return alg if alg in _RSA_ALGORITHMS or alg in _EC_CURVES or alg == "EdDSA" else None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        return next((alg for alg, curve in _EC_CURVES.items() if curve == crv), None)
    if kty == "OKP" and crv in _EDDSA_CURVES:
        return "EdDSA"
    return None


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether ``jwk`` may verify ``alg``: its own ``alg`` if it names one, else its type and curve."""
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if alg in _RSA_ALGORITHMS:
        return kty == "RSA"
    if alg in _EC_CURVES:
        return kty == "EC" and crv == _EC_CURVES[alg]
    if alg == "EdDSA":
        return kty == "OKP" and crv in _EDDSA_CURVES
    # HS* never comes from the provider's JWKS: its key is the client secret
    return False


# ----------------------------------------------------------------------------- hashes


def compute_at_hash(access_token: str, alg: str, curve: str | None = None) -> str:
    """``at_hash`` of Core 1.0 section 3.1.3.6: left half of the alg's hash, base64url.

    EdDSA names no hash: Ed25519 uses SHA-512 and Ed448 SHAKE256 with 114 bytes (the OpenID
    Foundation's resolution of the question), so the curve of the verifying key is needed.
    """
    data = access_token.encode("ascii")
    if alg == "EdDSA":
        if curve == "Ed25519":
            digest = hashlib.sha512(data).digest()
        elif curve == "Ed448":
            digest = hashlib.shake_256(data).digest(114)
        else:
            raise ValueError("EdDSA at_hash needs the key's curve (Ed25519 or Ed448)")
    else:
        name = _HASHES_BY_SIZE.get(alg.removesuffix("K")[-3:])
        if name is None:
            raise ValueError(f"no at_hash hash for alg {alg}")
        digest = hashlib.new(name, data).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


# ----------------------------------------------------------------------------- verification


def verify_id_token(
    raw: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    allowed_algorithms: Sequence[str],
    nonce: str,
    now: float,
    skew: float,
    access_token: str | None = None,
    client_secret: str | None = None,
    max_age: float | None = None,
) -> dict[str, Any]:
    """The claims of a valid ID token (Core 1.0 section 3.1.3.7); ``TokenInvalid`` otherwise.

    HS* is accepted only when listed in ``allowed_algorithms``, with ``client_secret`` as the key.
    ``max_age``: the one the authorization request asked for, if any (``auth_time`` is then checked).
    """
    claims, _, alg, curve = _verified_id_token(
        raw, keys, issuer, client_id, allowed_algorithms, now, skew, client_secret
    )
    _check_nonce(claims, nonce)
    _check_at_hash(claims, access_token, alg, curve)
    _check_auth_time(claims, now, skew, max_age)
    return claims


def _verified_id_token(
    raw: str,
    keys: KeySet,
    issuer: str,
    client_id: str,
    allowed_algorithms: Sequence[str],
    now: float,
    skew: float,
    client_secret: str | None,
) -> tuple[dict[str, Any], list[str], str, str | None]:
    """The checks every ID token passes: signature and alg, ``iss``, ``aud``, ``azp``, ``exp``,
    ``iat``, ``nbf``, ``sub``. The claims, the audiences, the alg and the EdDSA curve."""
    claims, alg, curve = _decode_verified(raw, keys, allowed_algorithms, client_secret)
    _check_iss(claims, issuer)
    audiences = _check_aud(claims, (client_id,))
    _check_azp(claims, audiences, client_id)
    _check_exp(claims, now, skew, required=True)
    _check_iat(claims, now, skew, required=True)
    _check_nbf(claims, now, skew)
    _check_sub(claims)
    return claims, audiences, alg, curve


def verify_refreshed_id_token(
    raw: str,
    *,
    sub: str,
    earlier: Mapping[str, Any] | None,
    sid: str | None = None,
    keys: KeySet,
    issuer: str,
    client_id: str,
    allowed_algorithms: Sequence[str],
    now: float,
    skew: float,
    access_token: str | None = None,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """The claims of a valid ID token from a refresh (Core 1.0 section 12.2); ``TokenInvalid`` otherwise.

    Checked as at sign-in (signature, alg, ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nbf``,
    ``at_hash`` against the new access token), and bound to the session it refreshes: the same
    ``sub``, the same ``sid`` as the session signed in with (``sid``, by which a back-channel
    logout finds it) when both have one, and the same audiences and ``auth_time`` as ``earlier``
    (the claims of the session's current ID token, verified when it was stored) where that token
    has them. There is no nonce to match: section 12.2 says the token SHOULD NOT carry one, and
    some providers repeat it.
    """
    claims, audiences, alg, curve = _verified_id_token(
        raw, keys, issuer, client_id, allowed_algorithms, now, skew, client_secret
    )
    if claims["sub"] != sub:
        raise TokenInvalid("sub differs from the session's")
    if sid is not None and "sid" in claims and claims["sid"] != sid:
        # the session would be out of reach of that other provider session's logout
        raise TokenInvalid("sid differs from the session's")
    if earlier is not None:
        earlier_aud = earlier.get("aud", audiences)
        if set(audiences) != set([earlier_aud] if isinstance(earlier_aud, str) else earlier_aud):
            raise TokenInvalid("aud differs from the session's")
        if "auth_time" in claims and "auth_time" in earlier and claims["auth_time"] != earlier["auth_time"]:
            raise TokenInvalid("auth_time differs from the session's")
    _check_at_hash(claims, access_token, alg, curve)
    return claims


def unverified_claims(raw: str) -> dict[str, Any]:
    """The payload of a compact JWS this proxy verified earlier, read without verifying it again."""
    _header(raw)
    return _json_object(_segment(raw.split(".")[1]))


def verify_logout_token(
    raw: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    allowed_algorithms: Sequence[str],
    now: float,
    skew: float,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """The claims of a valid logout token (Back-Channel Logout 1.0 section 2.6); the caller checks ``jti`` reuse."""
    _check_logout_typ(_header(raw))
    claims, _, _ = _decode_verified(raw, keys, allowed_algorithms, client_secret)
    _check_iss(claims, issuer)
    _check_aud(claims, (client_id,))
    _check_iat(claims, now, skew, required=True)
    _check_exp(claims, now, skew, required=False)
    _check_nbf(claims, now, skew)
    _check_jti(claims)
    _check_events(claims)
    _check_logout_subject(claims)
    _check_no_nonce(claims)
    return claims


def verify_bearer_token(
    raw: str,
    *,
    keys: KeySet,
    issuer: str,
    audiences: Collection[str],
    allowed_algorithms: Sequence[str],
    now: float,
    skew: float,
) -> dict[str, Any]:
    """The claims of a valid JWT access token (RFC 9068 section 4); ``TokenInvalid`` otherwise."""
    header = _header(raw)
    _check_typ(header)
    # no client secret: an access token for an API is signed by the provider's own keys
    claims, _, _ = _decode_verified(raw, keys, allowed_algorithms, None)
    _check_iss(claims, issuer)
    _check_exp(claims, now, skew, required=True)
    _check_aud(claims, audiences)
    _check_iat(claims, now, skew, required=False)
    _check_nbf(claims, now, skew)
    _check_sub(claims)
    _check_not_a_logout_token(claims)
    _check_not_an_id_token(header, claims)
    return claims


# claims only ID tokens carry (Core 1.0 sections 2 and 3.1.3.6, 3.3.2.11), and the token-kind
# claims of providers whose access and ID tokens are otherwise alike (Keycloak's ``typ``,
# Cognito's ``token_use``)
_ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash")
_ACCESS_TOKEN_KINDS: Final = {"typ": ("bearer", "at+jwt"), "token_use": ("access",)}
_ID_TOKEN_KINDS: Final = {"typ": ("id",), "token_use": ("id",)}


def _kind_is(claims: Mapping[str, Any], kinds: Mapping[str, tuple[str, ...]]) -> bool:
    return any(isinstance(claims.get(name), str) and claims[name].lower() in values for name, values in kinds.items())


def _check_not_an_id_token(header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
    """Refuse an ID token offered as an access token (RFC 8725 section 2.8).

    With ``bearer_audiences`` at its default, the client id, an ID token's ``aud`` passes; and an
    ID token travels where access tokens do not (``id_token_hint`` in the sign-out URL, browser
    history, ``pass_id_token`` upstreams). Many providers sign access tokens with ``typ: JWT``,
    so the header rarely tells the two apart. A token that says it is an access token (RFC 9068's
    ``at+jwt`` header, Keycloak's ``typ: Bearer``, Cognito's ``token_use: access``) is one:
    Keycloak before 24 copies the login's ``nonce`` into its access tokens. Otherwise the claims
    only ID tokens carry, or a kind that says so, refuse it.
    """
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower() in ("at+jwt", "application/at+jwt"):
        return
    if _kind_is(claims, _ACCESS_TOKEN_KINDS):
        return
    if any(name in claims for name in _ID_TOKEN_CLAIMS) or _kind_is(claims, _ID_TOKEN_KINDS):
        raise TokenInvalid("an ID token is not an access token")


def _check_not_a_logout_token(claims: Mapping[str, Any]) -> None:
    """Refuse a logout token offered as an access token (RFC 8725 section 2.8).

    Its ``aud`` is the client id, which ``bearer_audiences`` accepts by default, and many
    providers type it no more than ``JWT`` (Keycloak), so neither tells it apart; the back-channel
    logout event does: it "declares that the JWT is a Logout Token" (Back-Channel Logout 1.0
    section 2.4), whatever its header says.
    """
    events = claims.get("events")
    if isinstance(events, dict) and BACKCHANNEL_LOGOUT_EVENT in events:
        raise TokenInvalid("a logout token is not an access token")


def _segment(segment: str) -> bytes:
    """One base64url segment of a compact JWS, decoded (RFC 7515 section 2).

    As strictly as PyJWT reads a segment: the URL-safe alphabet only, trailing ``=`` padding
    allowed (at most two, and then to a multiple of four), and the canonical encoding only (no
    stray bits in the last character), so one token has exactly one spelling.
    """
    try:
        data = segment.encode("ascii")
    except UnicodeEncodeError as e:
        raise TokenInvalid("malformed token") from e
    stripped = data.rstrip(b"=")
    padding = len(data) - len(stripped)
    if padding > 2 or (padding and len(data) % 4) or len(stripped) % 4 == 1 or b"+" in stripped or b"/" in stripped:
        raise TokenInvalid("malformed token")
    try:
        # strict: nothing outside the alphabet (after mapping "-_" onto "+/"), no inner "="
        decoded = binascii.a2b_base64(
            stripped.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(stripped) % 4), strict_mode=True
        )
    except binascii.Error as e:
        raise TokenInvalid("malformed token") from e
    if binascii.b2a_base64(decoded, newline=False).rstrip(b"=").translate(_STANDARD_TO_URLSAFE) != stripped:
        raise TokenInvalid("malformed token")
    return decoded


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = loads(data)
    except (ValueError, RecursionError) as e:
        raise TokenInvalid("malformed token") from e
    if not isinstance(value, dict):
        raise TokenInvalid("malformed token")
    return value


def _header(raw: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, unverified (RFC 7515 section 7.1); exactly three segments."""
    if not isinstance(raw, str) or not raw:
        raise TokenInvalid("malformed token")
    if len(raw) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("token too large")
    segment, _, rest = raw.partition(".")
    if rest.count(".") != 1:
        raise TokenInvalid("malformed token")
    return _json_object(_segment(segment))


def _verified_payload(raw: str, header: Mapping[str, Any], alg: str, key: jwt.PyJWK) -> dict[str, Any] | None:
    """The claims of ``raw`` when ``key`` verifies its signature under ``alg``; None when it does not.

    What ``jwt.decode`` checks, in the same order: no JWS extension this proxy does not
    understand (RFC 7515 section 4.1.11: any ``crit``, and ``b64`` other than true, are
    refused), the key bound to ``alg``, the key long enough, then the signature over the first
    two segments as sent; the payload must be a JSON object.
    """
    if "crit" in header or header.get("b64", True) is not True:
        raise TokenInvalid("malformed token")
    if key.algorithm_name != alg:
        raise TokenInvalid(f"alg not allowed: {_printable(alg)}")
    signing_input, _, signature_segment = raw.rpartition(".")
    payload_segment = signing_input.partition(".")[2]
    payload = _segment(payload_segment)
    signature = _segment(signature_segment)
    algorithm = key.Algorithm
    try:
        prepared = algorithm.prepare_key(key.key)
        if algorithm.check_key_length(prepared):
            raise TokenInvalid(f"key too weak for {alg}")
        verified = algorithm.verify(signing_input.encode("ascii"), prepared, signature)
    except jwt.InvalidKeyError as e:
        raise TokenInvalid(f"key too weak for {alg}") from e
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise TokenInvalid("malformed token") from e
    if not verified:
        return None
    return _json_object(payload)


def _decode_verified(
    raw: str, keys: KeySet, allowed_algorithms: Sequence[str], client_secret: str | None
) -> tuple[dict[str, Any], str, str | None]:
    """Verified claims, the alg, and the EdDSA curve of the key that verified (for ``at_hash``)."""
    header = _header(raw)
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenInvalid("alg missing")
    # "none" is refused even if someone lists it (RFC 8725 section 3.1)
    if alg.lower() == "none" or alg not in allowed_algorithms:
        raise TokenInvalid(f"alg not allowed: {_printable(alg)}")
    candidates: Sequence[jwt.PyJWK | bytes]
    if alg in HMAC_ALGORITHMS:
        # Core 1.0 section 10.1: the HMAC key is the octets of the client secret
        if not client_secret:
            raise TokenInvalid(f"no client secret to verify {alg}")
        candidates = [client_secret.encode("utf-8")]
    else:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenInvalid("kid malformed")
        candidates = keys.find(kid, alg)
    for key in candidates:
        if isinstance(key, jwt.PyJWK):
            verified = _verified_payload(raw, header, alg, key)
            if verified is None:
                continue  # without a kid, another key of the set may be the one
            return verified, alg, _curve_of(key)
        try:
            claims = jwt.decode(raw, key, algorithms=[alg], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidKeyError as e:
            raise TokenInvalid(f"key too weak for {alg}") from e
        except jwt.PyJWTError as e:
            raise TokenInvalid("malformed token") from e
        return claims, alg, _curve_of(key)
    raise TokenInvalid("bad signature")


def _curve_of(key: jwt.PyJWK | bytes) -> str | None:
    if isinstance(key, jwt.PyJWK) and key.algorithm_name == "EdDSA":
        return "Ed448" if isinstance(key.key, ed448.Ed448PublicKey) else "Ed25519"
    return None


# ----------------------------------------------------------------------------- claim checks


def _check_typ(header: Mapping[str, Any]) -> None:
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in BEARER_TYPES):
        raise TokenInvalid("typ not accepted for an access token")


def _check_logout_typ(header: Mapping[str, Any]) -> None:
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in LOGOUT_TYPES):
        raise TokenInvalid("typ not accepted for a logout token")


def _check_iss(claims: Mapping[str, Any], issuer: str) -> None:
    iss = claims.get("iss")
    if iss is None:
        raise TokenInvalid("iss missing")
    # exact comparison (Core 1.0 section 3.1.3.7 step 2): no normalisation of slashes or case
    if iss != issuer:
        raise TokenInvalid("iss mismatch")


def _check_aud(claims: Mapping[str, Any], accepted: Collection[str]) -> list[str]:
    """The token's audiences, after checking that one of them is ours."""
    aud = claims.get("aud")
    if aud is None:
        raise TokenInvalid("aud missing")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(item, str) for item in audiences):
        raise TokenInvalid("aud malformed")
    if not set(audiences) & set(accepted):
        raise TokenInvalid("aud mismatch")
    return audiences


def _check_azp(claims: Mapping[str, Any], audiences: Sequence[str], client_id: str) -> None:
    azp = claims.get("azp")
    if azp is None:
        # another audience could replay a token issued to it; azp says which party it is for
        if len(set(audiences)) > 1:
            raise TokenInvalid("azp missing with several audiences")
        return
    if azp != client_id:
        raise TokenInvalid("azp mismatch")


def _time_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """The NumericDate ``name`` (RFC 7519 section 2), None when absent and not ``required``."""
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenInvalid(f"{name} missing")
        return None
    if not _is_number(value):
        raise TokenInvalid(f"{name} malformed")
    return float(value)


def _check_exp(claims: Mapping[str, Any], now: float, skew: float, *, required: bool) -> None:
    exp = _time_claim(claims, "exp", required=required)
    # RFC 7519 section 4.1.4: the current time must be before exp (skew tolerates slow clocks)
    if exp is not None and now >= exp + skew:
        raise TokenInvalid("token expired")


def _check_iat(claims: Mapping[str, Any], now: float, skew: float, *, required: bool) -> None:
    iat = _time_claim(claims, "iat", required=required)
    if iat is not None and iat > now + skew:
        raise TokenInvalid("iat in the future")


def _check_nbf(claims: Mapping[str, Any], now: float, skew: float) -> None:
    nbf = _time_claim(claims, "nbf", required=False)
    if nbf is not None and nbf > now + skew:
        raise TokenInvalid("token not yet valid")


def _check_auth_time(claims: Mapping[str, Any], now: float, skew: float, max_age: float | None) -> None:
    # Core 1.0 section 3.1.2.1: with max_age the ID token MUST carry auth_time; section 3.1.3.7
    # item 13: an authentication older than max_age is not taken (the browser, which carried the
    # request, may have dropped max_age on its way to the provider)
    if max_age is None:
        return
    auth_time = _time_claim(claims, "auth_time", required=True)
    assert auth_time is not None
    if now - auth_time > max_age + skew:
        raise TokenInvalid("auth_time older than max_age")


def _check_sub(claims: Mapping[str, Any]) -> None:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenInvalid("sub missing")


def _check_nonce(claims: Mapping[str, Any], expected: str) -> None:
    actual = claims.get("nonce")
    if actual is None:
        raise TokenInvalid("nonce missing")
    if not isinstance(actual, str) or not hmac.compare_digest(actual.encode(), expected.encode()):
        raise TokenInvalid("nonce mismatch")


def _check_at_hash(claims: Mapping[str, Any], access_token: str | None, alg: str, curve: str | None) -> None:
    at_hash = claims.get("at_hash")
    if at_hash is None or access_token is None:
        return
    if not isinstance(at_hash, str):
        raise TokenInvalid("at_hash mismatch")
    try:
        expected = compute_at_hash(access_token, alg, curve)
    except (ValueError, UnicodeEncodeError) as e:
        raise TokenInvalid("at_hash cannot be computed") from e
    if not hmac.compare_digest(at_hash.encode(), expected.encode()):
        raise TokenInvalid("at_hash mismatch")


def _check_jti(claims: Mapping[str, Any]) -> None:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise TokenInvalid("jti missing")


def _check_events(claims: Mapping[str, Any]) -> None:
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise TokenInvalid("back-channel logout event missing")


def _check_logout_subject(claims: Mapping[str, Any]) -> None:
    sid, sub = claims.get("sid"), claims.get("sub")
    if sid is None and sub is None:
        raise TokenInvalid("sid and sub missing")
    for name, value in (("sid", sid), ("sub", sub)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TokenInvalid(f"{name} malformed")


def _check_no_nonce(claims: Mapping[str, Any]) -> None:
    # section 2.4: forbidden so that an ID token can never pass as a logout token
    if "nonce" in claims:
        raise TokenInvalid("logout token carries a nonce")


def _is_number(value: object) -> bool:
    """A finite JSON number: not a boolean, not Infinity or NaN, not an integer beyond a float's range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _printable(value: str) -> str:
    """A header value made safe to put in a log line: short, printable ASCII."""
    return "".join(char if 0x20 < ord(char) < 0x7F else "?" for char in value[:40])


# ----------------------------------------------------------------------------- token responses


@dataclass(frozen=True)
class TokenSet:
    """A token endpoint answer (RFC 6749 section 5.1); the tokens never appear in ``repr``."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: float | None
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    scope: str | None = None


def parse_token_response(doc: Mapping[str, Any], now: float) -> TokenSet:
    """A ``TokenSet`` from a successful token answer.

    ``ProviderUnavailable`` when the answer is not a JSON object (a proxy's or a load balancer's
    page: nothing says the grant was spent). ``TokenInvalid`` when it is one we cannot use: the
    provider granted the request (a refresh token it rotates is spent), so the answer is final,
    never retried with the same refresh token (a reuse, which providers answer by revoking).
    """
    if not isinstance(doc, Mapping):
        raise ProviderUnavailable("token response is not a JSON object")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenInvalid("token response has no access_token")
    token_type = doc.get("token_type")
    # section 5.1: token_type is case-insensitive; anything but Bearer (e.g. DPoP) we cannot use
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenInvalid("token response token_type is not Bearer")
    return TokenSet(
        access_token=access_token,
        token_type=BEARER,
        expires_at=_expires_at(doc.get("expires_in"), now, access_token),
        refresh_token=_optional_string(doc, "refresh_token"),
        id_token=_optional_string(doc, "id_token"),
        scope=_optional_string(doc, "scope"),
    )


def _expires_at(expires_in: object, now: float, access_token: str) -> float | None:
    if expires_in is None:
        return _own_expiry(access_token, now)
    # some providers send the number as a string ("3600")
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in)
        except ValueError as e:
            raise TokenInvalid("token response expires_in is not a number") from e
    if not _is_number(expires_in):
        raise TokenInvalid("token response expires_in is not a number")
    assert isinstance(expires_in, int | float)
    return now + max(0.0, float(expires_in))


def _own_expiry(access_token: str, now: float) -> float | None:
    """When a JWT access token sent without ``expires_in`` ends; None for an opaque token.

    RFC 6749 section 5.1 makes ``expires_in`` only RECOMMENDED ("the expiration time via other
    means"): a JWT's ``exp`` is that means, the very time the APIs it is forwarded to enforce.
    Read unverified, since it only times the refresh; never before ``now``.
    """
    try:
        _header(access_token)
        claims = _json_object(_segment(access_token.split(".")[1]))
    except TokenInvalid:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or not _is_number(exp):
        return None
    return max(now, float(exp))


def _optional_string(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TokenInvalid(f"token response {name} is not a string")
    return value


# ----------------------------------------------------------------------------- client assertions


@dataclass(frozen=True)
class AssertionKey:
    """The client's private key for ``private_key_jwt`` and the alg it signs with."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    algorithm: str


def load_assertion_key(pem: bytes) -> AssertionKey:
    """An RSA (>= 2048 bits, RS256) or P-256 (ES256) private key from PEM; ``ConfigError`` otherwise."""
    problem = "provider.private_key_file: "
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError([problem + "not an unencrypted PEM private key"]) from e
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise ConfigError([problem + f"RSA key must have at least {RSA_MIN_BITS} bits"])
        return AssertionKey(key, "RS256")
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return AssertionKey(key, "ES256")
    raise ConfigError([problem + "must be an RSA or EC P-256 private key"])


def build_client_assertion(
    key: AssertionKey, *, client_id: str, audience: str, now: float, jti: str | None = None
) -> str:
    """A signed ``client_assertion`` (RFC 7523 section 3) valid for 60 seconds."""
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        # a fresh jti per assertion: providers may refuse a replayed one (RFC 7523 section 3)
        "jti": jti or secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + int(CLIENT_ASSERTION_LIFETIME),
    }
    return jwt.encode(claims, key.key, algorithm=key.algorithm)
