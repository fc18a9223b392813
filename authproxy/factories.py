"""Clients built from configuration: the one place that maps config sections to constructors."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from authproxy.config import Config, ProviderConfig, TLSConfig
from authproxy.errors import ConfigError
from authproxy.identity_jwt import IdentitySigner
from authproxy.oidc.client import ProviderClient, provider_ssl_context
from authproxy.oidc.tokens import load_assertion_key


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


def material_problems(config: Config) -> list[str]:
    """The keys and certificates ``config`` names, loaded as serving will load them: a problem each.

    The schema only knows the files are readable; a file that is not the key or bundle it
    should be is found here, so ``check`` and ``run`` refuse it (exit 2) before anything starts.
    """
    problems: list[str] = []

    def attempt(load: Callable[[], object]) -> None:
        try:
            load()
        except ConfigError as e:
            problems.extend(e.problems)

    provider = config.provider
    if provider is not None and provider.private_key_file:
        attempt(lambda: load_assertion_key(Path(provider.private_key_file or "").read_bytes()))
    if provider is not None and provider.ca_file:
        attempt(lambda: provider_ssl_context(provider.ca_file))
    if config.identity_jwt.signing_key_file:
        attempt(lambda: IdentitySigner.from_config(config.identity_jwt, issuer="check"))
    tls = config.server.tls
    if tls is not None:
        attempt(lambda: server_ssl_context(tls))
    return problems


def _no_passphrase() -> str:
    """Called by OpenSSL only for an encrypted key: refuse it rather than prompt for its passphrase."""
    raise ConfigError(["server.tls.key_file: the key is encrypted; give authproxy an unencrypted PEM key"])


def server_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The listener's TLS context from ``server.tls``; ``ConfigError`` when the files are not a chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # without a password callback OpenSSL asks for a passphrase on the terminal: start-up
        # would wait for someone to type it (or fail with "Invalid argument" without a terminal)
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError([f"server.tls: cannot load the certificate or key: {e}"]) from e
    return context
