"""The operator commands: exit codes, JSON output, sessions delete, stats, and cleanup killed
midway (a subprocess) then run again."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.errors import Conflict
from service.export import read_export
from service.runtime import build_runtime
from service.store import TenantStore
from tests.cleanup.conftest import cli, cli_command, lifecycle, listing, run_async, seed


async def _seed_state(url: str, tenant: str, **kwargs: Any) -> list[str]:
    rt = build_runtime(Settings(redis_url=url, key_prefix="ct"))
    try:
        with contextlib.suppress(Conflict):
            await rt.tenants.create(tenant)
        return await seed(rt.store.tenant(tenant), **kwargs)
    finally:
        await rt.close()


def seed_sync(url: str, tenant: str, count: int, **kwargs: Any) -> list[str]:
    ids: list[str] = run_async(_seed_state(url, tenant, count=count, **kwargs))
    return ids


async def _with_tenant(url: str, tenant: str, fn: Any) -> Any:
    rt = build_runtime(Settings(redis_url=url, key_prefix="ct"))
    try:
        return await fn(rt.store.tenant(tenant), rt.redis)
    finally:
        await rt.close()


def on_tenant(url: str, tenant: str, fn: Any) -> Any:
    return run_async(_with_tenant(url, tenant, fn))


async def _live_ids(ts: TenantStore, _: Any) -> list[str]:
    page = await ts.list_sessions(limit=1000)
    return sorted(i.session_id for i in page.data)


def state(url: str, tenant: str, export_root: Path) -> dict[str, Any]:
    """What a cleanup run leaves: live sessions, export files (events without ids and times,
    which differ between two seeded tenants) and session.deleted events."""

    async def deleted(ts: TenantStore, redis: Any) -> list[str]:
        return sorted(
            s for kind, s in await lifecycle(redis, ts.tenant_id) if kind == "session.deleted"
        )

    exports: dict[str, Any] = {}
    root = export_root / tenant
    for name in listing(root) if root.exists() else []:
        if name.endswith(".partial"):  # left by a killed run: part of the state, not readable
            exports[name] = None
            continue
        _, events = read_export(root / name)
        exports[name] = [(e["type"], e["data"]) for e in events]
    return {
        "live": on_tenant(url, tenant, _live_ids),
        "exports": exports,
        "deleted": on_tenant(url, tenant, deleted),
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["cleanup"],
        ["cleanup", "--tenant", "acme", "--dry-run"],
        ["cleanup", "--older-than", "30x"],
        ["cleanup", "--idle-for", "0s"],
        ["cleanup", "--label", "novalue"],
        ["cleanup", "--all", "--gzip"],
        ["cleanup", "--all", "--limit", "0"],
        ["cleanup", "--tenant", "Bad_Tenant", "--all"],
        ["sessions", "show", "--tenant", "acme", "bad id"],
    ],
)
def test_bad_usage_exits_2(
    cli_env: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert "error" in err


def test_a_redis_url_that_is_not_one_is_a_usage_error(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSIONS_REDIS_URL", "notaurl")
    assert cli("stats") == 2
    assert "must be a redis://, rediss:// or unix:// URL" in capsys.readouterr().err


def test_cleanup_json_and_exit_codes(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_sync(cli_env, "acme", 6, labels={"env": "staging"})
    seed_sync(cli_env, "acme", 2, prefix="inf", labels={"env": "staging"}, infinite=True)
    seed_sync(cli_env, "globex", 3, labels={"env": "staging"})

    assert cli("cleanup", "--label", "env=staging", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["counts"]["would-delete"] == 9 and dry["dry_run"] is True
    assert on_tenant(cli_env, "acme", _live_ids) == [f"inf00{i}" for i in range(2)] + [
        f"s00{i}" for i in range(6)
    ]

    # An export folder that cannot be created: every session fails and is kept.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli("cleanup", "--tenant", "globex", "--all", "--export-to", str(blocker), "--json") == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed["counts"]["failed"] == 3 and len(failed["failures"]) == 3
    assert len(on_tenant(cli_env, "globex", _live_ids)) == 3

    out = tmp_path / "exports"
    code = cli("cleanup", "--label", "env=staging", "--export-to", str(out), "--gzip", "--json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["deleted"] == 9 and report["counts"]["exported"] == 9
    assert report["tenants"]["acme"]["deleted"] == 6 and report["tenants"]["globex"]["deleted"] == 3
    assert report["filters"]["labels"] == {"env": "staging"}
    assert sorted(report["tenants_searched"]) == ["acme", "globex"]
    assert len(report["exported_files"]) == 9 and report["interrupted"] is False
    assert all(f.endswith(".jsonl.gz") for f in report["exported_files"])
    assert on_tenant(cli_env, "acme", _live_ids) == ["inf000", "inf001"]

    assert cli("cleanup", "--all", "--tenant", "acme") == 0  # infinite sessions stay
    assert "Deleted 0 of 0" in capsys.readouterr().out
    assert cli("cleanup", "--all", "--tenant", "acme", "--include-infinite") == 0
    assert "Deleted 2 of 2" in capsys.readouterr().out


def test_sessions_commands_and_only_an_explicit_delete_removes_an_infinite_session(
    cli_env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_sync(cli_env, "acme", 3, labels={"team": "a"})
    seed_sync(cli_env, "acme", 1, prefix="forever", infinite=True, events=4)
    capsys.readouterr()

    assert cli("sessions", "list", "--tenant", "acme", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    # newest modified first (ties by id, newest first); the three s... sessions are seeded
    # concurrently, so their own order is whatever their writes' times were
    assert sorted(s["session_id"] for s in listed) == ["forever000", "s000", "s001", "s002"]
    assert listed[0]["session_id"] == "forever000"
    order = [(s["modified_at"], s["session_id"]) for s in listed]
    assert order == sorted(order, reverse=True)
    assert cli("sessions", "list", "--tenant", "acme", "--label", "team=a", "--limit", "2") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("SESSION") and len(table) == 3

    assert cli("sessions", "show", "--tenant", "acme", "forever000", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["infinite"] is True and shown["event_count"] == 4  # no session.start
    assert cli("sessions", "show", "--tenant", "acme", "nope") == 1

    assert cli("sessions", "export", "--tenant", "acme", "forever000") == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["session"]["session_id"] == "forever000" and len(lines) == 5
    target = tmp_path / "one.json"
    assert (
        cli("sessions", "export", "--tenant", "acme", "s000", "-o", str(target), "--format", "json")
        == 0
    )
    doc = json.loads(target.read_text())
    assert doc["session"]["session_id"] == "s000" and len(doc["events"]) == 2
    capsys.readouterr()
    # a directory in the way: a clear error, exit 1, nothing left behind
    assert cli("sessions", "export", "--tenant", "acme", "s000", "-o", str(tmp_path)) == 1
    assert "Is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json"]

    # Neither cleanup's automatic filters nor a non-interactive delete without --yes remove it.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli("cleanup", "--all", "--tenant", "acme", "--json") == 0
    assert cli("sessions", "delete", "--tenant", "acme", "forever000") == 2
    assert on_tenant(cli_env, "acme", _live_ids) == ["forever000"]
    assert cli("sessions", "delete", "--tenant", "acme", "forever000", "--yes") == 0
    assert on_tenant(cli_env, "acme", _live_ids) == []
    assert cli("sessions", "delete", "--tenant", "acme", "forever000", "--yes") == 1


def test_stats(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed_sync(cli_env, "acme", 10, events=4)
    seed_sync(cli_env, "acme", 2, prefix="inf", infinite=True, events=0)
    assert cli("stats", "--tenant", "acme", "--tenant", "globex", "--json") == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert captured.err.startswith("note: tenant 'globex' is not registered;")
    acme, globex = out["tenants"]
    assert (acme["sessions"], acme["infinite_sessions"], acme["events"]) == (12, 2, 40)
    assert acme["memory_bytes_estimate"] > 0 and out["memory_is_estimate"] is True
    assert (globex["sessions"], globex["events"], globex["memory_sample_size"]) == (0, 0, 0)
    assert cli("stats") == 0
    captured = capsys.readouterr()
    assert "estimate" in captured.out and "acme" in captured.out and not captured.err
    # a typo lists nothing, and says why
    assert cli("sessions", "list", "--tenant", "acmee") == 0
    assert "tenant 'acmee' is not registered" in capsys.readouterr().err


def wait_for_files(root: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if root.exists() and len(listing(root)) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"cleanup ended before it was interrupted: {proc.returncode}")
        time.sleep(0.01)
    raise AssertionError("cleanup made no progress")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_cleanup_killed_midway_then_rerun_matches_one_uninterrupted_run(
    cli_env: str, tmp_path: Path, sig: signal.Signals
) -> None:
    for tenant in ("base", "kill"):
        seed_sync(cli_env, tenant, 240, events=3, labels={"old": "1"})
        seed_sync(cli_env, tenant, 30, prefix="keep", events=1)
    exports = tmp_path / "exports"
    filters = ["--label", "old=1", "--export-to", str(exports), "--json"]
    assert cli("cleanup", "--tenant", "base", *filters) == 0
    expected = state(cli_env, "base", exports)
    assert len(expected["live"]) == 30 and len(expected["exports"]) == 240

    env = {**os.environ, "SESSIONS_LOG_LEVEL": "WARNING"}
    argv = cli_command("cleanup", "--tenant", "kill", *filters, slow_export_ms=4)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_files(exports / "kill", 40, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    interrupted = state(cli_env, "kill", exports)
    assert 30 < len(interrupted["live"]) < 270, err
    if sig is signal.SIGTERM:
        assert proc.returncode == 1, err
        report = json.loads(out)
        assert report["interrupted"] is True
        assert report["counts"]["deleted"] == 270 - len(interrupted["live"])
        assert not any(n.endswith(".partial") for n in listing(exports / "kill"))
    else:
        assert proc.returncode == -signal.SIGKILL
    # Every export that exists is complete; every deleted session has one.
    names = [n for n in listing(exports / "kill") if not n.endswith(".partial")]
    assert {n.removesuffix(".jsonl") for n in names} >= set(interrupted["deleted"])

    rerun = subprocess.run(
        cli_command("cleanup", "--tenant", "kill", *filters), env=env, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert state(cli_env, "kill", exports) == expected


def test_the_installed_sessionctl_entry_point(cli_env: str) -> None:
    seed_sync(cli_env, "acme", 2)
    sessionctl = str(Path(sys.executable).with_name("sessionctl"))
    env = {**os.environ, "SESSIONS_LOG_LEVEL": "WARNING"}
    refused = subprocess.run([sessionctl, "cleanup"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--all" in refused.stderr
    done = subprocess.run(
        [sessionctl, "cleanup", "--all", "--dry-run", "--json"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["would-delete"] == 2
