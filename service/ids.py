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
# The rules as anchored patterns, valid both in Python and in JSON Schema (ECMA-262): the OpenAPI
# document states exactly these, and the checks below use them.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"


def digits_below(limit: int) -> str:
    """A pattern (no anchors) for decimal strings, leading zeros allowed, of at most as many
    digits as ``limit`` has, whose value is below ``limit``: shorter strings, or strings of that
    length that are smaller digit by digit."""
    top = str(limit)
    alternatives = [f"[0-9]{{1,{len(top) - 1}}}"]
    for i, digit in enumerate(top):
        if digit != "0":
            below = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = len(top) - i - 1
            alternatives.append(top[:i] + below + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(" + "|".join(alternatives) + ")"


# Each part below 2**64 - 1: the largest Redis takes, and "(" + the largest id still works as an
# exclusive start.
_PART = digits_below(2**64 - 1)
EVENT_ID_PATTERN = f"^{_PART}(-{_PART})?$"
ITEM_ID_PATTERN = f"^{_PART}-{_PART}$"  # an event id with its ordinal, as items carry
EVENT_ID_MAX = 41
_SESSION_ID = re.compile(SESSION_ID_PATTERN[1:-1])
_TENANT_ID = re.compile(TENANT_ID_PATTERN[1:-1])
_STREAM_ID = re.compile(EVENT_ID_PATTERN[1:-1])
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN[1:-1])
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
    """A Redis stream id (``<ms>`` or ``<ms>-<seq>``, ASCII digits, each part below 2**64 - 1);
    anything else is ``InvalidInput``."""
    if not isinstance(value, str) or _STREAM_ID.fullmatch(value) is None:
        raise InvalidInput(f"{value[:50]!r} is not an event id")
    return value


def validate_history_id(value: str) -> str:
    """``validate_stream_id`` for a place in a session's history, which a transient event's
    id (``L<live id>``) is not: a caller who gives one is told so."""
    if isinstance(value, str) and value.startswith("L") and _STREAM_ID.fullmatch(value[1:]):
        raise InvalidInput(
            f"{value[:50]!r} is a live event's id, which the history does not hold: "
            "page it by a durable event's id (the last one you saw)"
        )
    return validate_stream_id(value)


def id_order(event_id: str) -> tuple[int, int]:
    """The order of a stream or history id (``<ms>-<n>``, or ``<ms>``): compare these, not the
    strings."""
    ms, _, n = event_id.partition("-")
    return int(ms), int(n or 0)


def new_session_id() -> str:
    return str(uuid.uuid4())


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
