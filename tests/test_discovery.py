"""Provider metadata (OpenID Connect Discovery 1.0 sections 3 and 4.3)."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy.errors import ProviderUnavailable
from authproxy.oidc.discovery import ProviderMetadata, discovery_url, parse_provider_metadata

ISSUER = "https://idp.example.com/realms/main"


def document(base: str = ISSUER, **overrides: Any) -> dict[str, Any]:
    """A valid document for the issuer ``base``; an override of None removes a member."""
    issuer = base
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/protocol/openid-connect/auth",
        "token_endpoint": issuer + "/protocol/openid-connect/token",
        "jwks_uri": issuer + "/protocol/openid-connect/certs",
        "userinfo_endpoint": issuer + "/protocol/openid-connect/userinfo",
        "end_session_endpoint": issuer + "/protocol/openid-connect/logout",
        "revocation_endpoint": issuer + "/protocol/openid-connect/revoke",
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "response_types_supported": ["code"],
        "backchannel_logout_supported": True,
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not None}


def test_valid_document_is_parsed() -> None:
    metadata = parse_provider_metadata(document(), ISSUER)
    assert metadata == ProviderMetadata(
        issuer=ISSUER,
        authorization_endpoint=ISSUER + "/protocol/openid-connect/auth",
        token_endpoint=ISSUER + "/protocol/openid-connect/token",
        jwks_uri=ISSUER + "/protocol/openid-connect/certs",
        userinfo_endpoint=ISSUER + "/protocol/openid-connect/userinfo",
        end_session_endpoint=ISSUER + "/protocol/openid-connect/logout",
        revocation_endpoint=ISSUER + "/protocol/openid-connect/revoke",
        id_token_signing_alg_values_supported=("RS256", "ES256"),
        code_challenge_methods_supported=("plain", "S256"),
        token_endpoint_auth_methods_supported=("client_secret_basic", "private_key_jwt"),
        response_types_supported=("code",),
        backchannel_logout_supported=True,
    )


def test_optional_endpoints_may_be_absent() -> None:
    metadata = parse_provider_metadata(
        document(userinfo_endpoint=None, end_session_endpoint=None, revocation_endpoint=None), ISSUER
    )
    assert (metadata.userinfo_endpoint, metadata.end_session_endpoint, metadata.revocation_endpoint) == (None,) * 3
    assert metadata.backchannel_logout_supported is True


def test_http_endpoints_are_accepted_for_an_http_issuer() -> None:
    issuer = "http://keycloak.auth.svc:8080/realms/main"
    assert parse_provider_metadata(document(issuer), issuer).token_endpoint.startswith("http://")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            document(issuer="https://evil.example.com"), "differs from the configured issuer", id="other-issuer"
        ),
        pytest.param(document(issuer=ISSUER + "/"), "differs from the configured issuer", id="issuer-trailing-slash"),
        pytest.param(
            document(issuer="HTTPS://IDP.EXAMPLE.COM/realms/main"),
            "differs from the configured issuer",
            id="issuer-case",
        ),
        pytest.param(document(issuer=None), "no issuer", id="missing-issuer"),
        pytest.param(document(authorization_endpoint=None), "no authorization_endpoint", id="missing-authorization"),
        pytest.param(document(token_endpoint=None), "no token_endpoint", id="missing-token-endpoint"),
        pytest.param(document(jwks_uri=None), "no jwks_uri", id="missing-jwks-uri"),
        pytest.param(
            document(token_endpoint="http://idp.example.com/token"),
            "absolute https URL",
            id="http-endpoint-https-issuer",
        ),
        pytest.param(document(jwks_uri="/certs"), "absolute https URL", id="relative-jwks-uri"),
        pytest.param(
            document(revocation_endpoint="ftp://idp.example.com/revoke"),
            "absolute https URL",
            id="bad-optional-endpoint",
        ),
        pytest.param(document(token_endpoint="https:///token"), "with a host", id="no-host"),
        pytest.param(document(token_endpoint="https://idp.example.com/token#x"), "no fragment", id="fragment"),
        pytest.param(document(token_endpoint="https://user@idp.example.com/token"), "with a host", id="userinfo"),
        pytest.param(document(token_endpoint="https://idp.example.com:99999/token"), "not a valid URL", id="bad-port"),
        pytest.param(
            document(token_endpoint="https://idp.example.com/to ken"), "whitespace or control", id="space-in-url"
        ),
        pytest.param(document(token_endpoint=["https://idp.example.com/token"]), "not a string", id="not-a-string"),
        pytest.param(
            document(id_token_signing_alg_values_supported="RS256"), "not a list of strings", id="alg-list-not-a-list"
        ),
    ],
)
def test_unusable_document_is_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderUnavailable, match=message):
        parse_provider_metadata(doc, ISSUER)


def test_non_object_document_is_refused() -> None:
    with pytest.raises(ProviderUnavailable, match="not a JSON object"):
        parse_provider_metadata(["issuer"], ISSUER)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        pytest.param("https://idp.example.com", "https://idp.example.com/.well-known/openid-configuration", id="host"),
        pytest.param(
            "https://idp.example.com/realms/main",
            "https://idp.example.com/realms/main/.well-known/openid-configuration",
            id="path",
        ),
        pytest.param(
            "https://tenant.example.com/",
            "https://tenant.example.com/.well-known/openid-configuration",
            id="trailing-slash",
        ),
    ],
)
def test_discovery_url_appends_the_well_known_path(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url
