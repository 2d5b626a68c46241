"""The create transaction: new runs, idempotent on (tenant, dagId, runToken)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stellaorch.domain.canonical import canonical_json, hash_json
from stellaorch.domain.errors import InputsInvalid, QueueDraining, RunTokenConflict, StellaError
from stellaorch.domain.ledger import GENESIS_HASH, LedgerEntry
from stellaorch.domain.spec import CompiledDag
from stellaorch.domain.status import RunStatus
from stellaorch.domain.transitions import RunRecord
from stellaorch.engine import resume
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import AuditEntry, record_audit
from stellaorch.engine.requests import Created, RunRequest
from stellaorch.engine.txn import Txn
from stellaorch.engine.views import run_summary
from stellaorch.store import Connection, controls, runs

RunKey = tuple[str, str, str]  # (tenant, dag_id, run_token)


def create_runs(
    conn: Connection, env: EngineEnv, requests: Sequence[RunRequest]
) -> list[Created | StellaError]:
    """Create runs idempotently on (tenant, dagId, runToken), queueing their ready steps.

    Each request is checked before anything of it is written, so one bad request in a batch
    yields its error and leaves the others intact; all are committed in one transaction.
    """
    txn = Txn(conn, env)
    tokens = [r.run_token or env.ids.uuid7() for r in requests]
    keys = [(r.tenant, r.dag_id, t) for r, t in zip(requests, tokens, strict=True)]
    known = runs.find_by_tokens(conn, keys)
    draining = controls.draining_tenants(conn, {r.tenant for r in requests})
    results: list[Created | StellaError] = []
    for req, key in zip(requests, keys, strict=True):
        try:
            if req.tenant in draining and key not in known:
                raise QueueDraining(
                    f"the queue of tenant {req.tenant} is draining; resume it first"
                )
            results.append(_create_one(txn, req, key, known))
        except StellaError as exc:
            results.append(exc)
    by_run: dict[str, list[LedgerEntry]] = {}
    for entry in txn.flush():
        by_run.setdefault(entry.run_id, []).append(entry)
    for req, result in zip(requests, results, strict=True):
        if isinstance(result, Created):
            _keep_records(conn, txn.now, req, result)
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
            details={
                "replayOf": req.replay_of,
                "dagVersion": result.run.dag_version,
                "resume": req.resume,
            },
        )
        record_audit(conn, audit, now_us)


def _create_one(txn: Txn, req: RunRequest, key: RunKey, known: dict[RunKey, RunRecord]) -> Created:
    """Create one run of a batch; `known` holds the runs already behind each token."""
    inputs_hash = _inputs_hash(req.inputs)
    existing = known.get(key)
    if existing is not None:
        if existing.inputs_hash != inputs_hash:
            raise RunTokenConflict(
                f"runToken {key[2]} was already used for DAG {req.dag_id} with other inputs"
            )
        if req.version is not None and existing.dag_version != str(req.version):
            raise RunTokenConflict(
                f"runToken {key[2]} was already used for DAG {req.dag_id} version "
                f"{existing.dag_version} (run {existing.run_id}), not version {req.version}; "
                "use a new runToken"
            )
        return Created(existing, created=False)
    dag = txn.resolve(req.tenant, req.dag_id, req.version)
    run = _new_run(txn, req, dag, key[2], inputs_hash)
    known[key] = run
    txn.ensure_tenant(req.tenant)
    data = {
        "dagVersion": run.dag_version,
        "specHash": dag.spec_hash,
        "inputsHash": inputs_hash,
        "runToken": key[2],
        "trigger": req.trigger,
        "replayOf": req.replay_of,
        **({"reason": req.reason} if req.reason is not None else {}),
        **({"actor": req.actor} if req.actor is not None else {}),
    }
    reused = []
    if req.resume and req.replay_of is not None:
        reused = resume.reused_steps(txn.conn, txn.env, req.tenant, req.replay_of, dag)
    txn.machine.create(run, dag, data, reused)
    return Created(run, created=True)


def _new_run(
    txn: Txn, req: RunRequest, dag: CompiledDag, token: str, inputs_hash: str
) -> RunRecord:
    """A queued run record, before any step of it started."""
    return RunRecord(
        run_id=txn.env.ids.uuid7(),
        tenant=req.tenant,
        dag_id=req.dag_id,
        dag_version=dag.spec.version,
        run_token=token,
        inputs_json=canonical_json(req.inputs),
        inputs_hash=inputs_hash,
        status=RunStatus.QUEUED.value,
        trace_id=req.trace_id or txn.env.ids.trace_id(),
        trigger=req.trigger,
        replay_of=req.replay_of,
        created_us=txn.now,
        started_us=None,
        ended_us=None,
        outputs_hash=None,
        error_json=None,
        open_steps=len(dag.order),
        ledger_seq=0,
        ledger_head=GENESIS_HASH,
    )


def _inputs_hash(inputs: Any) -> str:
    if not isinstance(inputs, Mapping):
        raise InputsInvalid("run inputs must be a JSON object")
    try:
        return hash_json(inputs)
    except (TypeError, ValueError) as exc:
        raise InputsInvalid(f"run inputs are not valid JSON: {exc}") from exc
