"""Builds the long-lived objects of one process from settings: the data Redis client, the session
store and the tenant registry. API, workers and CLI all start here, so they agree on everything."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from service.config import Settings
from service.connections import RedisClient, close_redis, create_data_redis
from service.eviction import EvictionCheck
from service.store import Store
from service.tenants import TenantRegistry


@dataclass
class Runtime:
    settings: Settings
    redis: RedisClient
    store: Store
    tenants: TenantRegistry
    eviction: EvictionCheck

    async def close(self) -> None:
        await self.store.hub.close()
        await close_redis(self.redis)


def build_runtime(settings: Settings, redis: RedisClient | None = None) -> Runtime:
    client = redis if redis is not None else create_data_redis(settings)
    store = Store(
        client,
        prefix=settings.key_prefix,
        index_shards=settings.index_shards,
        default_ttl=settings.default_ttl_seconds,
        max_event_bytes=settings.max_message_bytes,
        max_sessions=settings.max_sessions_per_tenant,
        max_pending_turns=settings.max_pending_turns,
        live_window_seconds=settings.live_window_seconds,
        live_window_events=settings.live_window_events,
        live_shards=settings.live_shards,
    )
    return Runtime(
        settings,
        client,
        store,
        TenantRegistry(client, settings.key_prefix),
        EvictionCheck(settings.allow_eviction),
    )


def settle_heap() -> None:
    """Collect once, then freeze what a server process holds after start-up (modules, the app,
    settings), so the garbage collector never walks it again. A full collection of a started
    API process took about 50 ms, every request waiting on it then; that was the p99 of a
    send under load. Called by the process entry points only (not by ``create_app``): tests
    build many apps in one process."""
    gc.collect()
    gc.freeze()
