"""Clients built from configuration: the one place that maps config sections to constructors."""

from __future__ import annotations

from pathlib import Path

from authproxy.config import ProviderConfig
from authproxy.oidc.client import ProviderClient


def read_private_key(config: ProviderConfig) -> bytes | None:
    """The private_key_jwt key file's content (validated as readable at config time)."""
    return Path(config.private_key_file).read_bytes() if config.private_key_file else None


def create_provider_client(
    config: ProviderConfig, private_key_pem: bytes | None, *, refresh_before_expiry: float | None = None
) -> ProviderClient:
    """The provider client; with ``refresh_before_expiry`` it warns once when tokens are too short-lived."""
    return ProviderClient(
        issuer=config.issuer,
        client_id=config.client_id,
        client_secret=config.client_secret,
        auth_method=config.client_auth_method,
        private_key_pem=private_key_pem,
        allowed_algorithms=config.allowed_algorithms,
        clock_skew=config.clock_skew,
        timeout=config.timeout,
        ca_file=config.ca_file,
        refresh_before_expiry=refresh_before_expiry,
    )
