"""OpenTelemetry traces: run, step and server spans, written to an NDJSON file by default.

Span ids of runs and step attempts are derived from their ids (not drawn at random), so a
process that only knows a run id (the worker, from its lease) can parent a step on the run's
span and hand the step's own `traceparent` to the plugin, with nothing but the trace id
travelling through the queue. Nothing here opens a network connection unless an OTLP endpoint
is configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stellaorch.domain.errors import SettingsInvalid
from stellaorch.observability.redaction import redact

__all__ = [
    "PROPAGATOR",
    "NdjsonSpanExporter",
    "SpanKind",
    "TracingConfigError",
    "configure_tracing",
    "extract",
    "forced_ids",
    "project_tracer",
    "run_span_id",
    "span_document",
    "step_parent",
    "traceparent_of",
    "tracer",
    "use_provider",
]

TRACER_NAME = "stellaorch"
PROPAGATOR = TraceContextTextMapPropagator()
log = logging.getLogger("stellaorch.tracing")

# Ids the next span must take (trace id, span id); None: the SDK draws them.
_forced: ContextVar[tuple[int | None, int | None]] = ContextVar(
    "stella_forced_ids", default=(None, None)
)


class TracingConfigError(SettingsInvalid):
    """The trace settings cannot be honoured (an OTLP endpoint without its exporter)."""


class _StableIds(IdGenerator):
    """Random ids, except where `forced_ids` asks for derived ones."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        """The forced span id, or a random one."""
        return _forced.get()[1] or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        """The forced trace id, or a random one."""
        return _forced.get()[0] or self._random.generate_trace_id()


@contextlib.contextmanager
def forced_ids(trace_id: int | None, span_id: int | None) -> Iterator[None]:
    """Spans started in the block take these ids (a trace id only applies to a root span)."""
    token = _forced.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced.reset(token)


def run_span_id(run_id: str) -> int:
    """The span id of a run's `orchestrator.run` span, derived from the run id."""
    return int(hashlib.sha256(f"run/{run_id}".encode()).hexdigest()[:16], 16) or 1


def step_parent(trace_id: str, run_id: str) -> Context:
    """A context whose current span is the run's span: what a step span is parented on."""
    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=run_span_id(run_id),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def tracer() -> trace.Tracer:
    """The project's tracer (a no-op one until `configure_tracing`)."""
    return trace.get_tracer(TRACER_NAME)


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def span_document(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON object (the NDJSON file's line)."""
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name.lower(),
        "traceId": _hex(context.trace_id, 32),
        "spanId": _hex(context.span_id, 16),
        "parentSpanId": _hex(parent.span_id, 16) if parent is not None else None,
        "startUnixNano": span.start_time,
        "endUnixNano": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": dict(span.attributes or {}),
        "service": (span.resource.attributes.get("service.name") if span.resource else None),
    }


class NdjsonSpanExporter(SpanExporter):
    """Appends one JSON line per finished span to a file; stops writing at `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._noted: set[str] = set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans that still fit under the size cap (the rest are dropped)."""
        lines = [
            (
                redact(json.dumps(span_document(s), default=str, separators=(",", ":"))) + "\n"
            ).encode()
            for s in spans
        ]
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # One O_APPEND write per batch: processes sharing the file never interleave.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    kept = bytearray()
                    for line in lines:
                        if size + len(kept) + len(line) > self.max_bytes:
                            break
                        kept += line
                    if kept:
                        os.write(fd, bytes(kept))
                finally:
                    os.close(fd)
            except OSError as exc:
                self._note("traces.write_failed", str(exc))
                return SpanExportResult.FAILURE
            if len(kept) < sum(len(line) for line in lines):  # some were dropped
                self._note("traces.file_full", None)
        return SpanExportResult.SUCCESS

    def _note(self, event: str, error: str | None) -> None:
        """Warn once per kind of trouble, not once per batch."""
        if event not in self._noted:
            self._noted.add(event)
            log.warning(event, extra={"path": str(self.path), "error": error})

    def shutdown(self) -> None:
        """Nothing to release: the file is opened per batch."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Writes are synchronous."""
        return True


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise TracingConfigError(
            "STELLA_ORCH_OTLP_ENDPOINT is set but the OTLP exporter is not installed "
            "(pip install opentelemetry-exporter-otlp-proto-http)"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
    return exporter


def configure_tracing(
    service: str,
    trace_file: Path | None,
    max_bytes: int,
    otlp_endpoint: str | None = None,
) -> TracerProvider:
    """Install the process's tracer provider: the span file (unless None) and OTLP if set."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "process.pid": os.getpid()}),
        id_generator=_StableIds(),
    )
    if trace_file is not None:
        provider.add_span_processor(BatchSpanProcessor(NdjsonSpanExporter(trace_file, max_bytes)))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _install(provider)
    return provider


# The provider spans go to: the global one once set, or one a test installs directly.
_provider: list[TracerProvider] = []


def _install(provider: TracerProvider) -> None:
    _provider[:] = [provider]


def use_provider(provider: TracerProvider | None) -> None:
    """Send this project's spans to `provider` (None: the global one); for tests."""
    _provider[:] = [provider] if provider is not None else []


def project_tracer() -> trace.Tracer:
    """The tracer spans are made with: the installed provider's, else the global one."""
    if _provider:
        return _provider[0].get_tracer(TRACER_NAME)
    return tracer()


def extract(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from W3C headers (an empty context when absent or bad)."""
    return PROPAGATOR.extract(carrier=dict(headers))


def traceparent_of(span: trace.Span) -> str:
    """The W3C `traceparent` header value naming `span` (sampled)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    if "traceparent" in carrier:
        return carrier["traceparent"]
    context = span.get_span_context()
    return f"00-{_hex(context.trace_id, 32)}-{_hex(context.span_id, 16)}-01"
