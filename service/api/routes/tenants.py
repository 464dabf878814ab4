"""Tenants: the calling tenant's own record, and administration with the admin key."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AdminDep, RuntimeDep, TenantDep
from service.api.params import TenantId
from service.api.routes import V1
from service.api.schemas import (
    TenantCreate,
    TenantList,
    TenantPublic,
    TenantUpdate,
    TenantWithKey,
)
from service.errors import InvalidInput
from service.tenants import MAX_CONTEXT_WINDOWS, Limits, Retention

router = APIRouter(prefix=V1, tags=["tenants"])
admin = APIRouter(prefix=f"{V1}/admin/tenants", tags=["admin"], dependencies=[AdminDep])


@router.get("/tenant", response_model=TenantPublic)
async def own_tenant(tenant: TenantDep) -> TenantPublic:
    """The tenant the key belongs to: name, limits, retention (never key digests)."""
    return TenantPublic.of(tenant)


@admin.post("", status_code=201, response_model=TenantWithKey)
async def create_tenant(body: TenantCreate, rt: RuntimeDep) -> TenantWithKey:
    """Create a tenant; the response holds its API key, which is never shown again."""
    tenant, api_key = await rt.tenants.create(
        body.id,
        name=body.name,
        limits=Limits.model_validate(body.limits.model_dump()) if body.limits else None,
        retention=Retention.model_validate(body.retention.model_dump()) if body.retention else None,
        default_model=body.default_model,
        context_windows=body.context_windows,
    )
    return TenantWithKey(tenant=TenantPublic.of(tenant), api_key=api_key)


@admin.get("", response_model=TenantList)
async def list_tenants(rt: RuntimeDep) -> TenantList:
    return TenantList(data=[TenantPublic.of(t) for t in await rt.tenants.all()])


@admin.get("/{tenant_id}", response_model=TenantPublic)
async def get_tenant(tenant_id: TenantId, rt: RuntimeDep) -> TenantPublic:
    return TenantPublic.of(await rt.tenants.get(tenant_id))


@admin.patch("/{tenant_id}", response_model=TenantPublic)
async def update_tenant(tenant_id: TenantId, body: TenantUpdate, rt: RuntimeDep) -> TenantPublic:
    """Rename, disable or enable, or change limits, retention and context windows (merged
    field by field)."""
    tenant = await rt.tenants.get(tenant_id)
    if body.name is not None:
        tenant.name = body.name
    if body.disabled is not None:
        tenant.disabled = body.disabled
    if body.default_model is not None:
        tenant.default_model = body.default_model
    if body.limits is not None:
        changes = body.limits.model_dump(exclude_unset=True)
        tenant.limits = Limits.model_validate(tenant.limits.model_dump() | changes)
    if body.retention is not None:
        changes = body.retention.model_dump(exclude_unset=True)
        tenant.retention = Retention.model_validate(tenant.retention.model_dump() | changes)
    if body.context_windows is not None:
        windows = tenant.context_windows | body.context_windows
        tenant.context_windows = {m: t for m, t in windows.items() if t is not None}
        if len(tenant.context_windows) > MAX_CONTEXT_WINDOWS:
            raise InvalidInput(f"a tenant has at most {MAX_CONTEXT_WINDOWS} context windows")
    return TenantPublic.of(await rt.tenants.save(tenant))


@admin.post("/{tenant_id}/rotate-key", response_model=TenantWithKey)
async def rotate_key(tenant_id: TenantId, rt: RuntimeDep) -> TenantWithKey:
    """A new API key; the old one stops working at once."""
    tenant, api_key = await rt.tenants.rotate_key(tenant_id)
    return TenantWithKey(tenant=TenantPublic.of(tenant), api_key=api_key)
