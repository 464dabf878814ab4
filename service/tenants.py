"""Tenants: created by operators, authenticated by API key, each with limits and retention.

An API key is ``sk_<tenant>_<secret>``: the tenant id in the key says which record to fetch, and
the SHA-256 of the whole key is compared with the stored digest in constant time. Only digests
are stored, so a leaked registry grants nothing. Keys carry 256 random bits, so a plain digest
(no slow KDF) is safe against guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Annotated, Any, cast

from pydantic import BaseModel, Field, StringConstraints

from service import keys as K
from service.connections import RedisClient, store_errors
from service.errors import Conflict, InvalidInput, TenantNotFound, Unauthorized
from service.ids import validate_tenant_id


class Retention(BaseModel):
    """Automatic cleanup rules of one tenant; ``None`` switches a rule off. Infinite sessions are
    never touched by these rules."""

    max_age_seconds: int | None = Field(default=None, ge=60)
    max_idle_seconds: int | None = Field(default=None, ge=60)
    max_sessions: int | None = Field(default=None, ge=1)


class Limits(BaseModel):
    """Per-tenant quotas; ``None`` means the deployment default from settings."""

    max_sessions: int | None = Field(default=None, ge=1)
    max_message_bytes: int | None = Field(default=None, ge=1)
    rate_limit_per_second: float | None = Field(default=None, ge=0)


ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
WindowTokens = Annotated[int, Field(ge=256, le=100_000_000)]
MAX_CONTEXT_WINDOWS = 100
ContextWindows = Annotated[dict[ModelName, WindowTokens], Field(max_length=MAX_CONTEXT_WINDOWS)]
"""Context windows per model (or model-name prefix) of one tenant, over the deployment's own."""


class Tenant(BaseModel):
    id: str
    name: str
    created_at_ms: int
    disabled: bool = False
    key_digest: str = Field(default="", exclude=True)
    key_hint: str = ""
    limits: Limits = Field(default_factory=Limits)
    retention: Retention = Field(default_factory=Retention)
    default_model: str | None = Field(
        default=None, max_length=200, description="Model of sessions created without one."
    )
    context_windows: ContextWindows = Field(
        default_factory=dict,
        description="Context window (tokens) per model or model-name prefix, over the "
        "deployment's SESSIONS_MODEL_CONTEXT_WINDOWS.",
    )


PARSED_RECORDS = 1024  # tenant records kept parsed per process


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(tenant_id: str) -> str:
    return f"sk_{tenant_id}_{secrets.token_urlsafe(32)}"


def tenant_of_key(api_key: str) -> str | None:
    """The tenant id a key names, or None for a string that is not shaped like a key."""
    if not api_key.startswith("sk_") or len(api_key) > 200:
        return None
    tenant, sep, secret = api_key[3:].partition("_")  # tenant ids hold no "_"; secrets may
    if not sep or not secret:
        return None
    try:
        return validate_tenant_id(tenant)
    except InvalidInput:
        return None


class TenantRegistry:
    """The tenant records: one hash ``P:_tenants:{admin}:records`` of id -> JSON."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis: Any = cast(Any, redis)
        self._key = self.records_key = K.tenants_key(prefix, "records")
        self._parsed: dict[str, Tenant] = {}

    async def create(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        limits: Limits | None = None,
        retention: Retention | None = None,
        default_model: str | None = None,
        context_windows: dict[str, int] | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant; returns it with its API key, which is never shown again."""
        validate_tenant_id(tenant_id)
        api_key = new_api_key(tenant_id)
        with store_errors("create a tenant"):
            seconds, micros = await self._redis.time()  # times come from Redis
        tenant = Tenant(
            id=tenant_id,
            name=name or tenant_id,
            created_at_ms=int(seconds) * 1000 + int(micros) // 1000,
            key_digest=digest(api_key),
            key_hint=api_key[-4:],
            limits=limits or Limits(),
            retention=retention or Retention(),
            default_model=default_model,
            context_windows=context_windows or {},
        )
        with store_errors("create a tenant"):
            created = await self._redis.hsetnx(self._key, tenant_id, _dump(tenant))
        if not created:
            raise Conflict(f"tenant {tenant_id!r} already exists")
        return tenant, api_key

    async def get(self, tenant_id: str) -> Tenant:
        validate_tenant_id(tenant_id)
        with store_errors("read a tenant"):
            raw = await self._redis.hget(self._key, tenant_id)
        if raw is None:
            raise TenantNotFound(f"tenant {tenant_id!r} does not exist")
        return _load(raw)

    async def all(self) -> list[Tenant]:
        with store_errors("list tenants"):
            raw = await self._redis.hgetall(self._key)
        return sorted((_load(v) for v in raw.values()), key=lambda t: t.id)

    async def save(self, tenant: Tenant) -> Tenant:
        with store_errors("update a tenant"):
            exists = await self._redis.hexists(self._key, tenant.id)
            if not exists:
                raise TenantNotFound(f"tenant {tenant.id!r} does not exist")
            await self._redis.hset(self._key, tenant.id, _dump(tenant))
        return tenant

    async def set_disabled(self, tenant_id: str, disabled: bool) -> Tenant:
        tenant = await self.get(tenant_id)
        tenant.disabled = disabled
        return await self.save(tenant)

    async def rotate_key(self, tenant_id: str) -> tuple[Tenant, str]:
        """A new key; the old one stops working at once."""
        tenant = await self.get(tenant_id)
        api_key = new_api_key(tenant_id)
        tenant.key_digest = digest(api_key)
        tenant.key_hint = api_key[-4:]
        return await self.save(tenant), api_key

    async def authenticate(self, api_key: str) -> Tenant:
        """The tenant a key belongs to; ``Unauthorized`` for any key that is not valid now."""
        tenant_id = tenant_of_key(api_key)
        if tenant_id is None:
            raise Unauthorized("API key is malformed")
        with store_errors("check an API key"):
            raw = await self._redis.hget(self._key, tenant_id)
        return self.verify(api_key, raw)

    def verify(self, api_key: str, record: str | None) -> Tenant:
        """The tenant of ``record`` (the stored record of the tenant ``api_key`` names, None
        when there is none) if the key is its key and the tenant is enabled, else
        ``Unauthorized``. The tenant returned may be shared with other requests: read only."""
        tenant = self._parse(record) if record is not None else None
        stored = tenant.key_digest if tenant is not None else "0" * 64
        if not hmac.compare_digest(stored, digest(api_key)) or tenant is None:
            raise Unauthorized("API key is not valid")
        if tenant.disabled:
            raise Unauthorized(f"tenant {tenant.id!r} is disabled")
        return tenant

    def _parse(self, record: str) -> Tenant:
        """A record as a tenant, parsed once per distinct record text (every request reads its
        tenant's record; it seldom changes)."""
        tenant = self._parsed.get(record)
        if tenant is None:
            if len(self._parsed) >= PARSED_RECORDS:
                self._parsed.clear()
            tenant = self._parsed[record] = _load(record)
        return tenant


def _dump(tenant: Tenant) -> str:
    data = tenant.model_dump(mode="json")
    data["key_digest"] = tenant.key_digest
    return json.dumps(data, separators=(",", ":"))


def _load(raw: str) -> Tenant:
    data = json.loads(raw)
    tenant = Tenant.model_validate(data)
    tenant.key_digest = data.get("key_digest", "")
    return tenant
