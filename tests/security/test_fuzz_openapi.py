"""Schema-driven fuzzing of the running service: schemathesis reads ``/openapi.json`` from a real
``sessionctl serve`` process and sends generated requests, valid and invalid (including requests
without a key), to every operation.

Every answer must be below 500, every 4xx a problem document, and every response must conform to
the schema: status code, content type, headers and body.

Not checked: that every schema-valid request is accepted (schemathesis'
``positive_data_acceptance``). The schema does not carry the id rules of ``service.ids`` (session
ids, bookmark names, label keys are plain strings there), so a generated id such as ``"a:b"`` is
valid to the schema and refused with 422 by the service, on purpose.
"""

from __future__ import annotations

import asyncio
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.conftest import ADMIN_KEY, LiveServer, TenantKey, new_tenant

EXAMPLES_PER_OPERATION = 30
FUZZ_TENANT = "fuzz"
SESSION = "fz-live"  # exists during the run, so generated requests also reach real data
BOOKMARK = "fz-mark"
ENDLESS = r"/stream$"  # live streams never end by themselves; tests/security/test_auth covers them


def problem_document(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """A 4xx answer is ``application/problem+json`` with ``title``, ``status`` and ``detail``."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == "application/problem+json", f"4xx with content type {content_type!r}"
    body = response.json()
    assert isinstance(body, dict), "a problem document is an object"
    assert isinstance(body.get("title"), str) and body["title"], "problem without a title"
    assert isinstance(body.get("detail"), str) and body["detail"], "problem without a detail"
    assert body.get("status") == response.status_code, "problem status differs from HTTP status"
    return True


# Requests always carry the key of the test (``Authorization`` is not generated: missing and
# wrong keys on every route are tests/security/test_auth's), and no undeclared query parameter is
# sent as "invalid" input (the service ignores unknown query parameters, as HTTP APIs do).
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"allow-extra-parameters": False, "with-security-parameters": False}}
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    problem_document,
]


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


def fuzz_operation(operation: Any, base_url: str, tenant: TenantKey) -> str | None:
    """Run the examples of one operation; the failure found, as text (None when none)."""
    key = ADMIN_KEY if operation.path.startswith("/v1/admin/") else tenant.key
    headers = {"Authorization": f"Bearer {key}"}
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
        case.call_and_validate(
            base_url=base_url, session=http, headers=headers, checks=CHECKS, timeout=10
        )

    with requests.Session() as http:
        reseed(http, base_url, tenant)
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a BaseExceptionGroup
            return f"{operation.method.upper()} {operation.path}:\n{exc}"[:3000]
    return None


async def test_every_operation_survives_generated_requests(
    live: LiveServer, real_redis: Redis
) -> None:
    tenant = await new_tenant(real_redis, FUZZ_TENANT)
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=CONFIG)
    schema = schema.exclude(path_regex=ENDLESS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.path for op in operations]
    failures = []
    for operation in operations:
        failure = await asyncio.to_thread(fuzz_operation, operation, live.url, tenant)
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)
