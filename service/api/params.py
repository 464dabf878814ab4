"""Path, query and header parameters as the OpenAPI document states them: every rule the
service enforces on them (``service.ids``, ``service.paging``) is written into their schema.

The rules are documented here and checked where they have always been checked (ids before any key
is built), so a refused value gets the service's own message; the schemathesis run in
``tests/security/test_fuzz_openapi.py`` holds the two together.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query

from service import ids
from service.paging import CURSOR_MAX, CURSOR_PATTERN

ID_RULE = "1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit."
EVENT_ID_RULE = "An event id: `<ms>` or `<ms>-<seq>`, decimal, each part below 2^64 - 1."


def _string(pattern: str, max_length: int) -> dict[str, object]:
    return {"pattern": pattern, "minLength": 1, "maxLength": max_length}


SessionId = Annotated[
    str,
    Path(
        description=f"The session's id: {ID_RULE}",
        json_schema_extra=_string(ids.SESSION_ID_PATTERN, ids.SESSION_ID_MAX),
    ),
]
BookmarkName = Annotated[
    str,
    Path(
        description=f"The bookmark's name: {ID_RULE}",
        json_schema_extra=_string(ids.SESSION_ID_PATTERN, ids.SESSION_ID_MAX),
    ),
]
TenantId = Annotated[
    str,
    Path(
        description="The tenant's id: 1-40 of a-z 0-9 - starting with a letter or digit.",
        json_schema_extra=_string(ids.TENANT_ID_PATTERN, ids.TENANT_ID_MAX),
    ),
]
EVENT_ID_SCHEMA = _string(ids.EVENT_ID_PATTERN, ids.EVENT_ID_MAX)
EventIdQuery = Annotated[
    str | None,
    Query(description=f"{EVENT_ID_RULE} Exclusive.", json_schema_extra=EVENT_ID_SCHEMA),
]
# An event stream's cursor: an event id, or ``L<live id>`` (the SSE id of a live event).
STREAM_CURSOR_SCHEMA = _string("^L?" + ids.EVENT_ID_PATTERN[1:], ids.EVENT_ID_MAX + 1)
STREAM_CURSOR_RULE = f"{EVENT_ID_RULE} Or `L<live id>`, the SSE `id:` of a live event."
StreamCursorQuery = Annotated[
    str | None,
    Query(description=f"{STREAM_CURSOR_RULE} Exclusive.", json_schema_extra=STREAM_CURSOR_SCHEMA),
]
StreamLastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description=f"{STREAM_CURSOR_RULE} Resume after it (wins over `after`).",
        json_schema_extra=STREAM_CURSOR_SCHEMA,
    ),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description=f"{EVENT_ID_RULE} Resume after it (wins over `after`).",
        json_schema_extra=EVENT_ID_SCHEMA,
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        description="`next_cursor` of the previous page: `<score>~<session id>`.",
        json_schema_extra={"pattern": CURSOR_PATTERN, "maxLength": CURSOR_MAX},
    ),
]
LABEL_FILTER_PATTERN = ids.LABEL_KEY_PATTERN[:-1] + f"=[\\s\\S]{{0,{ids.LABEL_VALUE_MAX}}}$"
LabelFilter = Annotated[
    list[str],
    Query(
        description="`key=value`; repeat to require several (at most 32).",
        json_schema_extra={
            "maxItems": ids.MAX_LABELS,
            "items": {"type": "string", "pattern": LABEL_FILTER_PATTERN},
        },
    ),
]


def plain_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is left out, never sent as null: FastAPI writes ``str | None`` as
    ``anyOf: [string, null]``, which clients (and schemathesis) read as "the text null is
    fine". Each such parameter schema becomes its non-null branch, keeping its own keywords."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                param_schema = parameter.get("schema", {})
                branches = param_schema.get("anyOf", [])
                kept = [b for b in branches if b.get("type") != "null"]
                if len(kept) == 1 and len(branches) == 2:
                    del param_schema["anyOf"]
                    parameter["schema"] = {**kept[0], **param_schema}
    return schema


def install(app: FastAPI) -> None:
    """Document parameters as they are used (see ``plain_parameters``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = plain_parameters(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
