"""Redis connections for data and queue, and the one place redis-py errors become ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from service.config import Settings
from service.errors import StoreFull, StoreUnavailable

RedisClient = Redis | RedisCluster


def create_data_redis(settings: Settings, url: str | None = None) -> RedisClient:
    """The data client: a single Redis (``redis_url``), the master behind Sentinels
    (``redis_sentinels``, when no URL is given) or a Cluster (``redis_cluster``)."""
    url = url or settings.redis_url
    if settings.redis_sentinels and url is None:
        password = settings.redis_password
        sentinel = Sentinel(settings.sentinel_nodes(), socket_timeout=5.0)  # type: ignore[no-untyped-call]
        return cast(
            Redis,
            sentinel.master_for(
                settings.redis_sentinel_master,
                decode_responses=True,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
                password=password.get_secret_value() if password else None,
            ),
        )
    if url is None:
        raise ValueError("no Redis URL: set SESSIONS_REDIS_URL or start the embedded Redis")
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }
    if settings.redis_cluster:
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_startup_nodes()]
        if nodes:
            return cast(RedisCluster, RedisCluster(startup_nodes=nodes, **common))
        return cast(RedisCluster, RedisCluster.from_url(url, **common))
    return cast(Redis, Redis.from_url(url, retry_on_timeout=True, **common))


async def close_redis(client: Any) -> None:
    """Close a client and, for one found through Sentinel, its connections to the Sentinels
    (redis-py keeps those apart from the master's pool)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", []):
        await sentinel.aclose()


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn redis-py failures into ``StoreUnavailable``/``StoreFull`` (HTTP 503/507)."""
    try:
        yield
    except rexc.ResponseError as exc:
        text = str(exc)
        if text.startswith("OOM") or "OOM command not allowed" in text:
            raise StoreFull(f"Redis is out of memory while trying to {action}") from exc
        if text.startswith(("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")):
            raise StoreUnavailable(f"Redis cannot {action} right now: {text}") from exc
        raise
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable while trying to {action}") from exc
    except rexc.RedisClusterException as exc:
        raise StoreUnavailable(f"Redis Cluster cannot {action}: {exc}") from exc
