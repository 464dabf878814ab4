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
    # A command is sent once: no ``retry_on_timeout``. A timeout does not mean the command was
    # not run; Redis may only be slow, and a re-sent script then runs twice (a create answers
    # 409 for the session it made, an append without Idempotency-Key is stored twice). The
    # caller gets 503 and retries with its Idempotency-Key. No ``health_check_interval`` either:
    # without retries it cannot repair a connection, and with them redis-py 5 pings from inside
    # ``on_connect`` and reconnects on a ping timeout without end (redis/redis-py#3745), so
    # requests to a Redis that stalls would hang as long as it does. A pooled connection that
    # died meanwhile fails its next command (503) and is replaced. No ``CLIENT SETINFO`` on
    # connect (lib name and version): redis-py 5 connects while holding its pool's lock, so
    # with a stalled Redis each new connection would wait the socket timeout for that reply in
    # turn, and the n-th request would fail only after n timeouts.
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
        "lib_name": None,
        "lib_version": None,
    }
    if settings.redis_cluster:
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_startup_nodes()]
        if nodes:
            return cast(RedisCluster, RedisCluster(startup_nodes=nodes, **common))
        return cast(RedisCluster, RedisCluster.from_url(url, **common))
    return cast(Redis, Redis.from_url(url, **common))


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
        # redis-py raises a class of its own for some error codes and drops the code from the
        # text (OOM, READONLY); an error raised inside a script keeps it in its text.
        text = str(exc)
        if (
            isinstance(exc, rexc.OutOfMemoryError)
            or text.startswith("OOM")
            or "OOM command not allowed" in text
        ):
            raise StoreFull(f"Redis is out of memory while trying to {action}") from exc
        if isinstance(exc, rexc.ReadOnlyError) or text.startswith(
            ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")
        ):
            raise StoreUnavailable(f"Redis cannot {action} right now: {text}") from exc
        raise
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable while trying to {action}") from exc
    except rexc.WatchError as exc:
        # redis-py raises it when the connection drops during WATCH (arq's enqueue watches the
        # job key); a watched key that changed is handled inside arq and never reaches here.
        raise StoreUnavailable(f"Redis connection dropped while trying to {action}") from exc
    except rexc.RedisClusterException as exc:
        raise StoreUnavailable(f"Redis Cluster cannot {action}: {exc}") from exc
