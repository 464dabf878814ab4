"""The data client's connections (``service.connections._LeanIO``) against a real redis-server:
the same bytes on the wire as redis-py's, large writes, connections the server closed, scripts
Redis forgot, and the URL schemes that pick a connection class."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from arq.connections import create_pool
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError

from service.config import Settings
from service.connections import LuaScript, close_redis, create_data_redis, use_lean_connections
from service.embedded import RedisProcess
from workers.queue import queue_redis_settings

ARGS = [
    ("SET", "k", "value"),
    ("EVALSHA", "f" * 40, 2, "{t/s}:meta", "{t/s}:events", 10_000, "", "enqueue", "x" * 300),
    ("SET", "ünïcödé", "日本語 ✓"),
    ("SET", "n", 2**62, "PX", 1.5),
    ("SET", "b", b"\x00\xff raw"),
    ("SCRIPT LOAD", "return 1"),
]


@pytest.fixture
async def data_client(redis_server_url: str) -> AsyncIterator[Redis]:
    client = create_data_redis(Settings(redis_url=redis_server_url))
    assert isinstance(client, Redis)
    yield client
    await close_redis(client)


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    lean = create_data_redis(Settings(redis_url="redis://127.0.0.1:1"))
    assert isinstance(lean, Redis)
    ours = lean.connection_pool.make_connection()
    plain = Connection()
    assert type(ours) is not Connection and isinstance(ours, Connection)
    for args in ARGS:
        assert b"".join(ours.pack_command(*args)) == b"".join(plain.pack_command(*args)), args


def test_unix_socket_urls_keep_their_connection_class() -> None:
    lean = create_data_redis(Settings(redis_url="unix:///tmp/redis.sock"))
    assert isinstance(lean, Redis)
    assert issubclass(lean.connection_pool.connection_class, UnixDomainSocketConnection)


async def test_large_writes_and_replies_round_trip(data_client: Redis) -> None:
    """A value far over the socket buffer: the write waits for the socket (the timed path)."""
    value = "v" * (8 * 1024 * 1024)
    assert await data_client.set("test-conn:big", value)
    assert await data_client.get("test-conn:big") == value
    await data_client.delete("test-conn:big")


async def test_a_connection_closed_by_the_server_is_replaced(
    data_client: Redis, real_redis: Redis
) -> None:
    await data_client.client_setname("lean-io-test")
    assert await data_client.ping()
    clients = await real_redis.client_list()
    mine = [c["id"] for c in clients if c["name"] == "lean-io-test"]
    assert len(mine) == 1
    await real_redis.execute_command("CLIENT KILL ID", mine[0])
    await asyncio.sleep(0.1)  # the event loop sees the end of stream
    assert await data_client.ping()  # the pool found the pooled connection closed
    names = {c["name"] for c in await real_redis.client_list()}
    assert "lean-io-test" not in names  # a new connection, not the killed one


async def test_unread_data_on_an_idle_connection_is_not_taken_for_a_reply(
    data_client: Redis,
) -> None:
    """A reply nobody read (a command whose caller gave up) must not answer the next command."""
    pool = data_client.connection_pool
    conn = await pool.get_connection()
    await conn.send_command("SET", "test-conn:stale", "stale")
    await asyncio.sleep(0.1)  # the +OK arrives and waits, unread
    await pool.release(conn)
    assert await data_client.get("test-conn:missing") is None  # not the stale +OK
    await data_client.delete("test-conn:stale")


async def test_a_forgotten_script_is_loaded_again(data_client: Redis) -> None:
    script = LuaScript(data_client, "return {KEYS[1], ARGV[1]}")
    assert await script(keys=["k"], args=["a"]) == ["k", "a"]
    await data_client.script_flush()
    assert await script(keys=["k2"], args=[2]) == ["k2", "2"]


async def test_arq_pools_are_switched_to_lean_connections(redis_server_url: str) -> None:
    client = Redis.from_url(redis_server_url)
    await client.ping()
    await use_lean_connections(client)
    assert client.connection_pool.connection_class is not Connection
    assert await client.ping()
    await client.aclose()


async def test_a_password_of_its_own_needs_no_url_encoding(tmp_path: Path) -> None:
    """``SESSIONS_REDIS_PASSWORD`` beside a URL without one: a managed Redis's password (with
    / + = # @ : %) reaches a real server as it is, from the data client and the queue's."""
    password = "ab/c+d==#x@y:z%41?"
    server = RedisProcess(tmp_path, persistent=False).start()
    try:
        admin = Redis.from_url(server.url)
        await admin.config_set("requirepass", password)
        await admin.aclose()
        settings = Settings(redis_url=server.url, redis_password=password)
        client = create_data_redis(settings)
        try:
            assert await client.ping()
        finally:
            await close_redis(client)
        queue = await create_pool(queue_redis_settings(settings))
        try:
            assert await queue.ping()
        finally:
            await queue.aclose()
        # percent-encoded in a URL of the queue's own (another database), decoded by both
        encoded = server.url.replace("//", f"//:{quote(password, safe='')}@").removesuffix("/0")
        queue = await create_pool(queue_redis_settings(Settings(queue_redis_url=encoded + "/1")))
        try:
            assert await queue.ping()
        finally:
            await queue.aclose()
        client = create_data_redis(Settings(redis_url=encoded + "/0"))
        try:
            assert await client.ping()
        finally:
            await close_redis(client)
        # a password the URL carries wins (no other is sent)
        wrong = Settings(redis_url=server.url.replace("//", "//:nope@"), redis_password=password)
        client = create_data_redis(wrong)
        try:
            with pytest.raises(AuthenticationError):
                await client.ping()
        finally:
            await close_redis(client)
    finally:
        server.stop()
