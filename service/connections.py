"""Redis connections for data and queue, and the one place redis-py errors become ours."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from redis import exceptions as rexc
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel
from redis.connection import HiredisRespSerializer

from service.config import Settings
from service.errors import StoreFull, StoreUnavailable

RedisClient = Redis | RedisCluster


def create_data_redis(settings: Settings, url: str | None = None) -> RedisClient:
    """The data client: a single Redis (``redis_url``), the master behind Sentinels
    (``redis_sentinels``, when no URL is given) or a Cluster (``redis_cluster``)."""
    url = url or settings.redis_url
    if settings.redis_sentinels and url is None:
        sentinel = Sentinel(settings.sentinel_nodes(), socket_timeout=5.0)  # type: ignore[no-untyped-call]
        return cast(
            Redis,
            sentinel.master_for(
                settings.redis_sentinel_master,
                decode_responses=True,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
                password=settings.password_for(None),
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
    if (password := settings.password_for(url)) is not None:
        # a password of its own, so that it needs no encoding: one the URL carries wins
        common["password"] = password
    if settings.redis_cluster:
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_startup_nodes()]
        if nodes:
            return cast(RedisCluster, RedisCluster(startup_nodes=nodes, **common))
        return cast(RedisCluster, RedisCluster.from_url(url, **common))
    pool = ConnectionPool.from_url(url, **common)
    pool.connection_class = _LEAN.get(pool.connection_class, pool.connection_class)
    return Redis.from_pool(pool)


async def use_lean_connections(client: Redis) -> None:
    """Make a client's pool open ``_LeanIO`` connections from now on (for a client made
    elsewhere, such as arq's queue pool); the connections it holds are closed."""
    pool = client.connection_pool
    lean = _LEAN.get(pool.connection_class)
    if lean is None:  # a Sentinel-managed pool, say: left as it is
        return
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]
    pool.connection_class = lean


class _LeanIO(AbstractConnection):
    """The data client's connection: as redis-py's, with cheaper ways to send a command.

    redis-py 5 packs every command in Python and, with a socket timeout set, sends it inside
    ``asyncio.wait_for``, which on Python 3.11 starts a task per command. Here hiredis packs
    it, and only a write that has to wait for the socket is timed (with ``asyncio.timeout``,
    no task). Before handing out a pooled connection, redis-py checks that it holds no unread
    data with a zero-timeout read, a trip through the event loop per command; here the check
    looks at what the event loop has already received. What fails, and how, is redis-py's."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer: Any = self._writer
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size() == 0:
                await writer.drain()  # all sent already: returns at once
            else:
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise rexc.TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            code, text = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
            raise rexc.ConnectionError(f"Error {code} while writing to socket. {text}.") from e
        except BaseException:
            await self.disconnect(nowait=True)
            raise

    async def can_read_destructive(self) -> bool:
        """Whether this idle connection holds unread data or was closed (the pool then
        reconnects it), as far as the event loop has received: data or an end of stream it has
        not yet seen fails the next read instead (the command's request gets a 503), where
        redis-py would wait one loop iteration on every command to look."""
        stream: Any = self._reader
        reader: Any = getattr(self._parser, "_reader", None)  # hiredis' (else redis-py's own)
        if stream is None or not hasattr(reader, "has_data") or not hasattr(stream, "_buffer"):
            return bool(await super().can_read_destructive())  # type: ignore[no-untyped-call]
        if not getattr(self._parser, "_connected", False):
            raise rexc.ConnectionError("Connection closed by server.")
        return bool(stream.at_eof() or stream.exception() or stream._buffer or reader.has_data())


class _LeanConnection(_LeanIO, Connection):
    pass


class _LeanSSLConnection(_LeanIO, SSLConnection):
    pass


class _LeanUnixConnection(_LeanIO, UnixDomainSocketConnection):
    pass


_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _LeanConnection,
    SSLConnection: _LeanSSLConnection,
    UnixDomainSocketConnection: _LeanUnixConnection,
}


async def close_redis(client: Any) -> None:
    """Close a client and, for one found through Sentinel, its connections to the Sentinels
    (redis-py keeps those apart from the master's pool)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", []):
        await sentinel.aclose()


class LuaScript:
    """A Lua script run by its SHA1 (EVALSHA), loaded into Redis when Redis does not know it.

    What redis-py's ``register_script`` does, minus its per-call ``isinstance`` check against
    its pipeline class, which goes through ``typing.Protocol`` machinery and was a visible
    share of every request (three scripts run per send)."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(
        self, keys: Sequence[str] = (), args: Sequence[str | int | float | bytes] = ()
    ) -> Any:
        try:
            return await self._client.evalsha(self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            # a Redis restarted without its script cache, or a new Cluster node
            await self._client.script_load(self.text)
            return await self._client.evalsha(self.sha, len(keys), *keys, *args)


async def require_primary(client: Any, which: str) -> None:
    """``StoreUnavailable`` unless ``client`` talks to a primary (``ROLE``): a replica answers
    reads and PING but refuses every write, as a static URL can name a node a failover demoted.
    ``which`` names the Redis in the message. A server that will not tell (``ROLE`` refused by
    an ACL without ``@dangerous``, or a server without it) is taken as a primary."""
    try:
        with store_errors(f"tell the {which} Redis's role"):
            reply = await client.execute_command("ROLE")
    except rexc.ResponseError as exc:
        text = str(exc)
        if isinstance(exc, rexc.NoPermissionError) or "unknown command" in text.lower():
            return
        raise
    role = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if role != "master":
        raise StoreUnavailable(
            f"the {which} Redis is a read-only replica (ROLE {role}): point the service at "
            "the primary, or at Sentinel"
        )


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
