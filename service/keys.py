"""Every Redis key the service uses, as pure functions. Nothing else builds a key.

Layout (``P`` = global prefix, ``t`` = tenant id, ``s`` = session id; both validated in ``ids``):

    P:t:{t/s}:meta        hash    session metadata                         session TTL
    P:t:{t/s}:history     list    durable history: one compact item per    session TTL
                                  message, error, abort, compaction record
    P:t:{t/s}:events      stream  the earlier layout's events (read once,  session TTL
                                  converted into history, then removed)
    P:t:{t/s}:bookmarks   hash    bookmark name -> JSON                    session TTL
    P:t:{t/s}:idem        hash    idempotency key -> event id              session TTL
    P:t:{t/s}:turns       list    pending turn message ids (oldest first)  session TTL
    P:t:{t/iN}:idx        zset    session id by modified ms (index shard N)     none
    P:t:{t/iN}:exp        zset    session id by expiry ms, finite sessions only none
    P:t:{t/iN}:gone       zset    Cluster only: id by ms of its delete, kept     none (trimmed
                                  TOMBSTONE_MS; a late index touch of a deleted  to that age)
                                  session does not bring it back
    P:t:{t}:lifecycle     stream  session.created/updated/deleted/expired       none (capped)
    P:t:{t/lN}:live       stream  live events of the tenant's sessions (shard   none (trimmed
                                  N): deltas, turn start/end, idle, titles and   to the live
                                  copies of durable events, for SSE and waits    window)
    P:t:{t}:quota         string  request-rate window counter                   short
    P:t:{t}:pending       zset    session id by ms registered with pending turns none
    P:t:{t}:seats         zset    session id by ms its seat was taken: the      none
                                  tenant's sessions, counted against its limit
                                  (Cluster only; ``service.store.seats``)
    P:_tenants:{admin}:records    hash    tenant id -> JSON (see ``service.tenants``)    none
    P:_tenants:{admin}:failures:A string  refused API keys from client address A       window

Every key of one tenant starts with ``P:t:``, so a Redis ACL pattern ``~P:t:*`` grants exactly one
tenant. All keys of one session share the hash tag ``{t/s}``: one Cluster slot, so every change to a
session is one Lua script. ``/`` cannot occur in either id, so the tag is unambiguous.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from service.ids import validate_session_id, validate_tenant_id

SESSION_KEY_KINDS = ("meta", "history", "bookmarks", "idem", "turns", "events")


@dataclass(frozen=True, slots=True)
class SessionKeys:
    meta: str
    history: str
    bookmarks: str
    idem: str
    turns: str
    events: str  # the earlier layout's event stream, present only until converted

    def all(self) -> list[str]:
        return [self.meta, self.history, self.bookmarks, self.idem, self.turns, self.events]


@dataclass(frozen=True, slots=True)
class IndexKeys:
    idx: str
    exp: str
    gone: str  # Cluster only: recently deleted ids, so a late index touch cannot bring one back

    def pair(self) -> tuple[str, str]:
        return self.idx, self.exp


def tenant_prefix(prefix: str, tenant: str) -> str:
    """The prefix every key of ``tenant`` starts with (for SCAN, ACLs and stats)."""
    return f"{prefix}:{validate_tenant_id(tenant)}:"


def session_keys(prefix: str, tenant: str, session_id: str) -> SessionKeys:
    base = f"{tenant_prefix(prefix, tenant)}{{{tenant}/{validate_session_id(session_id)}}}"
    return SessionKeys(*(f"{base}:{kind}" for kind in SESSION_KEY_KINDS))


def index_shard(session_id: str, shards: int) -> int:
    """The index shard of a session: stable across processes (CRC32, not ``hash()``)."""
    return zlib.crc32(session_id.encode()) % shards if shards > 1 else 0


def index_keys(prefix: str, tenant: str, shard: int) -> IndexKeys:
    base = f"{tenant_prefix(prefix, tenant)}{{{tenant}/i{shard}}}"
    return IndexKeys(idx=f"{base}:idx", exp=f"{base}:exp", gone=f"{base}:gone")


def lifecycle_key(prefix: str, tenant: str) -> str:
    return f"{tenant_prefix(prefix, tenant)}{{{tenant}}}:lifecycle"


def live_shard(session_id: str, shards: int) -> int:
    """The live-event shard of a session (CRC32, like the index shard)."""
    return zlib.crc32(session_id.encode()) % shards if shards > 1 else 0


def live_key(prefix: str, tenant: str, shard: int) -> str:
    """A shard of the tenant's live-event stream, shared by many sessions: one stream per shard
    instead of one per session, so no session pays a stream's preallocated node."""
    return f"{tenant_prefix(prefix, tenant)}{{{tenant}/l{shard}}}:live"


def pending_key(prefix: str, tenant: str) -> str:
    """The tenant's registry of sessions that may have pending turns (``service.pending``)."""
    return f"{tenant_prefix(prefix, tenant)}{{{tenant}}}:pending"


def seats_key(prefix: str, tenant: str) -> str:
    """The tenant's session seats on a Cluster: one member per session, taken before the
    session's create script, so concurrent creates stop at the limit exactly."""
    return f"{tenant_prefix(prefix, tenant)}{{{tenant}}}:seats"


def quota_key(prefix: str, tenant: str) -> str:
    return f"{tenant_prefix(prefix, tenant)}{{{tenant}}}:quota"


def tenants_key(prefix: str, kind: str) -> str:
    """Keys of the tenant registry's slot: ``records`` (hash id -> JSON), and the key failure
    counters (``auth_failures_key``), which one script reads with the record."""
    return f"{prefix}:_tenants:{{admin}}:{kind}"


def auth_failures_key(prefix: str, address: str) -> str:
    """The counter of refused API keys from one client ``address`` (an IPv4/IPv6 literal, or
    ``unknown``; see ``service.api.limits.client_address``)."""
    return tenants_key(prefix, f"failures:{address}")
