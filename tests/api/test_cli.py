"""``sessionctl tenants`` and ``sessionctl serve``, through their own parsers (and a subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.cli import serve, tenants
from service.tenants import digest

PREFIX = "clit"
RUN_TENANTS = (
    "import argparse, sys\n"
    "from service.cli import tenants\n"
    "p = argparse.ArgumentParser(prog='sessionctl')\n"
    "tenants.register(p.add_subparsers(dest='command', required=True))\n"
    "args = p.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sessionctl")
    sub = p.add_subparsers(dest="command", required=True)
    serve.register(sub)
    tenants.register(sub)
    return p


def sessionctl(*argv: str) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def env(redis_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    client.flushall()
    monkeypatch.setenv("SESSIONS_REDIS_URL", redis_server_url)
    monkeypatch.setenv("SESSIONS_KEY_PREFIX", PREFIX)
    try:
        yield client
    finally:
        client.close()


def stored(client: redis.Redis, tenant: str) -> dict[str, object]:
    raw = client.hget(f"{PREFIX}:_tenants:{{admin}}:records", tenant)
    assert isinstance(raw, str)
    data: dict[str, object] = json.loads(raw)
    return data


def test_create_prints_the_key_alone_on_the_last_line(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code = sessionctl(
        "tenants", "create", "acme", "--name", "Acme", "--max-sessions", "10", "--rate-limit", "2.5"
    )
    out, err = capsys.readouterr()
    assert code == 0
    key = out.splitlines()[-1]
    assert key == out.strip() and key.startswith("sk_acme_")
    assert "shown once" in err
    record = stored(env, "acme")
    assert record["key_digest"] == digest(key)
    assert record["name"] == "Acme"
    assert record["limits"] == {
        "max_sessions": 10,
        "max_message_bytes": None,
        "rate_limit_per_second": 2.5,
    }

    assert sessionctl("tenants", "create", "acme") == 1
    assert "already exists" in capsys.readouterr().err


def test_create_with_context_windows(env: redis.Redis) -> None:
    argv = ["--context-window", "gpt-4o=128000", "--context-window", "llama3=8192"]
    assert sessionctl("tenants", "create", "acme", *argv) == 0
    assert stored(env, "acme")["context_windows"] == {"gpt-4o": 128000, "llama3": 8192}


def test_create_json(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    assert sessionctl("tenants", "create", "globex", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"tenant", "api_key"}
    assert doc["tenant"]["id"] == "globex" and "key_digest" not in doc["tenant"]
    assert stored(env, "globex")["key_digest"] == digest(doc["api_key"])


def test_list_show_disable_enable_rotate(
    env: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    sessionctl("tenants", "create", "acme")
    sessionctl("tenants", "create", "globex")
    first_key = capsys.readouterr().out.splitlines()[0]

    assert sessionctl("tenants", "list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["TENANT", "NAME", "STATE", "CREATED", "KEY"]
    assert "acme" in out and "globex" in out
    assert sessionctl("tenants", "list", "--json") == 0
    assert [t["id"] for t in json.loads(capsys.readouterr().out)] == ["acme", "globex"]

    assert sessionctl("tenants", "show", "acme") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "acme" and "key_digest" not in shown

    assert sessionctl("tenants", "disable", "acme") == 0
    assert stored(env, "acme")["disabled"] is True
    assert sessionctl("tenants", "enable", "acme") == 0
    assert stored(env, "acme")["disabled"] is False
    capsys.readouterr()

    assert sessionctl("tenants", "rotate-key", "acme") == 0
    new_key = capsys.readouterr().out.splitlines()[-1]
    assert new_key.startswith("sk_acme_") and new_key != first_key
    assert stored(env, "acme")["key_digest"] == digest(new_key)


def test_failures_and_usage(env: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("show", "disable", "enable", "rotate-key"):
        assert sessionctl("tenants", action, "nobody") == 1
        err = capsys.readouterr().err
        assert err.startswith(f"sessionctl tenants {action}: error:") and "nobody" in err
    for argv in (
        ["tenants", "create", "Bad_Name"],
        ["tenants", "create", "ok", "--max-sessions", "0"],
        ["tenants", "create", "ok", "--rate-limit", "-1"],
        ["tenants", "create", "ok", "--context-window", "gpt-4o=100"],
        ["tenants", "create", "ok", "--context-window", "gpt-4o"],
        ["tenants"],
    ):
        with pytest.raises(SystemExit) as exc:
            sessionctl(*argv)
        assert exc.value.code == 2


def test_missing_redis_url_is_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SESSIONS_REDIS_URL", raising=False)
    assert sessionctl("tenants", "list") == 2
    assert "SESSIONS_REDIS_URL" in capsys.readouterr().err
    assert sessionctl("serve") == 2


def test_unreachable_redis_is_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.embedded import free_port

    monkeypatch.setenv("SESSIONS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert sessionctl("tenants", "list") == 1
    assert "unreachable" in capsys.readouterr().err


def test_subprocess_key_is_the_last_line(env: redis.Redis, redis_server_url: str) -> None:
    root = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "SESSIONS_REDIS_URL": redis_server_url, "SESSIONS_KEY_PREFIX": PREFIX}
    done = subprocess.run(
        [sys.executable, "-c", RUN_TENANTS, "tenants", "create", "initech"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = done.stdout.splitlines()[-1]
    assert key.startswith("sk_initech_") and " " not in key
    assert stored(env, "initech")["key_digest"] == digest(key)
    again = subprocess.run(
        [sys.executable, "-c", RUN_TENANTS, "tenants", "create", "initech", "--json"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 1 and "already exists" in again.stderr and again.stdout == ""


def test_serve_options() -> None:
    args = parser().parse_args(["serve", "--host", "127.0.0.1", "--port", "9000", "--workers", "3"])
    options = serve.uvicorn_options(args)
    assert options["factory"] is True and options["workers"] == 3 and options["port"] == 9000
    assert serve.APP_FACTORY == "service.api.main:app"
    defaults = parser().parse_args(["serve"])
    assert (defaults.host, defaults.port, defaults.workers) == ("0.0.0.0", 8000, 1)
    for bad in (["--port", "0"], ["--port", "x"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            parser().parse_args(["serve", *bad])
