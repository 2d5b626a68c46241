"""The dead letter: failed steps grouped by error.code, scoped bulk replay, acknowledgements."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import NotFound, StellaError, ValidationError
from stellaorch.domain.limits import MAX_BULK_RUNS
from stellaorch.engine import create, resume
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import AuditEntry, record_audit
from stellaorch.engine.requests import Created, ReplayOrigin, ReplayTarget, RunRequest
from stellaorch.store import Connection, deadletter
from stellaorch.store.deadletter import FailedScope as FailedScope
from stellaorch.store.deadletter import FailedStep

SAMPLES = 5
UNKNOWN_CODE = "UNKNOWN"


class DeadLetterGroupNotFound(NotFound):
    """No failed step of this tenant carries that error.code."""

    code = "DEADLETTER_GROUP_NOT_FOUND"


@dataclass
class DeadLetterGroup:
    """Failed steps sharing one error.code."""

    code: str
    count: int = 0
    first_seen_us: int | None = None
    last_seen_us: int | None = None
    versions: dict[tuple[str, str], None] = field(default_factory=dict)
    plugins: dict[str, None] = field(default_factory=dict)
    run_ids: dict[str, None] = field(default_factory=dict)
    acked_until_us: int | None = None

    def add(self, step: FailedStep, plugin: str) -> None:
        """Count one failed step in."""
        self.count += 1
        seen = step.ended_us
        if seen is not None:
            self.first_seen_us = min(self.first_seen_us or seen, seen)
            self.last_seen_us = max(self.last_seen_us or seen, seen)
        self.versions[(step.dag_id, step.dag_version)] = None
        self.plugins[plugin] = None
        self.run_ids[step.run_id] = None


@dataclass(frozen=True)
class DeadLetterScope:
    """Which failed steps a dead-letter action covers; acknowledged ones only when asked."""

    failed: FailedScope = field(default_factory=FailedScope)
    include_acked: bool = False

    def check(self) -> None:
        """A version names a version of one DAG."""
        if self.failed.version is not None and self.failed.dag_id is None:
            raise ValidationError("a version filter needs a dagId")


@dataclass(frozen=True)
class GroupReplay:
    """What a group replay did (or, dry, would do): the replays, and how many runs are left."""

    planned: list[RunRequest]
    created: list[Created]
    remaining: int
    dry_run: bool


def error_code(error_json: str | None) -> str:
    """The step error's code, or UNKNOWN."""
    try:
        code = json.loads(error_json or "{}").get("code")
    except (ValueError, AttributeError):
        return UNKNOWN_CODE
    return str(code) if code else UNKNOWN_CODE


