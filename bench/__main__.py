"""Run the benchmarks: ``python -m bench [--quick] [--only GROUP,...] [--no-write]``.

Every group runs on private servers started for it (a redis-server per group, a 3-node Redis
Cluster for ``cluster``, API and worker subprocesses where a group needs them), prints its table
as it finishes, and the whole run is written to ``bench/RESULTS.md`` unless ``--no-write``.
``--quick`` shrinks sizes and repeats for a smoke run; its figures are not ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Result, machine_notes, private_redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
GROUPS = ("store", "list", "turns", "sweep", "api", "peer", "items", "cluster", "memory")
OPTIONAL_GROUPS = ("scaling",)  # run only when named in --only
QUICK_NOTE = "quick (a smoke run: small sizes, few repeats; not figures to quote)"
FLAT_TOLERANCE = 1.5  # "~1" targets pass within this factor (either way) of the baseline

TITLES = {
    "store": "Store: append and history read against raw redis-py",
    "list": "Listing sessions: page cost against tenant size",
    "turns": "Turns with the dev model: worker and send_and_wait latency",
    "sweep": "Expiry sweep: cost against live sessions",
    "api": "HTTP API: one API process against a minimal FastAPI app",
    "peer": "Against the OpenAI Agents SDK's RedisSession",
    "items": "Storage-only sessions through the Agents SDK adapter and HTTP, against RedisSession",
    "cluster": "Store on a 3-node Redis Cluster against raw redis-py",
    "memory": "Redis memory per session",
    "scaling": "Scale-out: API processes and workers",
}
SOURCES = {
    "store": "bench/store_bench.py",
    "list": "bench/list_bench.py",
    "turns": "bench/turn_bench.py",
    "sweep": "bench/sweep_bench.py",
    "api": "bench/api_bench.py, bench/minimal_app.py",
    "peer": "bench/peer_bench.py, bench/peer_driver.py",
    "items": "bench/items_bench.py, bench/peer_driver.py",
    "cluster": "bench/cluster_bench.py",
    "memory": "bench/memory_bench.py, bench/conversation_memory.py",
    "scaling": "bench/scaling_bench.py",
}


class Skipped(Exception):
    """A group that cannot run here (a missing optional dependency): reported, not failed."""


# --- the groups ------------------------------------------------------------------------------
async def group_store(quick: bool) -> list[Result]:
    from bench import store_bench

    with private_redis() as url:
        return await store_bench.run(url, repeats=2 if quick else 5)


async def group_list(quick: bool) -> list[Result]:
    from bench import list_bench

    with private_redis() as url:
        return await list_bench.run(url, sizes=(1_000, 10_000) if quick else list_bench.SIZES)


async def group_turns(quick: bool) -> list[Result]:
    from bench import turn_bench

    if quick:
        turn_bench.TURNS_PER_SESSION = 4
    with private_redis() as url:
        return await turn_bench.run(url)


async def group_sweep(quick: bool) -> list[Result]:
    from bench import sweep_bench

    with private_redis() as url:
        if quick:
            figures = await sweep_bench.run(url, live=10_000, expired=200)
        else:
            figures = await sweep_bench.run(url)
    return sweep_bench.as_results(figures)


async def group_api(quick: bool) -> list[Result]:
    from bench import api_bench

    with private_redis() as url:
        if quick:
            return await api_bench.run(url, seconds=2.0, rounds=1)
        return await api_bench.run(url)


async def _peer_python() -> Path:
    """The peer virtualenv's interpreter (made on first use); the group is skipped without it."""
    from bench import peer_bench

    try:
        return await asyncio.to_thread(peer_bench.peer_python)
    except peer_bench.PeerUnavailable as exc:
        raise Skipped(str(exc)) from exc


async def group_peer(quick: bool) -> list[Result]:
    from bench import peer_bench

    await _peer_python()
    with private_redis() as url:
        if quick:
            return await peer_bench.run(url, rounds=2, single=200, per_writer=20)
        return await peer_bench.run(url)


async def group_items(quick: bool) -> list[Result]:
    from bench import items_bench

    await _peer_python()
    with private_redis() as url:
        if quick:
            return await items_bench.run(url, rounds=1, per_writer=10)
        return await items_bench.run(url)


async def group_cluster(quick: bool) -> list[Result]:
    from bench import cluster_bench
    from service.embedded import RedisClusterProcesses

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = RedisClusterProcesses(Path(tmp)).start()
        try:
            return await cluster_bench.run(cluster.startup_nodes, repeats=2 if quick else 5)
        finally:
            cluster.stop()


async def group_memory(quick: bool) -> list[Result]:
    from bench import conversation_memory, memory_bench

    python = await _peer_python()
    with private_redis() as url:
        out = await memory_bench.run(url, sessions=1_000 if quick else 2_000)
    with private_redis() as url, private_redis() as queue_url:
        out += await conversation_memory.run(
            url, queue_url, python, sessions=100 if quick else 300,
            long_sessions=4 if quick else 10,
        )  # fmt: skip
    return out


