"""Identifier rules, checked before any key is built.

Session ids and bookmark names: 1-128 characters from ``A-Z a-z 0-9 . _ -``, starting with a
letter or digit. Tenant ids: 1-40 characters from ``a-z 0-9 -``, starting with a letter or digit.
These sets hold no Redis glob characters, no hash-tag braces, no key separator (``:``), no
whitespace and no path separators, so an id can never reach another tenant's keys or widen a
pattern.
"""

from __future__ import annotations

import re
import uuid

from service.errors import InvalidInput

SESSION_ID_MAX = 128
TENANT_ID_MAX = 40
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_PART_LIMIT = 2**64 - 1  # Redis refuses larger parts, and "(" + the largest id as a start
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
LABEL_VALUE_MAX = 256
MAX_LABELS = 32


def _check(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidInput(f"{what} must be {rule} (got {_preview(value)})")
    return value


_SAFE_RULE = "1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"


def validate_session_id(value: object) -> str:
    return _check(value, _SESSION_ID, "session id", _SAFE_RULE)


def validate_bookmark_name(value: object) -> str:
    return _check(value, _SESSION_ID, "bookmark name", _SAFE_RULE)


def validate_tenant_id(value: object) -> str:
    return _check(
        value,
        _TENANT_ID,
        "tenant id",
        "1-40 characters of a-z 0-9 - starting with a letter or digit",
    )


def validate_labels(labels: object) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise InvalidInput("labels must be an object of string keys and string values")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels are allowed (got {len(labels)})")
    for key, val in labels.items():
        if not isinstance(key, str) or _LABEL_KEY.fullmatch(key) is None:
            raise InvalidInput(
                "label keys must be 1-63 characters of A-Z a-z 0-9 . _ / - starting with a letter "
                f"or digit (got {_preview(key)})"
            )
        if not isinstance(val, str) or len(val) > LABEL_VALUE_MAX:
            raise InvalidInput(f"label {key!r} must be a string of at most {LABEL_VALUE_MAX} chars")
    return dict(labels)


def validate_stream_id(value: str) -> str:
    """A Redis stream id (``<ms>`` or ``<ms>-<seq>``, ASCII digits, each part below 2**64 - 1,
    so it also serves as an exclusive start); anything else is ``InvalidInput``."""
    match = _STREAM_ID.fullmatch(value)
    if match is None or any(int(part) >= _PART_LIMIT for part in match.groups("0")):
        raise InvalidInput(f"{value[:50]!r} is not an event id")
    return value


def new_session_id() -> str:
    return str(uuid.uuid4())


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
