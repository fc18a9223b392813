"""Build the configured session store (SPEC section 5: memory, or Redis standalone/Sentinel/Cluster)."""

from __future__ import annotations

from authproxy.config import SessionConfig
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.store import SessionStore


def create_store(config: SessionConfig) -> SessionStore:
    if config.store == "memory":
        return MemoryStore()
    redis = config.redis
    return RedisStore.from_settings(
        url=redis.url,
        sentinel_master=redis.sentinel.master_name if redis.sentinel else None,
        sentinel_nodes=list(redis.sentinel.nodes) if redis.sentinel else None,
        cluster=redis.cluster,
        key_prefix=redis.key_prefix,
        timeout=redis.timeout,
    )
