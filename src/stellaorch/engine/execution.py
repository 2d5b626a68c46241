"""The engine's transactions: create, claim, complete, recover, cancel. Each is one unit of work.

These functions run on the store thread inside one transaction (`Database.transact`); the
async services and the worker call them and announce the returned ledger entries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection

from stellaorch.domain.canonical import canonical_json, hash_json
from stellaorch.domain.errors import (
    InputsInvalid,
    QueueDraining,
    RunNotFound,
    RunTokenConflict,
    StellaError,
)
from stellaorch.domain.ledger import GENESIS_HASH, LedgerEntry
from stellaorch.domain.providers import format_utc
from stellaorch.domain.retry import backoff_delay_ms
from stellaorch.domain.spec import CompiledDag, StepSpec
from stellaorch.domain.status import TERMINAL_RUN, AttemptStatus, RunStatus, StepStatus
from stellaorch.domain.templating import substitute
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.quotas import QuotaGate
from stellaorch.engine.records import AuditEntry, IdempotencyClaim, record_audit
from stellaorch.engine.unit import RunUnit
from stellaorch.engine.views import run_summary
from stellaorch.store import blobs, controls, queue, runs
from stellaorch.store.notify import Topic, notify_committed
from stellaorch.store.queue import QueueItem
from stellaorch.store.runs import RunState


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

    run: RunState
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
    params: Mapping[str, Any]
    problem: StellaError | None = None


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as reported by the worker."""

    lease: Lease
    status: AttemptStatus
    outputs: Mapping[str, Any] | None = None
    logs: str = ""
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Completed:
    """What a completion batch did: the entries written and the outcomes refused."""

    entries: list[LedgerEntry]
    rejected: list[Outcome]


# -- create -------------------------------------------------------------------------------
def create_run(conn: Connection, env: EngineEnv, req: RunRequest) -> Created:
    """Create one run (see `create_runs`); errors are raised."""
    result = create_runs(conn, env, [req])[0]
    if isinstance(result, StellaError):
        raise result
    return result


def create_runs(
    conn: Connection, env: EngineEnv, requests: Sequence[RunRequest]
) -> list[Created | StellaError]:
    """Create runs idempotently on (tenant, dagId, runToken), queueing their ready steps.

    Each request is checked before anything of it is written, so one bad request in a batch
    yields its error and leaves the others intact; all are committed in one transaction.
    """
    unit = RunUnit(conn, env)
    tokens = [r.run_token or env.ids.uuid7() for r in requests]
    known = runs.find_by_tokens(
        conn, [(r.tenant, r.dag_id, t) for r, t in zip(requests, tokens, strict=True)]
    )
    draining = controls.draining_tenants(conn, {r.tenant for r in requests})
    results: list[Created | StellaError] = []
    for req, token in zip(requests, tokens, strict=True):
        try:
            _refuse_if_draining(req, (req.tenant, req.dag_id, token), known, draining)
            results.append(_create_one(unit, req, token, known))
        except StellaError as exc:
            results.append(exc)
    entries = unit.flush()
    for req, result in zip(requests, results, strict=True):
        if isinstance(result, Created):
            _keep_records(conn, unit.now, req, result)
    by_run: dict[str, list[LedgerEntry]] = {}
    for entry in entries:
        by_run.setdefault(entry.run_id, []).append(entry)
    return [
        Created(r.run, r.created, by_run.get(r.run.run_id, []) if r.created else [])
        if isinstance(r, Created)
        else r
        for r in results
    ]


def _keep_records(conn: Connection, now_us: int, req: RunRequest, result: Created) -> None:
    """The audit entry of a replay and the answer kept for an Idempotency-Key, in the run's
    own transaction: a crash keeps both or neither."""
    if req.idempotency is not None:
        req.idempotency.save(conn, 201 if result.created else 200, run_summary(result.run))
    if result.created and req.trigger == "replay":
        audit = AuditEntry(
            tenant=req.tenant,
            actor=req.actor or "system",
            action="run.replay",
            target=result.run.run_id,
            reason=req.reason or "",
            ticket=req.ticket,
            details={"replayOf": req.replay_of},
        )
        record_audit(conn, audit, now_us)


