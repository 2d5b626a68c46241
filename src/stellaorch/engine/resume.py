"""Replays onto a chosen DAG version, and the steps a resumed replay keeps from its original."""

from __future__ import annotations

import json

from stellaorch.domain.errors import DagDisabled, RunNotFound
from stellaorch.domain.resume import ReusedStep, kept_steps
from stellaorch.domain.spec import CompiledDag
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import ReplayOrigin, ReplayTarget, RunRequest
from stellaorch.store import Connection, dags, runs
from stellaorch.store.runs import RunState


def replay_version(conn: Connection, original: RunState, requested: str | None) -> str:
    """The version a replay runs: the one asked for, else the original's while it is enabled,
    else the latest enabled version (where a rollback points); none enabled is a conflict."""
    if requested is not None:
        return requested
    row = dags.get_version(conn, original.tenant, original.dag_id, original.dag_version)
    if row is not None and row.enabled:
        return row.version
    latest = dags.latest_enabled(conn, original.tenant, original.dag_id)
    if latest is None:
        raise DagDisabled(
            f"DAG {original.dag_id} version {original.dag_version} is disabled and no version "
            "of it is enabled; enable one or pass a version"
        )
    return latest.version


def reused_steps(
    conn: Connection, env: EngineEnv, tenant: str, replay_of: str, target: CompiledDag
) -> list[ReusedStep]:
    """The succeeded steps of run `replay_of` that a resumed replay onto `target` keeps."""
    original = runs.get_run(conn, tenant, replay_of)
    if original is None:
        raise RunNotFound(f"run {replay_of} not found")
    before = env.catalog.compiled(conn, tenant, original.dag_id, original.dag_version)
    rows = {r["step_id"]: r for r in runs.list_steps(conn, tenant, replay_of)}
    succeeded = {
        s for s, r in rows.items() if r["status"] == "succeeded" and r["outputs_json"] is not None
    }
    return [
        ReusedStep(s, rows[s]["outputs_json"], rows[s]["outputs_hash"], replay_of)
        for s in kept_steps(before, target, succeeded)
    ]


def replay_request(
    conn: Connection,
    tenant: str,
    run_id: str,
    reason: str,
    origin: ReplayOrigin,
    target: ReplayTarget,
) -> RunRequest:
    """The request that replays run `run_id`: its inputs, on the target's version."""
    original = runs.get_run(conn, tenant, run_id)
    if original is None:
        raise RunNotFound(f"run {run_id} not found")
    return RunRequest(
        tenant=tenant,
        dag_id=original.dag_id,
        inputs=json.loads(original.inputs_json),
        version=replay_version(conn, original, target.version),
        trigger="replay",
        replay_of=run_id,
        run_token=origin.run_token,
        reason=reason,
        actor=origin.actor,
        ticket=origin.ticket,
        idempotency=origin.idempotency,
        resume=target.resume,
    )
