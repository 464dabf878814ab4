"""structlog, configured once: JSON lines in production, a readable console in development.

Every logger of the process goes the same way: structlog's own loggers render straight to
stderr (orjson, one write per line), and standard-library loggers (uvicorn, arq, httpx, the
provider's retry warnings, Python warnings) are routed through structlog's
``ProcessorFormatter``, so in production every line of every process is one JSON object with
``event``, ``level``, ``logger`` and ``timestamp``; a traceback is the ``exception`` field, and
the ``extra`` fields of a standard-library record are fields of the line.

Request ids, tenant, session and message ids are bound through contextvars (``bind_request``),
so every line a request or a job produces carries them. Message content is never logged unless
``log_content`` is set.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from service.config import LogFormat, Settings

_log_content = False
_HANDLER_NAME = "sessions"
# Set by uvicorn for its own console; a duplicate of the message with ANSI colours.
_DROPPED_EXTRAS = ("color_message",)


def _drop_extras(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in _DROPPED_EXTRAS:
        event.pop(key, None)
    return event


def _logger_field(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    name = event.pop("_logger_name", None)
    if name is not None:
        event["logger"] = name
    return event


def _stdlib_json(obj: Any, **_: Any) -> str:
    return json.dumps(obj, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    global _log_content
    _log_content = settings.log_content
    level = logging.getLevelName(settings.log_level)
    json_format = settings.log_format is LogFormat.JSON
    shared: list[Any] = [
        _logger_field,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_format:
        shared.append(structlog.processors.format_exc_info)
    renderer: Any
    factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    stdlib_renderer: Any
    if json_format:
        # orjson: one line per request is written, so its encoding is on every request's path
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
        stdlib_renderer = structlog.processors.JSONRenderer(serializer=_stdlib_json)
    else:
        # plain tracebacks: rich's would print local variables, which can hold prompts or keys
        renderer = stdlib_renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_extras,
            *shared,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, stdlib_renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):  # configured again (tests, dev): one handler, never two
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn and arq log to their own loggers; with no handlers of their own they reach ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # the OpenAI SDK's DEBUG lines carry each request's options: the messages, whole
    logging.getLogger("openai").setLevel(
        level if settings.log_content else max(level, logging.INFO)
    )


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    """An exception that ends the process: one log line with its traceback, like every other."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("service").critical("uncaught exception", exc_info=(kind, value, traceback))


def get_logger(name: str) -> Any:
    # ``logger`` itself is a parameter of structlog's get_logger; ``_logger_name`` renames to it
    return structlog.get_logger(_logger_name=name)


def content(text: str) -> str:
    """What a log line may say about message content: the text itself only when asked for."""
    return text if _log_content else f"<{len(text)} chars>"


# The bound request id on its own as well: read on every send (into the turn job), where
# structlog's get_contextvars would copy and scan the whole context.
_request_id: ContextVar[str | None] = ContextVar("sessions_request_id", default=None)


def bind_request(**values: str) -> None:
    structlog.contextvars.bind_contextvars(**values)
    if "request_id" in values:
        _request_id.set(values["request_id"])


def unbind_request(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
    if "request_id" in keys:
        _request_id.set(None)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
    _request_id.set(None)


def request_id() -> str | None:
    """The request id bound to the current request or job, if any."""
    return _request_id.get()