def _refuse_if_draining(
    req: RunRequest, key: tuple[str, str, str], known: Mapping[Any, Any], draining: set[str]
) -> None:
    """A draining tenant takes no new runs (a repeated runToken still finds its run)."""
    if req.tenant in draining and key not in known:
        raise QueueDraining(f"the queue of tenant {req.tenant} is draining; resume it first")


def _create_one(
    unit: RunUnit, req: RunRequest, token: str, known: dict[tuple[str, str, str], RunState]
) -> Created:
    """Create one run of a batch; `known` holds the runs already behind each token."""
    inputs_hash = _inputs_hash(req.inputs)
    key = (req.tenant, req.dag_id, token)
    existing = known.get(key)
    if existing is not None:
        if existing.inputs_hash != inputs_hash:
            raise RunTokenConflict(
                f"runToken {token} was already used for DAG {req.dag_id} with other inputs"
            )
        return Created(existing, created=False)
    dag = unit.resolve(req.tenant, req.dag_id, req.version)
    run = _new_run(unit, req, dag, token, inputs_hash)
    known[key] = run
    unit.ensure_tenant(req.tenant)
    unit.record(
        run,
        "run.created",
        RunStatus.QUEUED.value,
        data={
            "dagVersion": run.dag_version,
            "specHash": dag.spec_hash,
            "inputsHash": inputs_hash,
            "runToken": token,
            "trigger": req.trigger,
            "replayOf": req.replay_of,
            **({"reason": req.reason} if req.reason is not None else {}),
            **({"actor": req.actor} if req.actor is not None else {}),
        },
    )
    unit.start_steps(run, dag.roots)
    return Created(run, created=True)


def _new_run(
    unit: RunUnit, req: RunRequest, dag: CompiledDag, token: str, inputs_hash: str
) -> RunState:
    """A queued run with all its steps pending, tracked by the unit for insertion."""
    run = RunState(
        run_id=unit.env.ids.uuid7(),
        tenant=req.tenant,
        dag_id=req.dag_id,
        dag_version=dag.spec.version,
        run_token=token,
        inputs_json=canonical_json(req.inputs),
        inputs_hash=inputs_hash,
        status=RunStatus.QUEUED.value,
        trace_id=req.trace_id or unit.env.ids.trace_id(),
        trigger=req.trigger,
        replay_of=req.replay_of,
        created_us=unit.now,
        started_us=None,
        ended_us=None,
        outputs_hash=None,
        error_json=None,
        open_steps=len(dag.order),
        ledger_seq=0,
        ledger_head=GENESIS_HASH,
    )
    unit.adopt_new(
        run,
        [
            {
                "run_id": run.run_id,
                "step_id": s,
                "tenant": req.tenant,
                "position": i,
                "status": StepStatus.PENDING.value,
                "attempt": 0,
                "deps_remaining": len(dag.predecessors[s]),
            }
            for i, s in enumerate(dag.order)
        ],
    )
    return run


def _inputs_hash(inputs: Any) -> str:
    if not isinstance(inputs, Mapping):
        raise InputsInvalid("run inputs must be a JSON object")
    try:
        return hash_json(inputs)
    except (TypeError, ValueError) as exc:
        raise InputsInvalid(f"run inputs are not valid JSON: {exc}") from exc


# -- claim --------------------------------------------------------------------------------
# A success whose outputs overrun the run's max_run_output_bytes fails with this code.
OUTPUT_LIMIT_EXCEEDED = "OUTPUT_LIMIT_EXCEEDED"
BUSY_RETRY_US = 2_000  # due items whose runs another transaction held: claim again this soon


@dataclass(frozen=True)
class Claimed:
    """Leases granted by a claim, their ledger entries, and when more work falls due."""

    leases: list[Lease]
    entries: list[LedgerEntry]
    next_due_us: int | None = None


def claim(
    conn: Connection, env: EngineEnv, worker_id: str, limit: int, rotation: int = 0
) -> Claimed:
    """Lease up to `limit` due steps, round-robin across tenants, FIFO within each."""
    unit = RunUnit(conn, env)
    claimed = _claim_into(unit, worker_id, limit, rotation)
    return Claimed(claimed.leases, unit.flush(), claimed.next_due_us)