async def group_scaling(quick: bool) -> list[Result]:
    from bench import scaling_bench

    with private_redis() as url:
        return await scaling_bench.run(url, quick=quick)


RUNNERS: dict[str, Callable[[bool], Awaitable[list[Result]]]] = {
    "store": group_store,
    "list": group_list,
    "turns": group_turns,
    "sweep": group_sweep,
    "api": group_api,
    "peer": group_peer,
    "items": group_items,
    "cluster": group_cluster,
    "memory": group_memory,
    "scaling": group_scaling,
}


# --- verdicts and formatting -------------------------------------------------------------------
def verdict(res: Result) -> bool | None:
    """Whether the figure meets its target; None when it has none (or it cannot be judged).

    ``>= x``: the ratio (oriented: above 1 is better) when there is a baseline, else the
    figure itself; ``<= x``: ours at most ``x`` times the baseline (a cost: memory, time) when
    there is one, else the figure itself; ``<= bar``: the figure against the baseline; ``~1``:
    the ratio within ``FLAT_TOLERANCE``."""
    target = res.target.strip()
    ratio = res.ratio
    if not target:
        return None
    if target.startswith("<= bar"):
        return None if res.baseline is None else res.ours <= res.baseline
    if "~" in target:
        if ratio is None:
            return None
        return 1 / FLAT_TOLERANCE <= ratio <= FLAT_TOLERANCE
    match = re.match(r"(>=|<=)\s*([0-9.]+)", target)
    if match is None:
        return None
    bound = float(match.group(2))
    if match.group(1) == "<=" and res.baseline not in (None, 0):
        # "ours <= x times the baseline": not the oriented ratio, which a larger cost of ours
        # makes smaller
        return res.ours / res.baseline <= bound
    value = ratio if res.baseline not in (None, 0) else res.ours
    if value is None or value != value:
        return None
    return value >= bound if match.group(1) == ">=" else value <= bound


