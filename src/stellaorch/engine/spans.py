"""The engine's spans: `orchestrator.run` when a run is admitted, `orchestrator.step` per attempt.

A run span takes the id derived from its run id and is parented on whatever span is current
(the API's server span, itself a child of the caller's `traceparent`); a step span, made in a
worker from nothing but its lease, is parented on that derived id and takes the attempt's
own derived id, so the `traceparent` a plugin is handed names the step span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace

from stellaorch.domain.transitions import RunRecord
from stellaorch.engine.requests import Lease
from stellaorch.observability import tracing


def run_admitted(run: RunRecord) -> None:
    """Record the `orchestrator.run` span of a run just created (its steps hang under it)."""
    trace_id = int(run.trace_id, 16)
    current = trace.get_current_span().get_span_context()
    # A span of another trace (or none) is current: the run span is the root of its own trace.
    same_trace = current.is_valid and current.trace_id == trace_id
    parent = None if same_trace else trace.set_span_in_context(trace.INVALID_SPAN)
    attributes = {"tenant": run.tenant, "dagId": run.dag_id, "runId": run.run_id}
    with tracing.forced_ids(trace_id, tracing.run_span_id(run.run_id)):
        span = tracing.project_tracer().start_span(
            "orchestrator.run",
            context=parent,
            attributes=attributes,
            start_time=run.created_us * 1000,
        )
    span.end()


@contextlib.contextmanager
def step_span(lease: Lease, span_id: str) -> Iterator[trace.Span]:
    """The attempt's `orchestrator.step` span, current while the block runs."""
    parent = tracing.step_parent(lease.trace_id, lease.run_id)
    attributes: dict[str, str | int] = {
        "tenant": lease.tenant,
        "dagId": lease.dag_id,
        "runId": lease.run_id,
        "stepId": lease.step_id,
        "attempt": lease.attempt,
        "plugin": lease.step.plugin,
    }
    with tracing.forced_ids(None, int(span_id, 16)):
        span = tracing.project_tracer().start_span(
            "orchestrator.step", context=parent, attributes=attributes
        )
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        yield span
