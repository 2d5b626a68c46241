"""What the run lifecycle works on and hands to the store: run records, facts, transitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stellaorch.domain.ledger import LedgerEntry

StepKey = tuple[str, str]  # (run_id, step_id)
AttemptKey = tuple[str, str, int]  # (run_id, step_id, attempt)


@dataclass
class RunRecord:
    """A run row as one transaction sees it; the lifecycle changes it, the store writes it."""

    run_id: str
    tenant: str
    dag_id: str
    dag_version: str
    run_token: str
    inputs_json: str
    inputs_hash: str
    status: str
    trace_id: str
    trigger: str
    replay_of: str | None
    created_us: int
    started_us: int | None
    ended_us: int | None
    outputs_hash: str | None
    error_json: str | None
    open_steps: int
    ledger_seq: int
    ledger_head: str
    # bytes of step outputs the run has stored, checked against max_run_output_bytes
    output_bytes: int = 0


@dataclass(frozen=True)
class Limits:
    """The settings the lifecycle's decisions depend on."""

    max_run_output_bytes: int
    lost_attempt_limit: int


@dataclass(frozen=True)
class StepFact:
    """A step's stored status and how many of its predecessors have not succeeded yet."""

    status: str
    deps_remaining: int


@dataclass(frozen=True)
class EndFacts:
    """What ending a run needs from the store: its open steps, leases and running attempts."""

    open_steps: Sequence[tuple[str, str]]  # (step_id, stored status), in DAG order
    leased_steps: frozenset[str]  # steps with a leased queue item
    running_attempts: Sequence[tuple[str, int]]  # (step_id, attempt) still running


@dataclass
class Transitions:
    """Everything one batch of events changed, for the store writer to apply in one go.

    Queue and step/attempt rows can be applied early (a claim in the same transaction reads
    them); runs and ledger entries are applied once, at the end of the transaction.
    """

    new_runs: list[RunRecord] = field(default_factory=list)
    new_steps: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[StepKey, dict[str, Any]] = field(default_factory=dict)
    new_attempts: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[AttemptKey, dict[str, Any]] = field(default_factory=dict)
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    requeue: list[dict[str, Any]] = field(default_factory=list)  # b_id, b_attempt, b_available
    dequeue: list[int] = field(default_factory=list)
    drop_run_items: list[str] = field(default_factory=list)  # runs whose queue items all go
    entries: list[LedgerEntry] = field(default_factory=list)
    saved_runs: list[RunRecord] = field(default_factory=list)

    @property
    def queued_work(self) -> bool:
        """Whether applying these makes work claimable."""
        return bool(self.enqueue or self.requeue)


def group_by_shape(
    changes: Mapping[tuple[Any, ...], Mapping[str, Any]], key_names: tuple[str, ...]
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Row changes grouped by the columns they touch (one batched statement per shape)."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for key, cols in changes.items():
        params = dict(zip(key_names, key, strict=True))
        params.update({f"v_{c}": v for c, v in cols.items()})
        grouped.setdefault(tuple(sorted(cols)), []).append(params)
    return grouped
