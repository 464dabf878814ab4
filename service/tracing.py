"""OpenTelemetry tracing, optional: ``pip install '.[otel]'``, then configured by the standard
``OTEL_*`` variables, and off otherwise (and without a line of OpenTelemetry imported).

On when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none`` (``otlp``, ``console``) or
an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
unless ``OTEL_SDK_DISABLED=true``. Everything else (service name, resource attributes, sampler,
headers, batch sizes) is the SDK's own reading of its variables.

The span tree of a send: the API's ``HTTP`` server span, the enqueue (the trace context travels
in the job's ``trace`` keyword argument, W3C ``traceparent``), the worker's job and turn, and the
provider call; every Redis command is a child span of whatever runs it (one outside a request
or a job, such as a worker polling its queue, makes no span).

When off, ``span`` is a no-op context manager and ``carrier`` returns None: nothing on a hot
path does more than read a module flag.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from service.logging import get_logger

log = get_logger("service.tracing")

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_redis_instrumentor: Any = None
_EXPORTERS = {"otlp", "console"}


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if exporters & _EXPORTERS:
        return True
    if "none" in exporters:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def enabled() -> bool:
    return _tracer is not None


def configure_tracing(service_name: str, provider: Any = None) -> bool:
    """Turn tracing on for this process when the environment asks for it (or with the given
    SDK ``TracerProvider``, as tests do). ``service_name`` applies unless ``OTEL_SERVICE_NAME``
    names one. True when tracing is on."""
    global _tracer
    if provider is None:
        if not wanted():
            return False
        try:
            provider = _provider_from_env(service_name)
        except ImportError as exc:
            log.warning("tracing.unavailable", reason=str(exc), install="redis-sessions[otel]")
            return False
    _tracer = provider.get_tracer("redis-sessions")
    _instrument_redis(provider)
    log.info("tracing.on", service=service_name)
    return True


def shutdown_tracing() -> None:
    """Tracing off; Redis clients are no longer instrumented."""
    global _tracer, _redis_instrumentor
    _tracer = None
    if _redis_instrumentor is not None:
        _redis_instrumentor.uninstrument()
        _redis_instrumentor = None


def _provider_from_env(service_name: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = {e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "console" in names:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if "otlp" in names or not names & _EXPORTERS:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Redis commands in this block make no spans: the periodic checks of a long-lived event
    stream, which would add a span to its request's trace every few seconds for hours."""
    if _tracer is None:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


def _instrument_redis(provider: Any) -> None:
    global _redis_instrumentor
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:  # the base otel packages only: no Redis spans
        return
    if _redis_instrumentor is None:
        _redis_instrumentor = RedisInstrumentor()
        _redis_instrumentor.instrument(tracer_provider=_InsideSpans(provider))


class _InsideSpans:
    """A tracer provider whose tracers make spans only inside a span (a request's, a job's).
    A Redis command outside any, a worker's poll of the queue for one, would start a trace of
    its own: about sixteen a second from each idle worker."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> _ChildTracer:
        return _ChildTracer(self._provider.get_tracer(*args, **kwargs))


class _ChildTracer:
    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import trace

        if _orphan(kwargs):
            return trace.use_span(trace.INVALID_SPAN)
        return self._tracer.start_as_current_span(name, *args, **kwargs)

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import trace

        if _orphan(kwargs):
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, *args, **kwargs)


def _orphan(kwargs: Mapping[str, Any]) -> bool:
    """Whether a span started with ``kwargs`` would have no parent: no context given, and none
    current."""
    from opentelemetry import trace

    inside = trace.get_current_span().get_span_context().is_valid
    return kwargs.get("context") is None and not inside


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: str = "internal",
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A span around the block (the current span's child, or ``parent``'s, a carrier from
    ``carrier``); yields the span, or None while tracing is off. An exception escaping the
    block is recorded on the span."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    context = propagate.extract(dict(parent)) if parent else None
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=SpanKind[kind.upper()],
        attributes=dict(attributes or {}),
    ) as current:
        yield current


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (``traceparent``), to travel with a job."""
    if _tracer is None:
        return None
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


def set_attributes(current: Any, **values: Any) -> None:
    """Attributes on a span from ``span`` (None while off); None values are left out."""
    if current is not None:
        current.set_attributes({k: v for k, v in values.items() if v is not None})
