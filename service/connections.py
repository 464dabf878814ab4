"""Redis connections for data and queue, and the one place redis-py errors become ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from service.config import Settings
from service.errors import StoreFull, StoreUnavailable

RedisClient = Redis | RedisCluster


def create_data_redis(settings: Settings, url: str | None = None) -> RedisClient:
    """The data client: a single Redis (``redis_url``) or a Cluster (``redis_cluster``)."""
    url = url or settings.redis_url
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
