"""FastAPI dependencies as typed aliases: what a route needs is in its signature.

The app's long-lived objects live in one ``ApiState`` on ``app.state.api`` (set by ``main``);
nothing here reaches for a global. ``TenantDep`` authenticates the bearer key, applies the key
failure limit of the client address and the tenant's request rate, and binds the tenant to the
request's log lines.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.limits import RequestLimits
from service.api.sse import StreamSlots
from service.config import Settings
from service.errors import Forbidden, StoreUnavailable, Unauthorized
from service.lifecycle import LifecycleReader
from service.logging import bind_request
from service.metrics import Metrics
from service.runtime import Runtime
from service.store import TenantStore
from service.tenants import Tenant
from workers.queue import TurnQueue


@dataclass
class ApiState:
    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    queue: TurnQueue | None = None
    limits: RequestLimits | None = None
    streams: StreamSlots | None = None

    def attach(self, runtime: Runtime, queue: TurnQueue) -> None:
        self.streams = StreamSlots(runtime.settings.max_streams_per_tenant)
        self.runtime = runtime
        self.queue = queue
        self.limits = RequestLimits(runtime.redis, runtime.settings.key_prefix, self.metrics)


_bearer = HTTPBearer(auto_error=False, description="A tenant API key, or the admin key.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(api_state)]


async def settings(state: StateDep) -> Settings:
    return state.settings


async def metrics(state: StateDep) -> Metrics:
    return state.metrics


async def runtime(state: StateDep) -> Runtime:
    if state.runtime is None:
        raise StoreUnavailable("the service is starting")
    return state.runtime


async def queue(state: StateDep) -> TurnQueue:
    if state.queue is None:
        raise StoreUnavailable("the service is starting")
    return state.queue


async def request_limits(state: StateDep) -> RequestLimits:
    if state.limits is None:
        raise StoreUnavailable("the service is starting")
    return state.limits


SettingsDep = Annotated[Settings, Depends(settings)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
QueueDep = Annotated[TurnQueue, Depends(queue)]
LimitsDep = Annotated[RequestLimits, Depends(request_limits)]


async def bearer_key(credentials: Credentials) -> str | None:
    return credentials.credentials if credentials is not None else None


KeyDep = Annotated[str | None, Depends(bearer_key)]


def _ready(request: Request) -> tuple[ApiState, Runtime, RequestLimits, TurnQueue]:
    state: ApiState = request.app.state.api
    if state.runtime is None or state.limits is None or state.queue is None:
        raise StoreUnavailable("the service is starting")
    return state, state.runtime, state.limits, state.queue


@dataclass(frozen=True, slots=True)
class TenantContext:
    """What a tenant's request works with: its tenant, its store, the turn queue, settings and
    metrics."""

    tenant: Tenant
    store: TenantStore
    queue: TurnQueue
    settings: Settings
    metrics: Metrics


class TenantAuth(HTTPBearer):
    """The bearer key of a tenant, as a dependency: its ``TenantContext`` (401 without a valid
    key), within its request rate (429).

    On every tenant request's path, so it is the security scheme itself and reads the app state
    directly: FastAPI resolves each dependency anew per request, at a cost that shows in the
    send throughput."""

    async def __call__(self, request: Request) -> TenantContext:  # type: ignore[override]
        credentials = await super().__call__(request)
        state, rt, limits, queue = _ready(request)
        if credentials is None:
            state.metrics.auth_failures.inc()
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        address = request.client.host if request.client else None
        try:
            tenant = await limits.authenticate(address, credentials.credentials, rt.tenants)
        except Unauthorized:
            state.metrics.auth_failures.inc()
            await limits.record_auth_failure(address)
            raise
        request.state.tenant_id = tenant.id
        bind_request(tenant=tenant.id)
        rate = tenant.limits.rate_limit_per_second
        default = state.settings.rate_limit_per_second
        await limits.hit_tenant(tenant.id, default if rate is None else rate)
        store = rt.store.tenant(tenant.id)
        return TenantContext(tenant, store, queue, state.settings, state.metrics)


_tenant_auth = TenantAuth(
    auto_error=False, scheme_name="HTTPBearer", description=_bearer.model.description
)
TenantCtx = Annotated[TenantContext, Depends(_tenant_auth)]


async def current_tenant(ctx: TenantCtx) -> Tenant:
    return ctx.tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


async def tenant_store(ctx: TenantCtx) -> TenantStore:
    return ctx.store


StoreDep = Annotated[TenantStore, Depends(tenant_store)]


async def lifecycle_reader(request: Request, ctx: TenantCtx) -> LifecycleReader:
    rt = _ready(request)[1]
    return LifecycleReader(rt.redis, rt.settings.key_prefix, ctx.tenant.id)


LifecycleDep = Annotated[LifecycleReader, Depends(lifecycle_reader)]


async def require_admin(
    request: Request,
    key: KeyDep,
    rt: RuntimeDep,
    limits: LimitsDep,
    m: MetricsDep,
    settings: SettingsDep,
) -> None:
    """The admin key (401 without any valid key, 403 for a tenant key or when no admin key is
    configured)."""
    if key is None:
        m.auth_failures.inc()
        raise Unauthorized("missing admin key: send 'Authorization: Bearer <admin key>'")
    admin = settings.admin_key
    if admin is None:
        raise Forbidden("tenant administration is not configured (set SESSIONS_ADMIN_KEY)")
    address = request.client.host if request.client else None

    async def check() -> bool:
        if hmac.compare_digest(key.encode(), admin.get_secret_value().encode()):
            return True
        try:
            await rt.tenants.authenticate(key)
        except Unauthorized:
            return False
        raise Forbidden("a tenant key cannot manage tenants; use the admin key")

    if not await limits.guard_auth(address, check()):
        m.auth_failures.inc()
        await limits.record_auth_failure(address)
        raise Unauthorized("admin key is not valid")
    request.state.tenant_id = "_admin"
    bind_request(tenant="_admin")


AdminDep = Depends(require_admin)
