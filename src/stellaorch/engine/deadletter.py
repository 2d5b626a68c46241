"""The dead letter: failed steps grouped by error.code, and bulk replay of a group."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stellaorch.domain.errors import NotFound, StellaError, ValidationError
from stellaorch.engine import create, resume
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Created, ReplayOrigin, ReplayTarget
from stellaorch.store import Connection, deadletter
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


def error_code(error_json: str | None) -> str:
    """The step error's code, or UNKNOWN."""
    try:
        code = json.loads(error_json or "{}").get("code")
    except (ValueError, AttributeError):
        return UNKNOWN_CODE
    return str(code) if code else UNKNOWN_CODE


class DeadLetterService:
    """Groups a tenant's failed steps and replays a group's runs."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def groups(self, tenant: str) -> list[DeadLetterGroup]:
        """Every group, by code."""
        return await self.env.db.read(lambda c: self._groups(c, tenant))

    def _groups(self, conn: Connection, tenant: str) -> list[DeadLetterGroup]:
        found: dict[str, DeadLetterGroup] = {}
        for step in deadletter.failed_steps(conn, tenant):
            code = error_code(step.error_json)
            group = found.setdefault(code, DeadLetterGroup(code))
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
    ) -> list[Created]:
        """Replay every failed run of the group not replayed yet, all or none, onto the
        target's version (resumed or not); each new run's ledger entry and the audit log keep
        the reason and the actor."""
        if not reason.strip():
            raise ValidationError("a replay needs a reason")
        who, where = origin or ReplayOrigin(), target or ReplayTarget()
        results = await self.env.db.transact(
            lambda c: self._replay(c, tenant, code, reason, who, where)
        )
        for result in results:
            self.env.bus.publish(result.entries)
        return results

    def _replay(
        self,
        conn: Connection,
        tenant: str,
        code: str,
        reason: str,
        origin: ReplayOrigin,
        target: ReplayTarget,
    ) -> list[Created]:
        group = {g.code: g for g in self._groups(conn, tenant)}.get(code)
        if group is None:
            raise DeadLetterGroupNotFound(f"no failed step has error.code {code}")
        done = deadletter.replayed(conn, tenant, list(group.run_ids))
        requests = [
            resume.replay_request(conn, tenant, r, reason, origin, target)
            for r in group.run_ids
            if r not in done
        ]
        results = create.create_runs(conn, self.env, requests)
        for result in results:
            if isinstance(result, StellaError):
                raise result  # the transaction rolls back: nothing half-created
        return [r for r in results if isinstance(r, Created)]
