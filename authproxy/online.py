"""``authproxy check --online``: the network checks that plain validation never does."""

from __future__ import annotations

from authproxy.config import Config
from authproxy.errors import AuthproxyError
from authproxy.factories import create_provider_client
from authproxy.sessions.factory import create_store


async def check_online(config: Config, private_key_pem: bytes | None = None) -> list[str]:
    """One line per failure: provider discovery and JWKS, session store ping."""
    failures: list[str] = []
    if config.provider is not None:
        p = config.provider
        client = create_provider_client(p, private_key_pem)
        await client.start()
        try:
            await client.load_metadata()
            await client.load_keys()
        except AuthproxyError as e:
            failures.append(f"provider.issuer: {e}")
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
