"""Reading step logs: every attempt's, whatever its end, and one attempt followed live.

An attempt that reported a log has it as a blob (`logsRef`); one that was cancelled, timed out
or lost has the chunks the worker wrote while it ran (`engine/live_log.py`). A follower polls
those chunks and ends when the attempt has ended and its log is complete: the blob is there,
the worker wrote the end marker (an empty chunk), or `_END_GRACE_SECONDS` passed without one
(a worker that died writes none).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stellaorch.domain.errors import NotFound, RunNotFound, ServiceBusy
from stellaorch.domain.status import TERMINAL_STEP, StepStatus
from stellaorch.engine.env import EngineEnv
from stellaorch.store import Connection, blobs, logs, runs

_POLL_SECONDS = 0.25
_CHUNKS_PER_READ = 256
# How long an ended attempt without a blob may still get chunks: a cancelled step's group gets
# its kill grace and pipe drain (a few seconds) before the worker writes the rest.
_END_GRACE_SECONDS = 10.0
MAX_FOLLOWERS = 256  # open follow responses per process


class StepNotFound(NotFound):
    """No such step in that run."""

    code = "STEP_NOT_FOUND"


class TooManyFollowers(ServiceBusy):
    """This process already serves the most log followers it may; retry later."""

    code = "LOG_FOLLOWERS_EXHAUSTED"


@dataclass
class _Snapshot:
    """One poll: the step, the followed attempt's row, its new chunks and its blob."""

    step: dict[str, Any]
    latest: int | None
    row: dict[str, Any] | None
    chunks: list[tuple[int, str]]
    blob: str | None


@dataclass
class _Cursor:
    """How far a follower got: the attempt, the last chunk seq, the unfinished line."""

    attempt: int | None
    after: int = 0
    partial: str = ""
    lines: int = 0
    ended: bool = False
    out: list[dict[str, Any]] = field(default_factory=list)

    def take(self, text: str) -> None:
        """Queue the complete lines `text` finishes; keep the unfinished rest."""
        *complete, self.partial = (self.partial + text).split("\n")
        self.lines += len(complete)
        self.out += [{"attempt": self.attempt, "line": line} for line in complete]

    def finish(self, blob: str | None) -> None:
        """Queue what is left: the blob's lines not sent yet, or the unfinished line."""
        if blob is not None:
            rest = blob.split("\n")[self.lines :]
            rest = rest[:-1] if rest and rest[-1] == "" else rest
            self.out += [{"attempt": self.attempt, "line": line} for line in rest]
        elif self.partial:
            self.out.append({"attempt": self.attempt, "line": self.partial})

    def drain(self) -> list[dict[str, Any]]:
        """The queued lines, once."""
        out, self.out = self.out, []
        return out


class StepLogs:
    """Log lines of a tenant's steps, stored or live."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._followers = 0

    async def lines(
        self, tenant: str, run_id: str, step_id: str, attempt: int | None = None
    ) -> list[dict[str, Any]]:
        """The step's log lines, attempt by attempt (or of one attempt), already bounded."""

        def work(conn: Connection) -> list[dict[str, Any]]:
            _require_step(conn, tenant, run_id, step_id)
            live = logs.step_chunk_texts(conn, tenant, run_id, step_id)
            out: list[dict[str, Any]] = []
            for row in runs.step_attempts(conn, tenant, run_id, step_id):
                number = int(row["attempt"])
                if attempt is None or number == attempt:
                    text = _blob_text(conn, tenant, row["logs_ref"]) or live.get(number, "")
                    out += [{"attempt": number, "line": ln} for ln in text.splitlines()]
            return out

        return await self.env.db.read(work)

    async def follow(
        self, tenant: str, run_id: str, step_id: str, attempt: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Check the step exists (errors raise here), then the iterator of its lines, live."""
        await self.env.db.read(lambda c: _require_step(c, tenant, run_id, step_id))
        if self._followers >= MAX_FOLLOWERS:
            raise TooManyFollowers(f"{MAX_FOLLOWERS} log followers are open here; retry later")
        return self._follow(tenant, run_id, step_id, _Cursor(attempt))

    async def _follow(
        self, tenant: str, run_id: str, step_id: str, cursor: _Cursor
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.env.settings.log_follow_max_seconds
        ended_at: float | None = None
        self._followers += 1  # counted once it runs: only then does `finally` count it out
        try:
            while loop.time() < deadline:
                read = partial(_snapshot, tenant=tenant, run_id=run_id, step_id=step_id)
                snap = await self.env.db.read(partial(read, cursor=cursor))
                done = _advance(cursor, snap)
                for line in cursor.drain():
                    yield line
                if done is None:
                    ended_at = ended_at if ended_at is not None else loop.time()
                    done = loop.time() - ended_at >= _END_GRACE_SECONDS
                if done:
                    cursor.finish(snap.blob)
                    for line in cursor.drain():
                        yield line
                    return
                if len(snap.chunks) < _CHUNKS_PER_READ:
                    await asyncio.sleep(_POLL_SECONDS)
        finally:
            self._followers -= 1


def _advance(cursor: _Cursor, snap: _Snapshot) -> bool | None:
    """Take a poll's chunks; True: the log is complete, False: not yet, None: maybe (grace)."""
    if cursor.attempt is None:
        if snap.latest is not None:
            cursor.attempt = snap.latest
            return False
        return StepStatus(snap.step["status"]) in TERMINAL_STEP
    for seq, text in snap.chunks:
        cursor.after = seq
        cursor.ended = cursor.ended or text == ""
        cursor.take(text)
    if snap.row is None:
        return StepStatus(snap.step["status"]) in TERMINAL_STEP
    if snap.row["ended_us"] is None:
        return False
    if snap.blob is not None or cursor.ended or cursor.after == 0:
        return True
    return None if not snap.chunks else False


def _snapshot(
    conn: Connection, *, tenant: str, run_id: str, step_id: str, cursor: _Cursor
) -> _Snapshot:
    """Read the step, the attempt followed and its chunks after the cursor."""
    step = _require_step(conn, tenant, run_id, step_id)
    attempts = runs.step_attempts(conn, tenant, run_id, step_id)
    latest = int(attempts[-1]["attempt"]) if attempts else None
    if cursor.attempt is None:
        return _Snapshot(step, latest, None, [], None)
    row = next((a for a in attempts if int(a["attempt"]) == cursor.attempt), None)
    chunks = logs.read_chunks(
        conn, tenant, run_id, step_id, cursor.attempt, cursor.after, _CHUNKS_PER_READ
    )
    ended = row is not None and row["ended_us"] is not None
    blob = _blob_text(conn, tenant, row["logs_ref"]) if ended and row else None
    return _Snapshot(step, latest, row, chunks, blob)


def _blob_text(conn: Connection, tenant: str, ref: str | None) -> str | None:
    """The text of a stored log, or None when there is none."""
    found = blobs.get_blob(conn, tenant, ref) if ref else None
    return found[0].decode("utf-8", "replace") if found else None


def _require_step(conn: Connection, tenant: str, run_id: str, step_id: str) -> dict[str, Any]:
    """The step row; RunNotFound or StepNotFound (another tenant's run is not found)."""
    if runs.get_run(conn, tenant, run_id) is None:
        raise RunNotFound(f"run {run_id} not found")
    step = runs.get_step(conn, tenant, run_id, step_id)
    if step is None:
        raise StepNotFound(f"step {step_id} not found in run {run_id}")
    return step
