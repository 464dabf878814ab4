"""structlog, configured once: JSON lines in production, a readable console in development.

Request ids and tenant ids are bound through contextvars (``bind_request``), so every line a
request produces carries them. Message content is never logged unless ``log_content`` is set.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from service.config import LogFormat, Settings

_log_content = False


def configure_logging(settings: Settings) -> None:
    global _log_content
    _log_content = settings.log_content
    level = logging.getLevelName(settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        # orjson: one line per request is written, so its encoding is on every request's path
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
        shared.append(structlog.processors.format_exc_info)
    else:
        # plain tracebacks: rich's would print local variables, which can hold prompts or keys
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def content(text: str) -> str:
    """What a log line may say about message content: the text itself only when asked for."""
    return text if _log_content else f"<{len(text)} chars>"


def bind_request(**values: str) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
