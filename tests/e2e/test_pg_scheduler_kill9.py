"""Two `stella orch scheduler` processes on one PostgreSQL store; the leader is SIGKILLed.

The DAG and an every-second schedule (overlap allow, catch-up all) are created from the test
process; the schedulers meet only in the database, through the leader lease. Only the lease
holder fires. After `kill -9` of the holder, its lease runs out (TTL 1.5 s) and the standby
takes it over and fires the next trigger. Every scheduled second from the first trigger to the
last has exactly one firing and one run, the triggers after the kill were fired by the standby,
and no run token has two runs. No worker runs: the fired runs stay queued.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from services import Service, service, until_true
from sqlalchemy import text

from stellaorch.domain.firing import run_token
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.schedules import Operator, ScheduleSpec
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "tick"
US = 1_000_000
TTL_SECONDS = 1.5
POLL_SECONDS = 0.2
SLACK_SECONDS = 2.5  # on top of the TTL: the standby's poll, its tick, a slow CI machine
FIRED_BEFORE = 3  # triggers the first leader fires before it is killed
FIRED_AFTER = 3  # triggers the standby fires after it took over
OPERATOR = Operator("e2e", "scheduler kill -9 test", "TEST-1")
SPEC = {"dagId": DAG_ID, "version": 1, "steps": [{"id": "s", "plugin": "noop"}]}
SCHEDULER_ENV = {
    "STELLA_ORCH_SCHEDULER_LEASE_TTL_SECONDS": str(TTL_SECONDS),
    "STELLA_ORCH_SCHEDULER_POLL_SECONDS": str(POLL_SECONDS),
    "STELLA_ORCH_DEFAULT_TENANT": TENANT,
}


async def test_standby_scheduler_takes_over_after_kill_9_without_doubles(
    pg_store_url: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_store_url()
    orch = Orchestrator.open(Settings(database_url=url, schedule_min_interval_seconds=1))
    try:
        await orch.catalog.publish(TENANT, parse_spec(SPEC))
        spec = ScheduleSpec(TENANT, DAG_ID, "* * * * * *", overlap="allow", catchup="all")
        sid = (await orch.schedules.create(spec, OPERATOR)).schedule_id
        async with AsyncExitStack() as stack:
            started = [
                await stack.enter_async_context(
                    service("scheduler", url, tmp_path / f"scheduler{n}.log", SCHEDULER_ENV)
                )
                for n in (1, 2)
            ]

            async def leading_and_fired() -> bool:
                holder = await lease_holder(orch)
                fired = await firings(orch, sid)
                return holder is not None and len(fired) >= FIRED_BEFORE

            await until_true(leading_and_fired, 20, f"{FIRED_BEFORE} triggers fired")
            holder = await lease_holder(orch)
            assert holder is not None
            leader = process_of(holder, started)
            standby = next(s for s in started if s is not leader)
            assert "scheduler.leading" not in standby.output(), "the standby led while alive"
            assert not run_ids_logged(standby), "the standby fired while the leader lived"

            leader.proc.kill()
            # Taken after the signal: a trigger recorded later can only be the standby's.
            killed_us, killed_at = time.time_ns() // 1000, time.monotonic()
            await leader.kill()
            fired_before = await firings(orch, sid)

            async def standby_leads() -> bool:
                now = await lease_holder(orch)
                return now is not None and process_of(now, started) is standby

            async def standby_fired(n: int) -> bool:
                return len(after(await firings(orch, sid), killed_us)) >= n

            await until_true(
                standby_leads, TTL_SECONDS + SLACK_SECONDS, "the standby holds the lease"
            )
            lease_s = time.monotonic() - killed_at
            await until_true(lambda: standby_fired(1), SLACK_SECONDS, "the standby fired")
            next_s = time.monotonic() - killed_at
            await until_true(
                lambda: standby_fired(FIRED_AFTER), FIRED_AFTER + 3, "the standby kept firing"
            )
            holder = await lease_holder(orch)
            assert holder is not None and process_of(holder, started) is standby
            assert f"scheduler.leading holder={holder}" in standby.output()
            await stop(standby)  # an orderly stop: every fired trigger has its run recorded
        await check_outcome(orch, sid, killed_us, leader, standby)
        fired_after = len(after(await firings(orch, sid), killed_us))
        assert next_s <= TTL_SECONDS + SLACK_SECONDS, f"next trigger {next_s:.2f}s after the kill"
        print(
            f"kill -9 of the scheduler leader: the standby held the lease after {lease_s:.2f}s "
            f"and fired the next trigger after {next_s:.2f}s (TTL {TTL_SECONDS}s); "
            f"{len(fired_before)} triggers fired before the kill, {fired_after} after"
        )
    finally:
        await orch.close()


async def check_outcome(
    orch: Orchestrator, sid: str, killed_us: int, leader: Service, standby: Service
) -> None:
    """One firing and one run per second, no gaps, the standby's after the kill, no doubles."""
    fired = await firings(orch, sid)
    seconds = [f["scheduled_us"] for f in fired]
    expected = list(range(seconds[0], seconds[-1] + US, US))
    assert seconds == expected, f"missing or extra triggers: {sorted(set(expected) - set(seconds))}"
    assert all(f["outcome"] == "started" for f in fired), [f["outcome"] for f in fired]
    fired_runs = [f["run_id"] for f in fired]
    assert None not in fired_runs, "a started trigger has no run"
    assert len(set(fired_runs)) == len(fired_runs), "two triggers share a run"

    runs = await rows(
        orch,
        'SELECT run_id, run_token FROM runs WHERE tenant = :t AND "trigger" = :trigger',
        t=TENANT,
        trigger=f"schedule:{sid}",
    )
    tokens = [r["run_token"] for r in runs]
    assert len(set(tokens)) == len(tokens), "a run token has two runs"
    assert len(runs) == len(fired), f"{len(runs)} runs for {len(fired)} triggers"
    token_of = {r["run_id"]: r["run_token"] for r in runs}
    for f in fired:
        assert token_of.get(f["run_id"]) == run_token(sid, f["scheduled_us"]), f

    by_leader, by_standby = run_ids_logged(leader), run_ids_logged(standby)
    assert not by_leader & by_standby, f"runs created by both schedulers: {by_leader & by_standby}"
    late = after(fired, killed_us)
    assert late, "nothing fired after the kill"
    made_by_standby = {f["run_id"] for f in late}
    assert made_by_standby <= by_standby, (
        f"not fired by the standby: {made_by_standby - by_standby}"
    )
    assert by_leader, "the leader logged no run before it was killed"


