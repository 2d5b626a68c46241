"""Structured log lines per event type, and the trace tree of a run with a retry (issue 15)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stellaorch.observability import tracing
from stellaorch.observability.logs import line_formatter

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, spec  # noqa: E402

A = "acme"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The captured records of `event`, rendered by the service formatter and parsed."""
    formatter = line_formatter()
    docs = [json.loads(formatter.format(r)) for r in caplog.records]
    return [d for d in docs if d["event"] == event]


def common(doc: dict[str, Any], level: str = "info") -> None:
    assert doc["level"] == level
    assert doc["timestamp"].endswith("Z") and "T" in doc["timestamp"]


async def test_each_request_has_one_access_line_with_its_route_and_trace(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    headers = {**api.headers(A), "traceparent": CALLER}
    response = await api.client.get(
        f"{BASE}/runs/00000000-0000-7000-8000-000000000000", headers=headers
    )
    assert response.status_code == 404
    [doc] = lines(caplog, "request")
    common(doc)
    assert doc["method"] == "GET" and doc["status"] == 404
    assert doc["route"] == f"{BASE}/runs/{{runId}}"  # the template, never the raw id
    assert doc["traceId"] == CALLER_TRACE == response.json()["error"]["traceId"]
    assert isinstance(doc["durationMs"], float) and doc["durationMs"] >= 0
    # Lines logged while the request was served carry its trace id too.
    [failed] = lines(caplog, "request.failed")
    assert failed["traceId"] == CALLER_TRACE and failed["code"] == "RUN_NOT_FOUND"


async def test_state_changes_are_info_lines_and_a_failure_names_code_and_step(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    failing = {"id": "boom", "plugin": "fail", "with": {"retryable": False, "code": "BROKE"}}
    await api.publish(
        A, spec("breaks", [{"id": "ok", "plugin": "noop"}, failing], [("ok", "boom")])
    )
    api.start_worker()
    run = await api.start(A, "breaks")
    assert await api.wait(A, run["runId"]) == "failed"
    context = {"tenant": A, "dagId": "breaks", "runId": run["runId"], "traceId": run["traceId"]}
    [created] = lines(caplog, "run.created")
    assert context.items() <= created.items() and "stepId" not in created
    step_done = [d for d in lines(caplog, "step.succeeded") if d.get("stepId") == "ok"]
    assert len(step_done) == 1 and context.items() <= step_done[0].items()
    common(step_done[0])
    [failed] = lines(caplog, "run.failed")
    common(failed)
    assert context.items() <= failed.items()
    assert failed["status"] == "failed" and failed["errorCode"] == "BROKE"
    assert failed["stepId"] == "boom"


async def test_admin_actions_are_logged_with_actor_reason_and_ticket(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    headers = {**api.headers(A, reason="maintenance window"), "X-Stella-Operator-Ticket": "OPS-7"}
    response = await api.client.post(f"{BASE}/queues/{A}:pause", headers=headers)
    assert response.status_code == 200, response.text
    [doc] = lines(caplog, "admin.action")
    common(doc)
    assert doc["action"] == "queue.pause" and doc["target"] == f"queue:{A}"
    assert doc["actor"] == "alice" and doc["tenant"] == A
    assert doc["reason"] == "maintenance window" and doc["ticket"] == "OPS-7"
    refused = await api.client.post(f"{BASE}/queues/{A}:drain", headers=api.headers(A, reason=None))
    assert refused.status_code == 400
    assert len(lines(caplog, "admin.action")) == 1  # nothing done, nothing logged


async def test_a_run_cancel_is_logged_with_who_and_why(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await api.publish(A, spec("idle", [{"id": "s", "plugin": "noop"}]))
    run = await api.start(A, "idle")  # no worker: it stays queued
    headers = {**api.headers(A), "X-Stella-Operator-Ticket": "INC-9"}
    response = await api.client.post(
        f"{BASE}/runs/{run['runId']}:cancel", json={"reason": "wrong inputs"}, headers=headers
    )
    assert response.status_code == 200 and not response.json()["cancelRejected"]
    [doc] = [d for d in lines(caplog, "admin.action") if d["action"] == "run.cancel"]
    assert doc["target"] == f"run:{run['runId']}"
    assert (doc["actor"], doc["reason"], doc["ticket"]) == ("alice", "wrong inputs", "INC-9")
    [cancelled] = lines(caplog, "run.cancelled")
    assert cancelled["runId"] == run["runId"] and cancelled["status"] == "cancelled"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This test's spans, in memory (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=tracing._StableIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


def hexes(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = f"{span.parent.span_id:016x}" if span.parent else None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", parent


async def test_a_run_with_a_retry_is_one_tree_under_the_callers_traceparent(
    api: Api, spans: InMemorySpanExporter
) -> None:
    flaky = {
        "id": "flaky",
        "plugin": "fail",
        "with": {"retryable": True, "code": "FLAKY", "untilAttempt": 2},
        "retry": {"maxAttempts": 3, "backoff": {"initialMs": 10, "factor": 2, "jitter": 0}},
    }
    show = {
        "id": "show",
        "plugin": "script",
        "with": {"command": ["sh", "-c", "echo $TRACEPARENT"]},
    }
    steps = [{"id": "first", "plugin": "noop"}, flaky, show]
    await api.publish(A, spec("traced", steps, [("first", "flaky"), ("flaky", "show")]))
    api.start_worker()
    response = await api.client.post(
        f"{BASE}/runs",
        json={"dagId": "traced", "inputs": {}},
        headers={**api.headers(A), "traceparent": CALLER},
    )
    assert response.status_code in (200, 201), response.text
    run = response.json()
    assert run["traceId"] == CALLER_TRACE
    assert await api.wait(A, run["runId"]) == "completed"
    logs = await api.get_json(A, f"/runs/{run['runId']}/steps/show/logs")
    await api.stop_worker()

    finished = spans.get_finished_spans()
    by_id = {hexes(s)[1]: s for s in finished}
    assert all(hexes(s)[0] == CALLER_TRACE for s in finished if s.name.startswith("orchestrator"))
    [run_span] = [s for s in finished if s.name == "orchestrator.run"]
    assert run_span.attributes is not None and run_span.attributes["runId"] == run["runId"]
    # run span -> the POST /runs server span -> the caller's span, the root's parent
    server = by_id[hexes(run_span)[2] or ""]
    assert server.name == f"POST {BASE}/runs" and hexes(server)[2] == CALLER_SPAN
    step_spans = [s for s in finished if s.name == "orchestrator.step"]
    seen = sorted(
        (str(s.attributes["stepId"]), s.attributes["attempt"], s.attributes["outcome"])
        for s in step_spans
        if s.attributes
    )
    assert seen == [
        ("first", 1, "succeeded"),
        ("flaky", 1, "failed"),
        ("flaky", 2, "succeeded"),
        ("show", 1, "succeeded"),
    ]
    assert {hexes(s)[2] for s in step_spans} == {hexes(run_span)[1]}
    assert all(
        s.attributes and str(s.attributes["plugin"]).startswith(("noop", "fail", "script"))
        for s in step_spans
    )
    [show_span] = [s for s in step_spans if s.attributes and s.attributes["stepId"] == "show"]
    printed = [item["line"] for item in logs["items"]]
    assert printed == [f"00-{CALLER_TRACE}-{hexes(show_span)[1]}-01"]