def number(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def with_unit(value: float | None, unit: str) -> str:
    text = number(value)
    return text if text == "n/a" else f"{text} {unit}"


MARKS = {True: "pass", False: "FAIL", None: ""}


@dataclass
class GroupRun:
    name: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    skipped: str = ""


def rows(run: GroupRun) -> list[list[str]]:
    out = []
    for res in run.results:
        ratio = res.ratio
        notes = f"baseline: {res.baseline_name}" if res.baseline_name else ""
        if res.notes:
            notes = f"{notes}; {res.notes}" if notes else res.notes
        out.append(
            [
                res.name,
                with_unit(res.ours, res.unit),
                with_unit(res.baseline, res.unit) if res.baseline is not None else "",
                f"{ratio:.2f}" if ratio is not None else "",
                res.target,
                MARKS[verdict(res)],
                notes,
            ]
        )
    return out


HEADER = ["figure", "ours", "baseline", "ratio", "target", "", "notes"]


def terminal_table(run: GroupRun) -> str:
    lines = [f"== {run.name}: {TITLES[run.name]} ({run.seconds:.0f} s)"]
    if run.skipped:
        return "\n".join([*lines, f"   skipped: {run.skipped}"])
    if run.error:
        return "\n".join([*lines, f"   FAILED: {run.error.splitlines()[-1]}"])
    table = [HEADER[:6], *(r[:6] for r in rows(run))]
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    for r in table:
        lines.append("   " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def markdown(runs: list[GroupRun], *, command: str, started: dt.datetime, seconds: float,
             quick: bool, load: tuple[float, float]) -> str:  # fmt: skip
    passed = sum(1 for r in runs for res in r.results if verdict(res) is True)
    failed = sum(1 for r in runs for res in r.results if verdict(res) is False)
    out = [
        "# Benchmark results",
        "",
        "Written by `python -m bench` (`bench/__main__.py`); do not edit by hand. Each figure is "
        "measured against its baseline doing the same work in the same run, on private "
        "redis-servers (and a private 3-node Redis Cluster) started for the run.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Machine: {machine_notes()}; {redis_version()}",
        f"- Load average (1 min) at start and end: {load[0]:.2f}, {load[1]:.2f}",
        f"- Mode: {QUICK_NOTE if quick else 'full'}",
        f"- Duration: {seconds / 60:.1f} min; targets met: {passed}, missed: {failed}",
        "",
        "Ratio: ours against the baseline, oriented so that above 1 means ours does better "
        "(throughput: ours / baseline; latency, time and memory: baseline / ours). A target "
        "`>= x` applies to that ratio when there is a baseline; `<= x` with a baseline means "
        "ours is at most x times the baseline (memory, time); either applies to the figure "
        f"itself when there is none; `~1` passes within a factor of {FLAT_TOLERANCE:g} either "
        "way.",
    ]
    for run in runs:
        out += ["", f"## {run.name}: {TITLES[run.name]}", ""]
        out.append(f"Source: {SOURCES[run.name]}; {run.seconds:.0f} s.")
        out.append("")
        if run.skipped:
            out.append(f"Skipped: {run.skipped}")
            continue
        if run.error:
            out += ["Failed:", "", "```", run.error.strip()[-3000:], "```"]
            continue
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "|".join(["---"] * len(HEADER)) + "|")
        for r in rows(run):
            out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    out += load_test_section()
    return "\n".join(out) + "\n"


def load_test_section() -> list[str]:
    """The last ``make loadtest`` run (``bench/load-results.json``), which runs apart: ten
    minutes is too long for this runner."""
    path = RESULTS.with_name("load-results.json")
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    errors = sum(data["errors"].values())
    warm = [s["used_bytes"] for s in data["memory"] if s["t_s"] >= min(120, data["seconds"] / 3)]
    third = max(1, len(warm) // 3)
    early, late = sum(warm[:third]) / third, sum(warm[-third:]) / third
    out = [
        "",
        "## load: simulated users on create / send / read / list / delete",
        "",
        f"Source: `bench/load_test.py`, run apart with `make loadtest` "
        f"(`.venv/bin/python -m bench.load_test --users {data['users']} "
        f"--seconds {data.get('requested_seconds', data['seconds']):.0f}`) on {data['date']}; "
        f"{data['machine']}. One API process "
        "and one worker process on a private redis-server; every request must succeed.",
        "",
        f"- {data['users']} users, {data['seconds']:.0f} s, {data['requests']:,} requests "
        f"({data['requests_per_s']:.0f}/s), errors: {errors}",
        f"- Redis memory after warm-up (from {min(120, data['seconds'] / 3):.0f} s): "
        f"{min(warm) / 2**20:.1f}-{max(warm) / 2**20:.1f} MiB, moving with the number of live "
        f"sessions; mean of the last third against the first: {(late / early - 1) * 100:+.1f} %",
        "",
        "| operation | requests | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for op, lat in data["latency_ms"].items():
        out.append(f"| {op} | {lat['count']:,} | {lat['p50']} | {lat['p95']} | {lat['p99']} |")
    out += ["", "Redis memory over time (every 10 s):", "", "| t (s) | used memory (MiB) | keys |",
            "|---|---|---|"]  # fmt: skip
    step = max(1, len(data["memory"]) // 20)
    for sample in data["memory"][::step]:
        out.append(
            f"| {sample['t_s']:.0f} | {sample['used_bytes'] / 2**20:.2f} | {sample['keys']:,} |"
        )
    if data.get("error_samples"):
        out += ["", "First errors:", "", *(f"- `{e}`" for e in data["error_samples"])]
    return out


def redis_version() -> str:
    from service.embedded import redis_server_binary

    try:
        text = subprocess.run(
            [redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"redis-server: unknown ({exc})"
    match = re.search(r"v=(\S+)", text)
    malloc = re.search(r"malloc=(\S+)", text)
    version = match.group(1) if match else text
    return f"redis-server {version}" + (f" (malloc={malloc.group(1)})" if malloc else "")


def display_command(argv: list[str]) -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(ROOT))
    except ValueError:
        shown = "python"
    return shlex.join([shown, "-m", "bench", *argv])


# --- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks on private servers and write bench/RESULTS.md.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--only",
        default="",
        metavar="GROUP,...",
        help=f"groups to run: {','.join(GROUPS)} (default: all of them); also "
        f"{','.join(OPTIONAL_GROUPS)}, which runs only when named",
    )
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args(argv)
    chosen = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = [g for g in chosen if g not in RUNNERS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(RUNNERS)}")
    args.groups = [g for g in (*GROUPS, *OPTIONAL_GROUPS) if g in chosen]
    return args


async def run_groups(groups: list[str], quick: bool) -> list[GroupRun]:
    runs = []
    for name in groups:
        run = GroupRun(name)
        print(f"-- {name}: running ...", flush=True)
        start = time.perf_counter()
        try:
            run.results = await RUNNERS[name](quick)
        except Skipped as exc:
            run.skipped = str(exc)
        except Exception:
            run.error = traceback.format_exc()
            print(run.error, file=sys.stderr, flush=True)
        run.seconds = time.perf_counter() - start
        print(terminal_table(run), flush=True)
        runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.chdir(ROOT)
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    runs = asyncio.run(run_groups(args.groups, args.quick))
    seconds = time.perf_counter() - t0
    load_end = os.getloadavg()[0]
    print(f"\n{len(runs)} group(s) in {seconds / 60:.1f} min", flush=True)
    if not args.no_write:
        RESULTS.write_text(
            markdown(
                runs,
                command=display_command(argv),
                started=started,
                seconds=seconds,
                quick=args.quick,
                load=(load_start, load_end),
            )
        )
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
