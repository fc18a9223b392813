"""Provider metadata: OpenID Connect Discovery 1.0 section 3, validated per section 4.3.

- The ``issuer`` in the document must equal the configured issuer exactly (section 4.3): a
  document that names another issuer could be an attacker's (mix-up attacks, RFC 9700 section
  4.4), and every ID token's ``iss`` is later compared with this value.
- ``authorization_endpoint``, ``token_endpoint`` and ``jwks_uri`` are required (section 3; the
  token endpoint is optional there only for implicit-only providers, which we cannot use).
- Every endpoint we may send a browser or a credential to must be an absolute ``https`` URL
  without fragment (section 3: "URL using the https scheme"); ``http`` is tolerated only when the
  configured issuer itself is ``http`` (SPEC section 2: development and in-cluster providers).
- Optional endpoints: UserInfo (Core section 5.3), RP-Initiated Logout 1.0 ``end_session_endpoint``,
  RFC 7009 ``revocation_endpoint`` (listed in RFC 8414 section 2), RFC 7662 introspection.

Pure: takes the parsed JSON document, returns a frozen value or raises ``ProviderUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from authproxy.errors import ProviderUnavailable

WELL_KNOWN_PATH: Final = "/.well-known/openid-configuration"
REQUIRED_ENDPOINTS: Final = ("authorization_endpoint", "token_endpoint", "jwks_uri")
OPTIONAL_ENDPOINTS: Final = (
    "userinfo_endpoint",
    "end_session_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
)
STRING_LISTS: Final = (
    "id_token_signing_alg_values_supported",
    "code_challenge_methods_supported",
    "token_endpoint_auth_methods_supported",
    "response_types_supported",
    "scopes_supported",
    "claims_supported",
)


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of a discovery document authproxy uses; URLs already validated."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    response_types_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    claims_supported: tuple[str, ...] = ()
    backchannel_logout_supported: bool = False
    backchannel_logout_session_supported: bool = False
    # RFC 9207: the provider adds ``iss`` to authorization responses (mix-up defence)
    authorization_response_iss_parameter_supported: bool = False


def discovery_url(issuer: str) -> str:
    """Where the document of ``issuer`` lives (Discovery section 4: one trailing ``/`` removed)."""
    return issuer.removesuffix("/") + WELL_KNOWN_PATH


def parse_provider_metadata(doc: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
    """Validate a discovery document against the configured issuer; ``ProviderUnavailable`` if unusable."""
    if not isinstance(doc, Mapping):
        raise ProviderUnavailable("discovery document is not a JSON object")
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise ProviderUnavailable("discovery document has no issuer")
    # exact string comparison, no normalisation (section 4.3; a trailing "/" matters)
    if issuer != expected_issuer:
        raise ProviderUnavailable(
            f"discovery issuer {issuer[:200]!r} differs from the configured issuer {expected_issuer!r}"
        )
    allow_http = urlsplit(expected_issuer).scheme == "http"
    endpoints: dict[str, str | None] = {}
    for name in REQUIRED_ENDPOINTS:
        value = doc.get(name)
        if value is None:
            raise ProviderUnavailable(f"discovery document has no {name}")
        endpoints[name] = _endpoint(name, value, allow_http)
    for name in OPTIONAL_ENDPOINTS:
        value = doc.get(name)
        endpoints[name] = None if value is None else _endpoint(name, value, allow_http)
    lists = {name: _string_list(name, doc.get(name)) for name in STRING_LISTS}
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(endpoints["authorization_endpoint"]),
        token_endpoint=str(endpoints["token_endpoint"]),
        jwks_uri=str(endpoints["jwks_uri"]),
        userinfo_endpoint=endpoints["userinfo_endpoint"],
        end_session_endpoint=endpoints["end_session_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        introspection_endpoint=endpoints["introspection_endpoint"],
        id_token_signing_alg_values_supported=lists["id_token_signing_alg_values_supported"],
        code_challenge_methods_supported=lists["code_challenge_methods_supported"],
        token_endpoint_auth_methods_supported=lists["token_endpoint_auth_methods_supported"],
        response_types_supported=lists["response_types_supported"],
        scopes_supported=lists["scopes_supported"],
        claims_supported=lists["claims_supported"],
        backchannel_logout_supported=_flag(doc, "backchannel_logout_supported"),
        backchannel_logout_session_supported=_flag(doc, "backchannel_logout_session_supported"),
        authorization_response_iss_parameter_supported=_flag(doc, "authorization_response_iss_parameter_supported"),
    )


def _endpoint(name: str, value: object, allow_http: bool) -> str:
    if not isinstance(value, str):
        raise ProviderUnavailable(f"discovery {name} is not a string")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError as e:
        raise ProviderUnavailable(f"discovery {name} is not a valid URL") from e
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise ProviderUnavailable(f"discovery {name} must be an absolute {' or '.join(schemes)} URL")
    if not parts.hostname or parts.fragment or parts.username is not None:
        raise ProviderUnavailable(f"discovery {name} must be an absolute URL with a host and no fragment")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        raise ProviderUnavailable(f"discovery {name} contains whitespace or control characters")
    return value


def _string_list(name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProviderUnavailable(f"discovery {name} is not a list of strings")
    return tuple(value)


def _flag(doc: Mapping[str, Any], name: str) -> bool:
    # a provider that writes "true" as a string gets the default: the flags only enable features
    return doc.get(name) is True
