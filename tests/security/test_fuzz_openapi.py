"""The OpenAPI document is the contract: schemathesis reads ``/openapi.json`` from a real
``sessionctl serve`` process and runs every check it has (``--checks all``) against it, first per
operation (valid, invalid and fixed cases), then statefully (sequences of calls that follow the
document's links: create a session, then use its id).

So every answer is below 500 and conforms to the document (status, content type, headers, body),
every schema-valid request is accepted and every schema-violating one refused (the document
states each rule the service enforces: id patterns, label keys, cursors, event ids, strict
types), a 405 lists the path's methods in ``Allow``, and auth is never ignored. Our own check adds
that every 4xx is a problem document.

Two runs: one per operation from Python, whose cases also address a session and bookmark that
exist (the live streams are left out there: they never end), and the command-line run over every
operation, streams included, with all its phases (coverage, fuzzing, stateful).

Refused keys count against the client's address (20 per minute, then 429 for every request from
it); schemathesis sends wrong keys on purpose, so the counter is reset before each call.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from service.api.limits import auth_failures_key
from tests.security.conftest import ADMIN_KEY, PREFIX, LiveServer, TenantKey, new_tenant
from tests.security.schemathesis_hooks import problem_document

EXAMPLES_PER_OPERATION = 30
FUZZ_TENANT = "fuzz"
SESSION = "fz-live"  # exists during the run, so generated requests also reach real data
BOOKMARK = "fz-mark"
ENDLESS = r"/stream$"
ALL_OPERATIONS = 32  # what the document lists; every one but the two streams is fuzzed
ADMIN = "^/v1/admin"
CLI_EXAMPLES = 15
ROOT = Path(__file__).resolve().parents[2]


def all_checks() -> list[Any]:
    load_all_checks()
    checks = list(CHECKS.get_all())  # problem_document included: registered by the hooks module
    names = {check.__name__ for check in checks}
    # --checks all: these are the ones this suite exists for; none may go missing unnoticed.
    assert {
        "positive_data_acceptance",
        "negative_data_rejection",
        "allow_header_conformance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
        problem_document.__name__,
    } <= names, names
    return checks


# Requests always carry the key of the test (``Authorization`` is not generated: missing and
# wrong keys are schemathesis' ``ignored_auth`` check and tests/security/test_auth's), and no
# undeclared query parameter is sent as "invalid" input (the service ignores unknown query
# parameters, as HTTP APIs do).
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"allow-extra-parameters": False, "with-security-parameters": False}}
)


def headers_for(path: str, tenant: TenantKey) -> dict[str, str]:
    key = ADMIN_KEY if path.startswith("/v1/admin/") else tenant.key
    return {"Authorization": f"Bearer {key}"}


class Counters:
    """Resets the refused-key counter of this machine's address."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._key = auth_failures_key(PREFIX, "127.0.0.1")

    def reset(self) -> None:
        self._redis.delete(self._key)

    def close(self) -> None:
        self._redis.close()


def reseed(http: requests.Session, base_url: str, tenant: TenantKey) -> None:
    """The session and bookmark the fixed cases address (an earlier operation may have deleted
    them); the session has a message, so its pages are not empty."""
    url = f"{base_url}/v1/sessions"
    h = tenant.headers
    r = http.post(url, json={"session_id": SESSION, "labels": {"k": "v"}}, headers=h)
    assert r.status_code in {201, 409}, r.text
    if r.status_code == 201:
        r = http.post(f"{url}/{SESSION}/messages", json={"prompt": "hello"}, headers=h)
        assert r.status_code == 202, r.text
    r = http.put(f"{url}/{SESSION}/bookmarks/{BOOKMARK}", json={}, headers=h)
    assert r.status_code == 200, r.text


def fuzz_operation(
    operation: Any, base_url: str, tenant: TenantKey, counters: Counters
) -> str | None:
    """Run the examples of one operation; the failure found, as text (None when none)."""
    headers = headers_for(operation.path, tenant)
    checks = all_checks()
    strategies = [
        operation.as_strategy(generation_mode=mode)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    fixed = {
        name: value
        for name, value in (("session_id", SESSION), ("name", BOOKMARK))
        if f"{{{name}}}" in operation.path
    }
    if fixed:
        strategies.append(operation.as_strategy(path_parameters=fixed))

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case: Case) -> None:
        if (case.path_parameters or {}).get("tenant_id") == FUZZ_TENANT:
            return  # disabling or re-keying the tenant under test would end the run early
        counters.reset()
        case.call_and_validate(
            base_url=base_url, session=http, headers=headers, checks=checks, timeout=10
        )

    with requests.Session() as http:
        reseed(http, base_url, tenant)
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a BaseExceptionGroup
            return f"{operation.method.upper()} {operation.path}:\n{exc}"[:3000]
    return None


def load_schema(live: LiveServer) -> Any:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=CONFIG)
    return schema.exclude(path_regex=ENDLESS)


async def test_every_operation_holds_to_the_document(
    live: LiveServer, real_redis: Redis, redis_server_url: str
) -> None:
    tenant = await new_tenant(real_redis, FUZZ_TENANT)
    schema = load_schema(live)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == ALL_OPERATIONS - 2, [op.path for op in operations]
    counters = Counters(redis_server_url)
    failures = []
    try:
        for operation in operations:
            failure = await asyncio.to_thread(fuzz_operation, operation, live.url, tenant, counters)
            if failure is not None:
                failures.append(failure)
    finally:
        counters.close()
    assert not failures, "\n\n".join(failures)


def schemathesis_run(
    live: LiveServer, redis_url: str, workdir: Path, key: str, *select: str
) -> str:
    """``schemathesis run --checks all`` (every phase: coverage, fuzzing, stateful) against the
    live server with ``key``; its report when it found anything, else ""."""
    cli = Path(sys.executable).with_name("schemathesis")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.security.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "FUZZ_REDIS_URL": redis_url,
        "FUZZ_FAILURES_KEY": auth_failures_key(PREFIX, "127.0.0.1"),
    }
    args = [str(cli), "run", f"{live.url}/openapi.json", "--checks", "all"]
    args += ["--header", f"Authorization: Bearer {key}", *select]
    args += ["--max-examples", str(CLI_EXAMPLES), "--generation-deterministic"]
    args += ["--request-timeout", "2", "--no-color"]
    # Run elsewhere: schemathesis keeps a record of what it found in its working folder.
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    report = done.stdout + done.stderr
    ran = all(f"✅ {phase}" in report for phase in ("Coverage", "Fuzzing", "Stateful"))
    if done.returncode != 0 or not ran:
        return report[-6000:]
    return ""


async def test_schemathesis_finds_nothing_in_any_phase(
    live: LiveServer, real_redis: Redis, redis_server_url: str, tmp_path: Path
) -> None:
    """The command-line run, stateful phase included, over every operation (streams too: the
    run reads a bounded part of them): the tenant's operations with a tenant key, the
    administration with the admin key."""
    tenant = await new_tenant(real_redis, FUZZ_TENANT)
    reports = [
        await asyncio.to_thread(
            schemathesis_run,
            live,
            redis_server_url,
            tmp_path,
            tenant.key,
            "--exclude-path-regex",
            ADMIN,
        ),
        await asyncio.to_thread(
            schemathesis_run,
            live,
            redis_server_url,
            tmp_path,
            ADMIN_KEY,
            "--include-path-regex",
            ADMIN,
        ),
    ]
    assert not any(reports), "\n\n".join(reports)
