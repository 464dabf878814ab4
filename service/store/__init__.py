"""The Redis session store: the only code that runs the Lua scripts and knows the key layout.

``Store`` holds the connection and the registered scripts, once per process. ``store.tenant(t)``
returns a ``TenantStore`` bound to one tenant: it can reach no key outside ``P:t:``, whatever ids
it is given, because every key comes from ``service.keys`` after the id is validated.

``TenantStore`` is assembled from one module per concern:

    base          Store, TenantBase (keys, the script runner, the Cluster index follow-up)
    sessions      create / get / update / delete
    history       appends (with the turn guards) and paged reads of a session's events
    items         items of storage-only sessions: append, latest N, pop, clear
    live          live follow of a session's events (hub: the process's one live reader)
    bookmarks     named positions in the history
    listing       list_sessions and live counts from the index
    maintenance   cleanup walks, retention facts, the sweeper's step, stats
    repair        Cluster seats, the index repair pass, moving entries between shards
"""

from __future__ import annotations

from service.store.base import (
    EXPORT_PAGE,
    KEPT_TENANT_STORES,
    LIFECYCLE_MAXLEN,
    LIST_PAGE_BYTES,
    LIST_SCAN_BUDGET,
    MAX_BLOCK_MS,
    MAX_BOOKMARKS,
    MAX_PAGE,
    Store,
    encode_event,
)
from service.store.bookmarks import BookmarkOps
from service.store.history import TurnState
from service.store.items import ItemOps
from service.store.live import LiveOps
from service.store.maintenance import MaintenanceOps
from service.store.sessions import SessionOps


class TenantStore(SessionOps, BookmarkOps, ItemOps, LiveOps, MaintenanceOps):
    """Session operations for one tenant."""


__all__ = [
    "EXPORT_PAGE",
    "KEPT_TENANT_STORES",
    "LIFECYCLE_MAXLEN",
    "LIST_PAGE_BYTES",
    "LIST_SCAN_BUDGET",
    "MAX_BLOCK_MS",
    "MAX_BOOKMARKS",
    "MAX_PAGE",
    "Store",
    "TenantStore",
    "TurnState",
    "encode_event",
]
