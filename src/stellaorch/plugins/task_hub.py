"""Queue steps waiting for external workers: offered by the `queue` plugin, leased over the API.

The engine leases a queue step to its own worker as it does every step; that worker's
`queue` plugin offers the attempt here and waits. An external worker claims the offer
(a hub lease with its own TTL), heartbeats, reports progress and completes it; the
completion resolves the plugin's wait and the engine records the outcome through its normal
complete transaction. A hub lease that is not heartbeaten within the TTL is offered again to
the next claim; a lease id completes at most once. Everything here runs on one event loop:
claims wait on events set by offers and expiry timers, never on a polling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stellaorch.domain.errors import NotFound, ValidationError

DEFAULT_QUEUE = "default"
MAX_CLAIM = 256
MAX_ARTIFACTS_PER_LEASE = 100  # uploads one attempt may make (each one size-capped)


class LeaseLost(NotFound):
    """A progress, log, artifact or completion named a lease nobody holds (HTTP 404, `LEASE_LOST`).

    Expired, already completed, withdrawn by a cancel and another tenant's all get this one
    answer, so a lease id tells a caller nothing it may not know.
    """

    code = "LEASE_LOST"


class ArtifactLimitReached(ValidationError):
    """An attempt tried more than MAX_ARTIFACTS_PER_LEASE uploads (HTTP 400)."""

    code = "ARTIFACT_LIMIT_REACHED"


@dataclass(frozen=True)
class TaskResult:
    """What an external worker reported: outputs, or an error with code/message/retryable."""

    outputs: dict[str, Any] | None = None
    error: Mapping[str, Any] | None = None


@dataclass
class Job:
    """One attempt of a queue step, offered to external workers."""

    tenant: str
    run_id: str
    dag_id: str
    step_id: str
    attempt: int
    task: str
    queue: str
    params: Mapping[str, Any]
    traceparent: str
    deadline_us: int
    result: asyncio.Future[TaskResult]
    log_sink: Callable[[bytes], None] | None = None
    lease_id: str | None = None
    worker: str | None = None
    expires: float = 0.0  # monotonic seconds
    cancelled: bool = False
    progress: dict[str, Any] | None = None
    artifacts: int = 0  # uploads admitted under this attempt's leases
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        """True once the attempt was completed or withdrawn."""
        return self.result.done()


@dataclass(frozen=True)
class Granted:
    """A lease handed to a worker, with its expiry in wall-clock microseconds."""

    job: Job
    lease_id: str
    expires_us: int


Listener = Callable[[Job], None]


class TaskHub:
    """Per process: queue steps waiting for external workers, by tenant, queue and task."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._pending: dict[tuple[str, str, str], deque[Job]] = {}
        self._leases: dict[str, Job] = {}
        self._by_step: dict[tuple[str, str], Job] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.progress_listeners: list[Listener] = []

    # -- the plugin's side ---------------------------------------------------------------
    def offer(self, job: Job) -> None:
        """Make an attempt claimable and wake the tenant's waiting claims."""
        self._pending.setdefault((job.tenant, job.queue, job.task), deque()).append(job)
        self._by_step[(job.run_id, job.step_id)] = job
        self._wake(job.tenant)

    def withdraw(self, job: Job) -> None:
        """The attempt ended on the engine's side (cancelled, timed out): nobody may finish it.

        A held lease stays known for one TTL so the worker's heartbeat learns of the cancel.
        """
        job.cancelled = True
        if not job.result.done():
            job.result.cancel()
        pending = self._pending.get((job.tenant, job.queue, job.task))
        if pending is not None:
            with contextlib.suppress(ValueError):
                pending.remove(job)
        if self._by_step.get((job.run_id, job.step_id)) is job:
            del self._by_step[(job.run_id, job.step_id)]
        lease_id = job.lease_id
        if lease_id is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(self.ttl_seconds, self._forget, lease_id, job)

    # -- the worker API's side -----------------------------------------------------------
    async def claim(
        self,
        tenant: str,
        worker: str,
        tasks: Sequence[str],
        queues: Sequence[str],
        capacity: int,
        wait_seconds: float,
    ) -> list[Granted]:
        """Lease up to `capacity` offers of `tenant`; wait up to `wait_seconds` for the first."""
        deadline = time.monotonic() + wait_seconds
        event = asyncio.Event()
        waiters = self._waiters.setdefault(tenant, set())
        waiters.add(event)
        try:
            while True:
                event.clear()
                granted = self._take(tenant, worker, tasks, queues, capacity)
                left = deadline - time.monotonic()
                if granted or left <= 0:
                    return granted
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await event.wait()
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(tenant, None)

    def heartbeat(self, tenant: str, lease_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Extend the leases; each answer says if it is held and if the run was cancelled."""
        answers = []
        now = time.monotonic()
        for lease_id in lease_ids:
            job = self._held(tenant, lease_id, allow_cancelled=True)
            if job is None:
                answers.append({"leaseId": lease_id, "held": False, "cancelled": False})
                continue
            held = not job.cancelled
            if held:
                job.expires = now + self.ttl_seconds
            answers.append(
                {
                    "leaseId": lease_id,
                    "held": held,
                    "cancelled": job.cancelled,
                    "expiresUs": _wall_us(job.expires),
                }
            )
        return answers

    def progress(self, tenant: str, lease_id: str, fraction: float, message: str) -> Job:
        """Record the attempt's progress and tell the listeners (the event stream)."""
        job = self._require(tenant, lease_id)
        job.progress = {"fraction": fraction, "message": message}
        for listener in list(self.progress_listeners):
            with contextlib.suppress(Exception):  # a listener never breaks the worker's call
                listener(job)
        return job

    def log(self, tenant: str, lease_id: str, lines: Sequence[str]) -> None:
        """Append lines to the attempt's live log (the step's log once it ends)."""
        job = self._require(tenant, lease_id)
        if job.log_sink is not None and lines:
            job.log_sink("".join(f"{line}\n" for line in lines).encode())

    def holding(self, tenant: str, lease_id: str) -> Job:
        """The attempt behind a held lease of `tenant` (an artifact upload checks this)."""
        return self._require(tenant, lease_id)

    def admit_artifact(self, tenant: str, lease_id: str) -> Job:
        """Count one upload against the held lease's attempt; refused past the bound."""
        job = self._require(tenant, lease_id)
        if job.artifacts >= MAX_ARTIFACTS_PER_LEASE:
            raise ArtifactLimitReached(
                f"an attempt uploads at most {MAX_ARTIFACTS_PER_LEASE} artifacts"
            )
        job.artifacts += 1
        return job

    def complete(self, tenant: str, lease_id: str, result: TaskResult) -> Job:
        """Resolve the attempt once; a stale, foreign or repeated lease id is refused."""
        job = self._require(tenant, lease_id)
        self._release(job)
        job.result.set_result(result)
        if self._by_step.get((job.run_id, job.step_id)) is job:
            del self._by_step[(job.run_id, job.step_id)]
        return job

    def release(self, tenant: str, lease_id: str) -> Job:
        """Give a lease back unfinished (a worker shutting down): offered again at once."""
        job = self._require(tenant, lease_id)
        self._release(job)
        self._pending.setdefault((job.tenant, job.queue, job.task), deque()).appendleft(job)
        self._wake(job.tenant)
        return job

    def step_progress(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        """The latest progress of a step's waiting attempt, if any."""
        job = self._by_step.get((run_id, step_id))
        return None if job is None else job.progress

    def run_progress(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The latest progress of each of a run's waiting queue steps that reported some."""
        return {
            step_id: job.progress
            for (rid, step_id), job in self._by_step.items()
            if rid == run_id and job.progress is not None
        }

    @property
    def leased(self) -> int:
        """Offers some worker holds a lease on."""
        return len(self._leases)

    @property
    def waiting(self) -> int:
        """Offers not leased by anyone."""
        return sum(len(d) for d in self._pending.values())

    # -- internals -----------------------------------------------------------------------
    def _take(
        self, tenant: str, worker: str, tasks: Sequence[str], queues: Sequence[str], capacity: int
    ) -> list[Granted]:
        granted: list[Granted] = []
        keys = [(tenant, q, t) for q in queues for t in tasks]
        active = [k for k in keys if self._pending.get(k)]
        while active and len(granted) < capacity:  # round-robin over the named tasks
            still = []
            for key in active:
                pending = self._pending[key]
                if pending and len(granted) < capacity:
                    granted.append(self._lease(pending.popleft(), worker))
                if pending:
                    still.append(key)
                else:
                    del self._pending[key]
            active = still
        return granted

    def _lease(self, job: Job, worker: str) -> Granted:
        lease_id = uuid.uuid4().hex
        job.lease_id, job.worker = lease_id, worker
        job.expires = time.monotonic() + self.ttl_seconds
        self._leases[lease_id] = job
        loop = asyncio.get_running_loop()
        job._timer = loop.call_later(self.ttl_seconds, self._check_expiry, lease_id)
        return Granted(job, lease_id, _wall_us(job.expires))

    def _check_expiry(self, lease_id: str) -> None:
        """The lease's timer: extended leases re-arm, lapsed ones are offered again."""
        job = self._leases.get(lease_id)
        if job is None or job.lease_id != lease_id or job.finished:
            return
        left = job.expires - time.monotonic()
        if left > 0:
            loop = asyncio.get_running_loop()
            job._timer = loop.call_later(left, self._check_expiry, lease_id)
            return
        self._release(job)
        self._pending.setdefault((job.tenant, job.queue, job.task), deque()).appendleft(job)
        self._wake(job.tenant)

    def _release(self, job: Job) -> None:
        if job.lease_id is not None:
            self._leases.pop(job.lease_id, None)
        if job._timer is not None:
            job._timer.cancel()
        job.lease_id, job.worker, job._timer = None, None, None

    def _forget(self, lease_id: str, job: Job) -> None:
        if self._leases.get(lease_id) is job:
            self._release(job)

    def _held(self, tenant: str, lease_id: str, *, allow_cancelled: bool = False) -> Job | None:
        job = self._leases.get(lease_id)
        if job is None or job.tenant != tenant or job.lease_id != lease_id:
            return None
        if job.finished and not (allow_cancelled and job.cancelled):
            return None
        return job

    def _require(self, tenant: str, lease_id: str) -> Job:
        job = self._held(tenant, lease_id)
        if job is None:
            # One answer for expired, completed, cancelled and another tenant's: no oracle.
            raise LeaseLost("the lease is not held (expired, completed or cancelled)")
        return job

    def _wake(self, tenant: str) -> None:
        for event in self._waiters.get(tenant, ()):
            event.set()


def _wall_us(monotonic_at: float) -> int:
    """A monotonic instant as wall-clock microseconds."""
    return int((time.time() + (monotonic_at - time.monotonic())) * 1_000_000)
