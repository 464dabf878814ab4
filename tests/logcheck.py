"""The production log format, checked on what the suite's server and worker processes print:
every line one JSON object with ``event``, ``level``, ``logger`` and ``timestamp``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output as a JSON object; fails on the first that is not one.
    Text after the last newline may only be the start of a line cut off by SIGKILL."""
    *lines, tail = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    assert not tail or tail.startswith("{"), f"{path.name}: unterminated line {tail[:300]!r}"
    docs = []
    for number, line in enumerate(lines, 1):
        where = f"{path.name}:{number}"
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"{where} is not a JSON line: {line[:500]!r}") from None
        assert isinstance(doc, dict), f"{where}: {line[:500]!r}"
        assert isinstance(doc.get("event"), str), f"{where} has no event: {line[:500]!r}"
        assert doc.get("level") in LEVELS, f"{where} has no level: {line[:500]!r}"
        assert isinstance(doc.get("timestamp"), str), f"{where} has no timestamp: {line[:500]!r}"
        assert isinstance(doc.get("logger"), str), f"{where} has no logger: {line[:500]!r}"
        docs.append(doc)
    return docs


def assert_json_logs(folder: Path, pattern: str = "*.log") -> int:
    """Every log in ``folder`` is in the production format; the number of lines checked."""
    return sum(len(log_lines(path)) for path in sorted(folder.glob(pattern)))