class DeadLetterService:
    """Groups a tenant's failed steps, replays a group's runs, acknowledges handled groups."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def groups(
        self, tenant: str, scope: DeadLetterScope | None = None
    ) -> list[DeadLetterGroup]:
        """Every group in scope, by code (acknowledged failures left out by default)."""
        scope = scope or DeadLetterScope()
        scope.check()
        return await self.env.db.read(lambda c: self._groups(c, tenant, scope))

    def _groups(
        self, conn: Connection, tenant: str, scope: DeadLetterScope
    ) -> list[DeadLetterGroup]:
        acks = deadletter.acked_until(conn, tenant)
        found: dict[str, DeadLetterGroup] = {}
        for step in deadletter.failed_steps(conn, tenant, scope.failed):
            code = error_code(step.error_json)
            acked = acks.get(code)
            if not scope.include_acked and acked is not None and (step.ended_us or 0) <= acked:
                continue
            group = found.setdefault(code, DeadLetterGroup(code, acked_until_us=acked))
            group.add(step, self._plugin(conn, tenant, step))
        return [found[k] for k in sorted(found)]

    def _plugin(self, conn: Connection, tenant: str, step: FailedStep) -> str:
        """The step's plugin reference (name@version when pinned) in its DAG version."""
        dag = self.env.catalog.compiled(conn, tenant, step.dag_id, step.dag_version)
        spec = dag.steps.get(step.step_id)
        return spec.plugin if spec is not None else UNKNOWN_CODE

    async def replay(
        self,
        tenant: str,
        code: str,
        reason: str,
        origin: ReplayOrigin | None = None,
        target: ReplayTarget | None = None,
        *,
        scope: DeadLetterScope | None = None,
        dry_run: bool = False,
    ) -> GroupReplay:
        """Replay the group's failed runs in scope not replayed yet (at most MAX_BULK_RUNS,
        oldest first), all or none, onto the target's version; audited as deadletter.replay,
        and each new run's ledger entry keeps the reason and the actor. `dry_run`: plan only."""
        if not reason.strip():
            raise ValidationError("a replay needs a reason")
        who, where, scope = (
            origin or ReplayOrigin(),
            target or ReplayTarget(),
            scope or DeadLetterScope(),
        )
        scope.check()
        if where.version is not None and scope.failed.dag_id is None:
            raise ValidationError("replaying onto a version needs a dagId filter")
        job = _GroupJob(tenant, code, reason, who, where, scope, dry_run)
        result = await self.env.db.transact(lambda c: self._replay(c, job))
        for created in result.created:
            self.env.bus.publish(created.entries)
        return result

    def _replay(self, conn: Connection, job: _GroupJob) -> GroupReplay:
        group = {g.code: g for g in self._groups(conn, job.tenant, job.scope)}.get(job.code)
        if group is None:
            raise DeadLetterGroupNotFound(f"no failed step in scope has error.code {job.code}")
        done = deadletter.replayed(conn, job.tenant, list(group.run_ids))
        todo = [r for r in group.run_ids if r not in done]
        requests = [
            resume.replay_request(conn, job.tenant, r, job.reason, job.origin, job.target)
            for r in todo[:MAX_BULK_RUNS]
        ]
        remaining = len(todo) - len(requests)
        if job.dry_run:
            return GroupReplay(requests, [], remaining, True)
        created: list[Created] = []
        for result in create.create_runs(conn, self.env, requests):
            if isinstance(result, StellaError):
                raise result  # the transaction rolls back: nothing half-created
            created.append(result)
        record_audit(conn, job.audit(created, remaining), self.env.clock.now_us())
        return GroupReplay(requests, created, remaining, False)

    async def ack(self, tenant: str, code: str, operator: Operator) -> int:
        """Acknowledge the group as handled: its failures so far leave the default view
        (newer ones show again); audited as deadletter.ack. Returns the time acknowledged up to."""

        def work(conn: Connection) -> int:
            scope = DeadLetterScope(include_acked=True)
            group = {g.code: g for g in self._groups(conn, tenant, scope)}.get(code)
            if group is None or group.last_seen_us is None:
                raise DeadLetterGroupNotFound(f"no failed step has error.code {code}")
            until = group.last_seen_us
            deadletter.put_ack(conn, tenant, code, until, operator.actor, operator.reason)
            details = {"ackedUntilUs": until, "count": group.count}
            record_audit(
                conn,
                operator.entry(tenant, "deadletter.ack", code, details),
                self.env.clock.now_us(),
            )
            return until

        return await self.env.db.transact(work)


@dataclass(frozen=True)
class _GroupJob:
    """One group replay request, as the transaction needs it."""

    tenant: str
    code: str
    reason: str
    origin: ReplayOrigin
    target: ReplayTarget
    scope: DeadLetterScope
    dry_run: bool

    def audit(self, created: list[Created], remaining: int) -> AuditEntry:
        """The deadletter.replay audit entry: scope, target and the runs replayed."""
        f = self.scope.failed
        details = {
            "scope": {
                "dagId": f.dag_id,
                "version": f.version,
                "fromUs": f.from_us,
                "toUs": f.to_us,
            },
            "onto": self.target.version,
            "resume": self.target.resume,
            "replayed": {c.run.replay_of: c.run.run_id for c in created},
            "remaining": remaining,
        }
        actor = self.origin.actor or "system"
        return AuditEntry(
            self.tenant,
            actor,
            "deadletter.replay",
            self.code,
            self.reason,
            self.origin.ticket,
            details,
        )
