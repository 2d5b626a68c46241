"""The structlog line format, redaction as its last step, and the NDJSON span file."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from stellaorch.observability import tracing
from stellaorch.observability.logs import configure_logging, line_formatter
from stellaorch.observability.secret_values import KNOWN_SECRETS, REDACTED

SECRET = "hunter2-sekrit-value"


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """configure_logging() writing into a buffer for one test; the root logger is restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sink = io.StringIO()
    configure_logging("info", stream=sink)
    yield sink
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def parsed(sink: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_stdlib_and_structlog_records_make_the_same_json_shape(service_log: io.StringIO) -> None:
    logging.getLogger("stellaorch.test").info(
        "step.succeeded", extra={"run_id": "r1", "step_id": "s", "absent": None}
    )
    structlog.get_logger("stellaorch.test").info("run.created", run_id="r2", dag_id="d")
    first, second = parsed(service_log)
    assert list(first)[:4] == ["timestamp", "level", "event", "logger"]
    assert first["runId"] == "r1" and first["stepId"] == "s" and "absent" not in first
    assert first["level"] == "info" and str(first["timestamp"]).endswith("Z")
    assert second["event"] == "run.created" and second["runId"] == "r2"
    assert second["dagId"] == "d" and second["level"] == "info" and "timestamp" in second


def test_bound_context_fills_gaps_but_a_records_own_fields_win(service_log: io.StringIO) -> None:
    log = logging.getLogger("stellaorch.test")
    with structlog.contextvars.bound_contextvars(trace_id="t-bound", tenant="acme"):
        log.info("inside")
        log.info("own", extra={"trace_id": "t-own"})
    log.info("outside")
    inside, own, outside = parsed(service_log)
    assert inside["traceId"] == "t-bound" and inside["tenant"] == "acme"
    assert own["traceId"] == "t-own"
    assert "traceId" not in outside


def test_redaction_is_applied_to_the_finished_line(service_log: io.StringIO) -> None:
    KNOWN_SECRETS.add([SECRET])
    log = logging.getLogger("stellaorch.test")
    with structlog.contextvars.bound_contextvars(note=f"ctx {SECRET}"):
        log.info("secret.seen", extra={"detail": {"nested": [SECRET]}, "url": "/x?token=abc123"})
    structlog.get_logger("t").info("native", value=SECRET)
    written = service_log.getvalue()
    assert SECRET not in written and "abc123" not in written
    doc, native = parsed(service_log)
    assert doc["note"] == f"ctx {REDACTED}" and doc["detail"] == {"nested": [REDACTED]}
    assert doc["url"] == f"/x?token={REDACTED}" and native["value"] == REDACTED


def test_the_console_view_is_redacted_too() -> None:
    KNOWN_SECRETS.add([SECRET])
    record = logging.makeLogRecord({"msg": "saw %s", "args": (SECRET,), "levelno": 20})
    line = line_formatter(console=True).format(record)
    assert SECRET not in line and REDACTED in line and not line.startswith("{")


def make_provider(path: Path, max_bytes: int) -> TracerProvider:
    provider = TracerProvider(id_generator=tracing._StableIds())
    provider.add_span_processor(SimpleSpanProcessor(tracing.NdjsonSpanExporter(path, max_bytes)))
    return provider


def test_span_file_holds_one_span_per_line_with_derived_ids(tmp_path: Path) -> None:
    path = tmp_path / "spans" / "t.ndjson"
    provider = make_provider(path, 1024 * 1024)
    tracer = provider.get_tracer("t")
    with tracing.forced_ids(0xABC, tracing.run_span_id("r1")):
        root = tracer.start_span("orchestrator.run", attributes={"runId": "r1"})
    root.end()
    parent = tracing.step_parent(f"{0xABC:032x}", "r1")
    tracer.start_span("orchestrator.step", context=parent, attributes={"attempt": 2}).end()
    run_doc, step_doc = (json.loads(line) for line in path.read_text().splitlines())
    assert run_doc["traceId"] == f"{0xABC:032x}" == step_doc["traceId"]
    assert run_doc["spanId"] == f"{tracing.run_span_id('r1'):016x}" == step_doc["parentSpanId"]
    assert run_doc["parentSpanId"] is None and step_doc["attributes"] == {"attempt": 2}
    assert step_doc["endUnixNano"] >= step_doc["startUnixNano"]


def test_span_file_stops_at_its_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    provider = make_provider(path, 2048)
    for _ in range(50):
        provider.get_tracer("t").start_span("s").end()
    lines = path.read_text().splitlines()
    assert 0 < len(lines) < 50 and path.stat().st_size <= 2048
    assert all(json.loads(line)["name"] == "s" for line in lines)  # no line cut in half


def test_an_otlp_endpoint_without_its_exporter_is_a_clear_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otlp(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    with pytest.raises(tracing.TracingConfigError, match="OTLP exporter is not installed"):
        tracing.configure_tracing("t", None, 1024, "http://127.0.0.1:4318/v1/traces")


def test_the_propagator_reads_a_callers_traceparent_and_refuses_a_bad_one() -> None:
    good = tracing.extract(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    ctx = trace.get_current_span(good).get_span_context()
    assert ctx.is_valid and f"{ctx.span_id:016x}" == "00f067aa0ba902b7"
    for bad in ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage", "00-xyz-abc-01"):
        context = tracing.extract({"traceparent": bad})
        assert not trace.get_current_span(context).get_span_context().is_valid