def _claim_into(unit: RunUnit, worker_id: str, limit: int, rotation: int) -> Claimed:
    """The claim's changes, left in `unit` for its caller to flush (entries left empty)."""
    conn, env = unit.conn, unit.env
    only = env.settings.worker_tenants
    tenants = queue.claimable_tenants(conn, only)
    start = rotation % max(1, len(tenants))
    gate = QuotaGate.load(conn, tenants, unit.now, claiming=True)
    gate.release(unit.ended_runs())
    picked = _fair_pick(conn, tenants[start:] + tenants[:start], unit.now, limit, gate)
    free = _within_concurrency(conn, _of_free_runs(unit, picked))
    items = gate.admit(free, unit.runs)
    if not items:
        due = queue.next_due_us(conn, only)
        if len(free) < len(picked):  # due work held back by other transactions: look again soon
            due = min(due or unit.now, unit.now + BUSY_RETRY_US)
        if gate.contended:  # another claim is counting those tenants' quotas
            return Claimed([], [], unit.now + BUSY_RETRY_US)
        return Claimed([], [], _quota_wake(gate, due, unit.now))
    expires = unit.now + int(env.settings.lease_ttl_seconds * 1_000_000)
    grants = [
        {
            "b_id": i.id,
            "b_lease_id": env.ids.lease_id(),
            "b_expires": expires,
            "b_worker": worker_id,
        }
        for i in items
    ]
    queue.grant_leases(conn, grants)
    for item in items:
        unit.assume(item.run_id, item.step_id, StepStatus.QUEUED)
    leases = [
        _start_attempt(unit, item, str(g["b_lease_id"]), worker_id)
        for item, g in zip(items, grants, strict=True)
    ]
    return Claimed(leases, [])


def _quota_wake(gate: QuotaGate, due: int | None, now: int) -> int | None:
    """With tenants over quota, the due items they hold are not due before their room."""
    if not gate.states or due is None or due > now:
        return due
    return gate.wake_us()


def _ready(
    conn: Connection, gate: QuotaGate, tenant: str, now: int, limit: int, after: int
) -> list[QueueItem]:
    """The tenant's next due items, without those of queued runs its quotas hold back."""
    blocked = gate.blocked_dags(tenant)
    if blocked:
        return controls.ready_items_unblocked(conn, tenant, now, limit, after, blocked)
    return queue.ready_items(conn, tenant, now, limit, after)


