"""The service's exception tree. One handler in the API maps it to problem+json responses.

    ServiceError                      500  base of all errors raised on purpose
    ├── InvalidInput                  422  a value outside its documented shape (ids, cursors)
    │   └── PayloadTooLarge           413  an event or body over the configured limit
    ├── NotFound                      404
    │   ├── SessionNotFound
    │   ├── TenantNotFound
    │   └── BookmarkNotFound
    ├── Conflict                      409  duplicate session id, tenant name, busy session
    │   └── StorageOnly                    a prompt (a turn) sent to a storage-only session
    ├── Unauthorized                  401  missing or unknown API key
    ├── Forbidden                     403  a key that may not do this (tenant key on admin routes)
    ├── LimitExceeded                 429  quotas (sessions, request rate, turns waiting)
    ├── StoreUnavailable              503  Redis unreachable, timing out, or read-only
    │   └── StoreFull                 507  Redis out of memory (maxmemory with noeviction)
    └── ProviderError                 502  the model provider failed (workers record it as an event)

Library errors are converted where they enter (``raise StoreUnavailable(...) from exc``).
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(ServiceError):
    status = 422
    title = "Invalid input"


class PayloadTooLarge(InvalidInput):
    status = 413
    title = "Payload too large"


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class SessionNotFound(NotFound):
    title = "Session not found"


class TenantNotFound(NotFound):
    title = "Tenant not found"


class BookmarkNotFound(NotFound):
    title = "Bookmark not found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class StorageOnly(Conflict):
    """A prompt sent to a storage-only session: it never runs a turn."""

    title = "Storage-only session"


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class LimitExceeded(ServiceError):
    status = 429
    title = "Limit exceeded"

    def __init__(self, detail: str, retry_after: float | None = None, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class StoreUnavailable(ServiceError):
    status = 503
    title = "Store unavailable"


class StoreFull(StoreUnavailable):
    status = 507
    title = "Insufficient storage"


class ProviderError(ServiceError):
    status = 502
    title = "Model provider error"

    def __init__(self, detail: str, kind: str = "provider_error", **extra: object) -> None:
        super().__init__(detail, **extra)
        self.kind = kind
