"""``authproxy check --online``: the network checks that plain validation never does."""

from __future__ import annotations

from authproxy.config import Config
from authproxy.errors import AuthproxyError
from authproxy.oidc.client import ProviderClient
from authproxy.sessions.factory import create_store


async def check_online(config: Config, private_key_pem: bytes | None = None) -> list[str]:
    """One line per failure: provider discovery and JWKS, session store ping."""
    failures: list[str] = []
    if config.provider is not None:
        p = config.provider
        client = ProviderClient(
            issuer=p.issuer,
            client_id=p.client_id,
            client_secret=p.client_secret,
            auth_method=p.client_auth_method,
            private_key_pem=private_key_pem,
            allowed_algorithms=p.allowed_algorithms,
            clock_skew=p.clock_skew,
            timeout=p.timeout,
            ca_file=p.ca_file,
        )
        await client.start()
        try:
            await client.load_metadata()
            await client.load_keys()
        except AuthproxyError as e:
            failures.append(f"provider.issuer: discovery failed: {e}")
        finally:
            await client.close()
        store = create_store(config.session)
        try:
            await store.ping()
        except AuthproxyError as e:
            failures.append(f"session.store: {config.session.store} store does not answer: {e}")
        finally:
            await store.close()
    return failures
