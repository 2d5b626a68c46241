"""The claim transaction: lease due steps, round-robin across tenants, FIFO within each."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stellaorch.domain.canonical import hash_json
from stellaorch.domain.errors import StellaError
from stellaorch.domain.secrets import NO_SECRETS, ResolvedSecrets
from stellaorch.domain.spec import StepSpec
from stellaorch.domain.status import StepStatus
from stellaorch.domain.templating import substitute
from stellaorch.domain.transitions import RunRecord
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.quotas import QuotaGate
from stellaorch.engine.requests import Claimed, Lease
from stellaorch.engine.txn import Txn
from stellaorch.store import Connection, controls, queue, runs
from stellaorch.store.queue import QueueItem

BUSY_RETRY_US = 2_000  # due items whose runs another transaction held: claim again this soon


def claim(
    conn: Connection, env: EngineEnv, worker_id: str, limit: int, rotation: int = 0
) -> Claimed:
    """Lease up to `limit` due steps, round-robin across tenants, FIFO within each."""
    txn = Txn(conn, env)
    claimed = claim_into(txn, worker_id, limit, rotation)
    return Claimed(claimed.leases, txn.flush(), claimed.next_due_us)


def claim_into(txn: Txn, worker_id: str, limit: int, rotation: int) -> Claimed:
    """The claim's events, left in `txn` for its caller to flush (entries left empty)."""
    conn, env, now = txn.conn, txn.env, txn.now
    only = env.settings.worker_tenants
    tenants = queue.claimable_tenants(conn, only)
    start = rotation % max(1, len(tenants))
    gate = QuotaGate.load(conn, tenants, now, claiming=True)
    gate.release(txn.machine.ended_runs())
    picked = _fair_pick(conn, tenants[start:] + tenants[:start], now, limit, gate)
    txn.load_free(i.run_id for i in picked)
    free = _within_concurrency(conn, [i for i in picked if i.run_id in txn.machine.runs])
    items = gate.admit(free, txn.machine.runs)
    if not items:
        due = queue.next_due_us(conn, only)
        if len(free) < len(picked):  # due work held back by other transactions: look again soon
            due = min(due or now, now + BUSY_RETRY_US)
        if gate.contended:  # another claim is counting those tenants' quotas
            return Claimed([], [], now + BUSY_RETRY_US)
        return Claimed([], [], _quota_wake(gate, due, now))
    expires = now + int(env.settings.lease_ttl_seconds * 1_000_000)
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
    leases = []
    for item, grant in zip(items, grants, strict=True):
        txn.machine.assume(item.run_id, item.step_id, StepStatus.QUEUED)
        leases.append(_start_attempt(txn, item, str(grant["b_lease_id"]), worker_id))
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


def _start_attempt(txn: Txn, item: QueueItem, lease_id: str, worker_id: str) -> Lease:
    """Start the attempt in the lifecycle and resolve the step's parameters."""
    run = txn.machine.runs[item.run_id]
    dag = txn.machine.dag(run.run_id)
    step = dag.steps[item.step_id]
    problem = txn.env.catalog.signer_problem(txn.conn, run.tenant, run.dag_id, run.dag_version)
    secrets = NO_SECRETS
    if problem is None:
        secrets, problem = _secrets(txn, run.tenant, dag.secret_refs[item.step_id])
    params: Mapping[str, Any] = {}
    inputs_hash = None
    if problem is None:
        params, inputs_hash, problem = _resolve(
            txn, run, step, dag.output_refs[item.step_id], secrets
        )
    txn.machine.start_attempt(
        run.run_id,
        item.step_id,
        item.attempt,
        lease_id=lease_id,
        worker_id=worker_id,
        inputs_hash=inputs_hash,
        secret_versions=secrets.versions,
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
        secrets,
    )


def _secrets(
    txn: Txn, tenant: str, names: Sequence[str]
) -> tuple[ResolvedSecrets, StellaError | None]:
    """The current version of each secret the step references (the ledger names them)."""
    if not names:
        return NO_SECRETS, None
    try:
        return txn.env.vault.resolve(txn.conn, tenant, names), None
    except StellaError as exc:
        return NO_SECRETS, exc


def _resolve(
    txn: Txn, run: RunRecord, step: StepSpec, refs: Sequence[str], secrets: ResolvedSecrets
) -> tuple[Mapping[str, Any], str | None, StellaError | None]:
    """Substitute inputs, upstream outputs and secrets into the step's parameters.

    Returns the parameters, their hash and the problem, if any. The hash is taken with each
    secret standing in as `<secret name@version>`: it changes with the version, and never
    depends on (nor reveals anything of) a value.
    """
    if not step.params:
        return {}, hash_json({}), None
    texts: dict[str, str] = {}
    for ref in refs:
        text = txn.machine.outputs_json(run.run_id, ref)
        if text is not None:
            texts[ref] = text
    missing = [ref for ref in refs if ref not in texts]
    if missing:
        texts.update(runs.step_outputs(txn.conn, run.run_id, missing))
    outputs = {sid: json.loads(text) for sid, text in texts.items()}
    inputs = json.loads(run.inputs_json)
    try:
        resolved = dict(
            substitute(step.params, inputs=inputs, outputs=outputs, secrets=secrets.values)
        )
        if not secrets:
            return resolved, hash_json(resolved), None
        marks = {name: f"<secret {name}@{v}>" for name, v in secrets.versions.items()}
        stand_in = substitute(step.params, inputs=inputs, outputs=outputs, secrets=marks)
        return resolved, hash_json(stand_in), None
    except StellaError as exc:
        return {}, None, exc
