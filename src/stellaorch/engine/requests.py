"""What callers hand the engine's transaction scripts, and what the scripts hand back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stellaorch.domain.errors import StellaError
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.secrets import NO_SECRETS, ResolvedSecrets
from stellaorch.domain.spec import StepSpec
from stellaorch.domain.status import AttemptStatus
from stellaorch.domain.transitions import RunRecord
from stellaorch.engine.records import IdempotencyClaim


@dataclass(frozen=True)
class RunRequest:
    """What it takes to start a run."""

    tenant: str
    dag_id: str
    inputs: Mapping[str, Any]
    run_token: str | None = None
    version: str | None = None
    trigger: str = "api"
    replay_of: str | None = None
    trace_id: str | None = None  # adopted from the caller's traceparent when there is one
    reason: str | None = None  # why an operator asked for it (replays): ledger and audit
    actor: str | None = None
    ticket: str | None = None
    idempotency: IdempotencyClaim | None = None  # its answer is kept in the same transaction
    resume: bool = False  # a replay keeps the unchanged steps that succeeded in `replay_of`


@dataclass(frozen=True)
class ReplayTarget:
    """Where a replay runs: a DAG version (None: the original's, or the latest enabled when
    it is disabled), and whether it resumes from the failed step."""

    version: str | None = None
    resume: bool = False


@dataclass(frozen=True)
class ReplayOrigin:
    """Who asked for a replay, under which ticket and Idempotency-Key."""

    actor: str | None = None
    ticket: str | None = None
    run_token: str | None = None
    idempotency: IdempotencyClaim | None = None


@dataclass(frozen=True)
class Created:
    """A run and whether this request created it (False: an earlier identical request did)."""

    run: RunRecord
    created: bool
    entries: list[LedgerEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Lease:
    """A step attempt leased to a worker, with its parameters resolved."""

    queue_id: int
    lease_id: str
    tenant: str
    run_id: str
    dag_id: str
    trace_id: str
    step_id: str
    attempt: int
    step: StepSpec
    params: Mapping[str, Any] = field(repr=False)  # may hold secret values
    problem: StellaError | None = None
    secrets: ResolvedSecrets = NO_SECRETS


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as reported by the worker."""

    lease: Lease
    status: AttemptStatus
    outputs: Mapping[str, Any] | None = None
    logs: str = ""
    error: Mapping[str, Any] | None = None
    # `PluginIdentity.as_json()` of the code that ran; None when none was loaded.
    plugin: Mapping[str, Any] | None = None
    # The attempt's resource metrics document (`engine.step_metrics`); None: not measured.
    metrics: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Completed:
    """What a completion batch did: the entries written and the outcomes refused."""

    entries: list[LedgerEntry]
    rejected: list[Outcome]


@dataclass(frozen=True)
class Claimed:
    """Leases granted by a claim, their ledger entries, and when more work falls due."""

    leases: list[Lease]
    entries: list[LedgerEntry]
    next_due_us: int | None = None


@dataclass(frozen=True)
class Cancelled:
    """The run after a cancel request; `rejected` when it had already ended."""

    run: RunRecord
    rejected: bool
    entries: list[LedgerEntry]