async def stop(process: Service) -> None:
    """SIGTERM the process and wait until it exited on its own (SIGKILL after 10 s)."""
    process.proc.send_signal(signal.SIGTERM)
    try:
        await until_true(lambda: exited(process), 10, f"{process.role} stopped")
    finally:
        await process.kill()
    assert process.proc.returncode == 0, f"exit {process.proc.returncode}:\n{process.output()}"


async def exited(process: Service) -> bool:
    """True once the process has ended."""
    return process.proc.returncode is not None


def process_of(holder: str, candidates: list[Service]) -> Service:
    """The process whose scheduler holds the lease (holder is host:pid:suffix)."""
    pid = int(holder.split(":")[-2])
    matches = [s for s in candidates if s.proc.pid == pid]
    assert len(matches) == 1, f"no scheduler process with pid {pid} holds the lease {holder}"
    return matches[0]


def run_ids_logged(process: Service) -> set[str]:
    """Runs whose creation the process logged (run-level ledger entries on its stderr)."""
    found = set()
    for line in process.output().splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # the last line of a killed process may be cut short
        if doc.get("runId") and not doc.get("stepId"):
            found.add(str(doc["runId"]))
    return found


def after(fired: list[dict[str, Any]], killed_us: int) -> list[dict[str, Any]]:
    """The triggers recorded after the kill."""
    return [f for f in fired if f["created_us"] > killed_us]


async def lease_holder(orch: Orchestrator) -> str | None:
    """Who holds the unexpired scheduler lease, by the database's clock."""
    found = await rows(
        orch,
        "SELECT holder FROM leader_leases WHERE name = 'scheduler' AND expires_us > "
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    )
    return str(found[0]["holder"]) if found else None


async def firings(orch: Orchestrator, sid: str) -> list[dict[str, Any]]:
    """Every recorded trigger of the schedule, oldest first."""
    return await rows(
        orch,
        "SELECT scheduled_us, outcome, run_id, created_us FROM schedule_firings "
        "WHERE schedule_id = :s ORDER BY scheduled_us",
        s=sid,
    )


async def rows(orch: Orchestrator, statement: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of one query, in its own read transaction."""
    return await orch.env.db.read(
        lambda c: [dict(r) for r in c.execute(text(statement), params).mappings()]
    )