def _fair_pick(
    conn: Connection, tenants: list[str], now: int, limit: int, gate: QuotaGate
) -> list[QueueItem]:
    """Give each tenant an equal share of the batch; unused shares go to the others."""
    picked: list[QueueItem] = []
    last_id = dict.fromkeys(tenants, 0)
    active = list(tenants)
    while active and len(picked) < limit:
        share = max(1, (limit - len(picked)) // len(active))
        still: list[str] = []
        for tenant in active:
            got = _ready(conn, gate, tenant, now, min(share, limit - len(picked)), last_id[tenant])
            picked.extend(got)
            if len(got) == share:
                last_id[tenant] = got[-1].id
                still.append(tenant)
            if len(picked) >= limit:
                break
        active = still
    return picked


def _of_free_runs(unit: RunUnit, items: list[QueueItem]) -> list[QueueItem]:
    """Lock the items' runs; drop items of runs another transaction holds (it never waits)."""
    unit.load_free(i.run_id for i in items)
    return [i for i in items if i.run_id in unit.runs]


def _within_concurrency(conn: Connection, items: list[QueueItem]) -> list[QueueItem]:
    """Drop items whose step already runs `concurrency` attempts at once."""
    keys = [i.concurrency_key for i in items if i.concurrency_key]
    if not keys:
        return items
    running = queue.reserve_concurrency(conn, keys)
    kept: list[QueueItem] = []
    for item in items:
        key, limit = item.concurrency_key, item.concurrency_limit
        if key and limit:
            if key not in running or running[key] >= limit:
                continue
            running[key] += 1
        kept.append(item)
    return kept


def _start_attempt(unit: RunUnit, item: QueueItem, lease_id: str, worker_id: str) -> Lease:
    """Mark the step running, record the attempt, resolve its parameters."""
    run = unit.runs[item.run_id]
    dag = unit.dag(run)
    step = dag.steps[item.step_id]
    if run.status == RunStatus.QUEUED.value:
        unit.set_run_status(run, RunStatus.RUNNING)
    params, problem = _resolve(unit, run, step, dag.output_refs[item.step_id])
    inputs_hash = hash_json(params) if problem is None else None
    cols: dict[str, Any] = {"attempt": item.attempt, "inputs_hash": inputs_hash}
    if item.attempt == 1:
        cols["started_us"] = unit.now
    unit.set_step_status(
        run,
        item.step_id,
        StepStatus.RUNNING,
        attempt=item.attempt,
        columns=cols,
        data={"workerId": worker_id},
    )
    unit.add_attempt(
        {
            "run_id": run.run_id,
            "step_id": item.step_id,
            "attempt": item.attempt,
            "tenant": run.tenant,
            "lease_id": lease_id,
            "worker_id": worker_id,
            "status": AttemptStatus.RUNNING.value,
            "started_us": unit.now,
            "inputs_hash": inputs_hash,
        }
    )
    return Lease(
        item.id,
        lease_id,
        run.tenant,
        run.run_id,
        run.dag_id,
        run.trace_id,
        item.step_id,
        item.attempt,
        step,
        params,
        problem,
    )


def _resolve(
    unit: RunUnit, run: RunState, step: StepSpec, refs: Sequence[str]
) -> tuple[Mapping[str, Any], StellaError | None]:
    """Substitute inputs and upstream outputs into the step's parameters."""
    if not step.params:
        return {}, None
    outputs: dict[str, Any] = {}
    if refs:
        stored = runs.step_outputs(unit.conn, run.run_id, refs)
        outputs = {sid: json.loads(text) for sid, text in stored.items()}
    try:
        resolved = substitute(step.params, inputs=json.loads(run.inputs_json), outputs=outputs)
        return dict(resolved), None
    except StellaError as exc:
        return {}, exc


# -- complete -----------------------------------------------------------------------------
def complete(conn: Connection, env: EngineEnv, outcomes: Sequence[Outcome]) -> Completed:
    """Record attempt outcomes for current leases; refuse the others. One transaction."""
    unit = RunUnit(conn, env)
    rejected = _complete_into(unit, outcomes)
    return Completed(unit.flush(), rejected)


def _complete_into(unit: RunUnit, outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes' changes, left in `unit` for its caller to flush; returns the refused."""
    conn = unit.conn
    unit.load(o.lease.run_id for o in outcomes)  # runs first, then their queue items
    held = queue.current_leases(conn, [o.lease.queue_id for o in outcomes])
    fresh: list[Outcome] = []
    rejected: list[Outcome] = []
    for o in outcomes:
        if held.get(o.lease.queue_id) == o.lease.lease_id:
            held.pop(o.lease.queue_id)  # a lease completes once, even within one batch
            fresh.append(o)
        else:
            rejected.append(o)
    for o in fresh:
        unit.assume(o.lease.run_id, o.lease.step_id, StepStatus.RUNNING)
    unit.preload_successors(
        (o.lease.run_id, o.lease.step_id) for o in fresh if o.status is AttemptStatus.SUCCEEDED
    )
    for outcome in fresh:
        run = unit.runs[outcome.lease.run_id]
        if run.status in _TERMINAL_RUN_VALUES:
            rejected.append(outcome)
        elif outcome.status is AttemptStatus.SUCCEEDED:
            _succeed(unit, run, outcome)
        else:
            _attempt_failed(unit, run, outcome)
    return rejected


def _logs_ref(unit: RunUnit, run: RunState, logs: str) -> str | None:
    if not logs:
        return None
    return blobs.put_blob(unit.conn, run.tenant, logs.encode("utf-8"), "text/plain", unit.now)


def _over_budget(unit: RunUnit, run: RunState, outcome: Outcome, size: int) -> Outcome | None:
    """The failed outcome that replaces a success whose outputs overrun the run's budget."""
    limit = unit.env.settings.max_run_output_bytes
    if run.output_bytes + size <= limit:
        return None
    message = (
        f"step outputs of {size} bytes would bring the run's stored outputs to "
        f"{run.output_bytes + size} bytes, over the limit of {limit}; use an artifact"
    )
    error = {"code": OUTPUT_LIMIT_EXCEEDED, "message": message, "retryable": False}
    return replace(outcome, status=AttemptStatus.FAILED, outputs=None, error=error)


def _succeed(unit: RunUnit, run: RunState, outcome: Outcome) -> None:
    lease = outcome.lease
    outputs = dict(outcome.outputs or {})
    outputs_json = canonical_json(outputs)
    size = len(outputs_json.encode("utf-8"))
    refused = _over_budget(unit, run, outcome, size)
    if refused is not None:
        # Not retryable: the run's earlier outputs never shrink, a retry could only fail again.
        _attempt_failed(unit, run, refused)
        return
    run.output_bytes += size
    outputs_hash = hash_json(outputs)
    logs_ref = _logs_ref(unit, run, outcome.logs)
    unit.set_attempt(
        run.run_id,
        lease.step_id,
        lease.attempt,
        status="succeeded",
        ended_us=unit.now,
        outputs_hash=outputs_hash,
        logs_ref=logs_ref,
    )
    unit.set_step_status(
        run,
        lease.step_id,
        StepStatus.SUCCEEDED,
        attempt=lease.attempt,
        columns={
            "outputs_json": outputs_json,
            "outputs_hash": outputs_hash,
            "logs_ref": logs_ref,
            "error_json": None,
        },
        data={"outputsHash": outputs_hash},
    )
    unit.record_outputs(run.run_id, lease.step_id, outputs_hash)
    unit.dequeue(lease.queue_id)
    unit.start_steps(run, unit.satisfy(run, lease.step_id))


def _attempt_failed(unit: RunUnit, run: RunState, outcome: Outcome) -> None:
    lease = outcome.lease
    error = dict(outcome.error or {"code": "STEP_FAILED", "message": "", "retryable": False})
    unit.set_attempt(
        run.run_id,
        lease.step_id,
        lease.attempt,
        status=outcome.status.value,
        ended_us=unit.now,
        logs_ref=_logs_ref(unit, run, outcome.logs),
        error_json=canonical_json(error),
    )
    _retry_or_fail(unit, run, lease.queue_id, lease.step_id, lease.attempt, error, outcome.status)


def _retry_or_fail(
    unit: RunUnit,
    run: RunState,
    queue_id: int,
    step_id: str,
    attempt: int,
    error: dict[str, Any],
    attempt_status: AttemptStatus,
) -> None:
    """Queue the next attempt after backoff, or fail the step and with it the run."""
    policy = unit.dag(run).steps[step_id].retry
    if _may_retry(unit, run.run_id, step_id, attempt, error, attempt_status):
        delay_ms = (
            0
            if attempt_status is AttemptStatus.LOST
            else backoff_delay_ms(policy, attempt, unit.env.rng)
        )
        eligible = unit.now + delay_ms * 1000
        unit.requeue(queue_id, run.run_id, attempt + 1, eligible)
        unit.set_step_status(
            run,
            step_id,
            StepStatus.QUEUED,
            attempt=attempt + 1,
            event="retrying",
            columns={"error_json": canonical_json(error)},
            data={
                "error": error,
                "attemptStatus": attempt_status.value,
                "nextEligibleUtc": format_utc(eligible),
            },
        )
        return
    unit.dequeue(queue_id)
    unit.set_step_status(
        run,
        step_id,
        StepStatus.FAILED,
        attempt=attempt,
        columns={"error_json": canonical_json(error)},
        data={"error": error, "attemptStatus": attempt_status.value},
    )
    unit.terminate(run, RunStatus.FAILED, {"error": {**error, "stepId": step_id}})


def _may_retry(
    unit: RunUnit,
    run_id: str,
    step_id: str,
    attempt: int,
    error: Mapping[str, Any],
    attempt_status: AttemptStatus,
) -> bool:
    """Retryable errors retry up to maxAttempts; lost attempts do not use up that budget."""
    lost = attempt_status is AttemptStatus.LOST
    if not (error.get("retryable") or lost):
        return False
    run = unit.runs[run_id]
    max_attempts = unit.dag(run).steps[step_id].retry.max_attempts
    if attempt < max_attempts:
        return True
    earlier_lost = runs.lost_count(unit.conn, run_id, step_id)
    allowance = min(earlier_lost + (1 if lost else 0), unit.env.settings.lost_attempt_limit)
    return attempt < max_attempts + allowance


def complete_and_claim(
    conn: Connection,
    env: EngineEnv,
    outcomes: Sequence[Outcome],
    worker_id: str,
    limit: int,
    rotation: int = 0,
) -> tuple[Completed, Claimed]:
    """Record outcomes, then lease more work in the same transaction (one commit, not two).

    Other processes' workers are woken only when queued work may be left for them: waking
    them for a successor this transaction leased itself costs every one of them a claim.
    """
    # One unit for both halves: the run rows and the ledger are written once, not twice.
    unit = RunUnit(conn, env)
    unit.announce_work = False
    rejected = _complete_into(unit, outcomes)
    claimed = Claimed([], [])
    if limit > 0:
        unit.settle()
        claimed = _claim_into(unit, worker_id, limit, rotation)
    entries = unit.flush()
    # Fewer leases than room means the claim took every due item it may serve.
    took_all = limit > 0 and len(claimed.leases) < limit and not env.settings.worker_tenants
    if unit.queued_work and not took_all:
        notify_committed(conn, Topic.WORK)
    return Completed(entries, rejected), claimed


# -- recover and release ------------------------------------------------------------------
def recover(
    conn: Connection, env: EngineEnv, lease_ids: Sequence[str] | None = None, limit: int = 500
) -> list[LedgerEntry]:
    """Expired leases (or the given ones, at shutdown) become `lost` attempts, then retry."""
    unit = RunUnit(conn, env)
    if lease_ids is None:
        found = queue.expired_leases(conn, unit.now, limit)
    else:
        found = queue.leases_by_id(conn, lease_ids)
    unit.load(row[3] for row in found)  # runs first, then their queue items
    found = queue.lock_leases(conn, found, unit.now if lease_ids is None else None)
    unit.preload((row[3], row[4]) for row in found)
    for queue_id, _lease, _tenant, run_id, step_id, attempt in found:
        run = unit.runs[run_id]
        if run.status in _TERMINAL_RUN_VALUES:
            continue
        error = {
            "code": "LEASE_EXPIRED",
            "retryable": True,
            "message": "the worker holding the lease stopped heartbeating",
        }
        unit.set_attempt(
            run_id,
            step_id,
            attempt,
            status=AttemptStatus.LOST.value,
            ended_us=unit.now,
            error_json=canonical_json(error),
        )
        _retry_or_fail(unit, run, queue_id, step_id, attempt, error, AttemptStatus.LOST)
    return unit.flush()


def heartbeat(conn: Connection, env: EngineEnv, lease_ids: Sequence[str]) -> set[str]:
    """Extend the given leases; returns those still current (the rest were revoked)."""
    expires = env.clock.now_us() + int(env.settings.lease_ttl_seconds * 1_000_000)
    return queue.extend_leases(conn, lease_ids, expires)


# -- cancel -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cancelled:
    """The run after a cancel request; `rejected` when it had already ended."""

    run: RunState
    rejected: bool
    entries: list[LedgerEntry]


def cancel_run(
    conn: Connection, env: EngineEnv, tenant: str, run_id: str, reason: str | None
) -> Cancelled:
    """Cancel a run: queued steps at once, running attempts revoked (their workers stop them)."""
    found = runs.get_run(conn, tenant, run_id)
    if found is None:
        raise RunNotFound(f"run {run_id} not found")
    unit = RunUnit(conn, env)
    unit.load([run_id])
    run = unit.runs[run_id]
    if run.status in _TERMINAL_RUN_VALUES:
        return Cancelled(run, True, [])
    unit.terminate(run, RunStatus.CANCELLED, {"reason": reason or "cancelled by request"})
    return Cancelled(run, False, unit.flush())


_TERMINAL_RUN_VALUES = frozenset(s.value for s in TERMINAL_RUN)
