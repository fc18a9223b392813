"""Build the configured session store (SPEC section 5: memory, or Redis standalone/Sentinel/Cluster)."""

from __future__ import annotations

from authproxy.config import SessionConfig
from authproxy.sessions.cache import SessionCache
from authproxy.sessions.invalidation import InvalidationFeed, LocalFeed, PublishOnlyFeed, RedisFeed, channel_name
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


def create_cache(config: SessionConfig, store: SessionStore) -> tuple[SessionCache, InvalidationFeed] | None:
    """The session cache and the feed that keeps it in step, unless ``session.cache.enabled`` is false."""
    if not config.cache.enabled:
        return None
    cache = SessionCache(max_age=config.cache.max_age, max_entries=config.cache.max_entries)
    if isinstance(store, RedisStore):
        feed: InvalidationFeed = RedisFeed(
            cache,
            channel=channel_name(config.redis.key_prefix),
            endpoint=store.subscriber_endpoint,
            publish=store.publish,
        )
    else:
        feed = LocalFeed(cache)
    return cache, feed


def create_publisher(config: SessionConfig, store: SessionStore) -> InvalidationFeed | None:
    """Without a cache of its own, a process on Redis still publishes its invalidations."""
    if not isinstance(store, RedisStore):
        return None
    return PublishOnlyFeed(channel=channel_name(config.redis.key_prefix), publish=store.publish)
