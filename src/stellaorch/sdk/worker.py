"""The SDK worker: claim queue steps, run decorated handlers, heartbeat, report outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import re
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

from stellaorch.sdk.client import ApiAway, Refused, TaskClient
from stellaorch.sdk.errors import TaskError

log = logging.getLogger("stellaorch.sdk")
DEFAULT_URL = "http://127.0.0.1:8440"
MAX_CAPACITY = 256
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class TaskDef:
    """A handler registered under a task name, with its params and result types."""

    name: str
    fn: Callable[..., Any]
    params_type: Any
    is_async: bool

    def parse(self, params: dict[str, Any]) -> Any:
        """The handler's params: validated into its pydantic model when it declares one."""
        if isinstance(self.params_type, type) and issubclass(self.params_type, BaseModel):
            return self.params_type.model_validate(params)
        return params


def task(name: str) -> Callable[[Callable[..., Any]], TaskDef]:
    """Register `fn(ctx, params)` (async or plain) as the handler of queue task `name`."""

    def wrap(fn: Callable[..., Any]) -> TaskDef:
        hints = get_type_hints(fn)
        names = list(inspect.signature(fn).parameters)
        params_type = hints.get(names[1], dict) if len(names) > 1 else dict
        return TaskDef(name, fn, params_type, inspect.iscoroutinefunction(fn))

    return wrap


@dataclass
class TaskContext:
    """What a handler knows of its attempt, and how it talks back while it runs."""

    lease_id: str
    run_id: str
    dag_id: str
    step_id: str
    attempt: int
    task: str
    params: dict[str, Any]
    traceparent: str
    deadline_utc: str
    _worker: Worker = field(repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or the lease lost (plain handlers poll this)."""
        return self._cancelled.is_set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1); sent in the background, from async or plain handlers."""
        body = {"fraction": max(0.0, min(1.0, fraction)), "message": message[:1000]}
        self._worker._send(f"/tasks/{self.lease_id}:progress", body)

    def log(self, *lines: str) -> None:
        """Append lines to the step's log; sent in the background."""
        if lines:
            body = {"lines": [line[:8192] for line in lines]}
            self._worker._send(f"/tasks/{self.lease_id}:log", body)

    async def put_artifact(self, data: bytes, *, content_type: str | None = None) -> str:
        """Upload `data` for this attempt and return its `sha256:` ref (put it in outputs).

        The hash is computed here and checked by the server; a repeated upload is a no-op.
        An outage is retried with backoff; a refusal (too large, lease lost) raises Refused.
        """
        return await self._worker._put_artifact(self.lease_id, bytes(data), content_type)

    def put_artifact_sync(self, data: bytes, *, content_type: str | None = None) -> str:
        """`put_artifact` for plain handlers (they run in the worker's thread pool)."""
        loop = self._worker._loop
        if loop is None or _on_loop(loop):
            raise RuntimeError("put_artifact_sync is for plain handlers; await put_artifact")
        upload = self._worker._put_artifact(self.lease_id, bytes(data), content_type)
        return asyncio.run_coroutine_threadsafe(upload, loop).result()


class Worker:
    """Serves decorated tasks for one tenant with at most `concurrency` attempts at once.

    URL, token and tenant come from the arguments or STELLA_API_URL, STELLA_TOKEN and
    STELLA_TENANT (defaults: http://127.0.0.1:8440, no token, "default").
    """

    def __init__(
        self,
        tasks: Sequence[TaskDef],
        *,
        concurrency: int = 8,
        url: str | None = None,
        token: str | None = None,
        tenant: str | None = None,
        queues: Sequence[str] = ("default",),
        worker_id: str | None = None,
        heartbeat_seconds: float = 0.3,
        wait_seconds: float = 10.0,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        if not tasks:
            raise ValueError("a worker needs at least one task")
        self.tasks = {t.name: t for t in tasks}
        self.concurrency = max(1, concurrency)
        self.url = url or os.environ.get("STELLA_API_URL") or DEFAULT_URL
        self.token = token or os.environ.get("STELLA_TOKEN")
        self.tenant = tenant or os.environ.get("STELLA_TENANT") or "default"
        self.queues = list(queues)
        host = socket.gethostname()
        self.worker_id = worker_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_seconds = heartbeat_seconds
        self.wait_seconds = wait_seconds
        self.grace = shutdown_grace_seconds
        self._running: dict[str, tuple[TaskContext, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._outcomes: list[dict[str, Any]] = []
        self._outcome_ready = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="task")
        self._client: TaskClient | None = None
        self.completed = 0

    # -- running -------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        asyncio.run(self.serve(handle_signals=True))

    def stop(self) -> None:
        """Stop claiming; running attempts finish (or are released after the grace)."""
        self._stopping.set()
        self._room.set()

    async def serve(self, *, handle_signals: bool = False) -> None:
        """Claim, run and complete until `stop()`; then drain."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._outcome_ready = asyncio.Event()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        self._client = TaskClient(self.url, self.token, self.tenant)
        beats = asyncio.create_task(self._heartbeat_loop())
        completer = asyncio.create_task(self._complete_loop())
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            beats.cancel()
            self._outcome_ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            await completer
            for pending in list(self._background):
                pending.cancel()
            await self._client.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        tasks = [t for _, t in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace)
        client = self._client
        assert client is not None
        for lease_id, (ctx, running) in list(self._running.items()):
            ctx._cancelled.set()
            running.cancel()
            with contextlib.suppress(Refused):
                await client.post(f"/tasks/{lease_id}:release")

    async def _claim_loop(self) -> None:
        client = self._client
        assert client is not None
        while not self._stopping.is_set():
            free = min(MAX_CAPACITY, self.concurrency - len(self._running))
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            body = {
                "workerId": self.worker_id[:200],
                "tasks": list(self.tasks),
                "queues": self.queues,
                "capacity": free,
                "waitSeconds": self.wait_seconds,
            }
            claim = asyncio.create_task(client.post_until("/tasks:claim", body, self._stopping))
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not claim.done():
                claim.cancel()  # a lease granted to a cancelled claim lapses after the TTL
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await claim
                return
            answer = claim.result()
            for lease in (answer or {}).get("leases", []):
                self._start(lease)

    def _start(self, lease: dict[str, Any]) -> None:
        ctx = TaskContext(
            lease_id=lease["leaseId"],
            run_id=lease["runId"],
            dag_id=lease["dagId"],
            step_id=lease["stepId"],
            attempt=lease["attempt"],
            task=lease["task"],
            params=lease["params"],
            traceparent=lease["traceparent"],
            deadline_utc=lease["deadlineUtc"],
            _worker=self,
        )
        running = asyncio.create_task(self._execute(ctx))
        self._running[ctx.lease_id] = (ctx, running)

    async def _execute(self, ctx: TaskContext) -> None:
        try:
            outcome = await self._attempt(ctx)
        except asyncio.CancelledError:
            ctx._cancelled.set()  # cancelled run, lost lease or shutdown: nothing to report
            return
        finally:
            self._running.pop(ctx.lease_id, None)
            self._room.set()
        self._outcomes.append({"leaseId": ctx.lease_id, **outcome})
        self._outcome_ready.set()

    async def _attempt(self, ctx: TaskContext) -> dict[str, Any]:
        definition = self.tasks.get(ctx.task)
        if definition is None:
            return _error("TASK_UNKNOWN", f"this worker has no task {ctx.task!r}", False)
        try:
            params = definition.parse(ctx.params)
        except ValidationError as exc:
            return _error("PARAMS_INVALID", str(exc)[:4000], False)
        try:
            if definition.is_async:
                result = await definition.fn(ctx, params)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, definition.fn, ctx, params)
        except TaskError as exc:
            return _error(exc.code, exc.message, exc.retryable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug fails the attempt, never the worker
            log.exception("task handler crashed", extra={"run_id": ctx.run_id})
            return _error("TASK_CRASHED", f"{type(exc).__name__}: {exc}", True)
        return {"outputs": _outputs(result)}

    # -- heartbeats and completions ------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        client = self._client
        assert client is not None
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            held = list(self._running)[:MAX_CAPACITY]
            if not held:
                continue
            try:
                answer = await client.post("/tasks:heartbeat", {"leaseIds": held})
            except Exception as exc:  # the API is away: the next beat tries again
                log.warning("heartbeat failed: %s", exc)
                continue
            for item in answer.get("leases", []):
                if item.get("held") and not item.get("cancelled"):
                    continue
                entry = self._running.get(item.get("leaseId", ""))
                if entry is not None:  # run cancelled or lease lost: stop the handler
                    entry[0]._cancelled.set()
                    entry[1].cancel()

    async def _complete_loop(self) -> None:
        client = self._client
        assert client is not None
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes[:MAX_CAPACITY], self._outcomes[MAX_CAPACITY:]
            if self._outcomes:
                self._outcome_ready.set()
            if batch:
                try:
                    answer = await client.post_until("/tasks:complete", {"results": batch})
                except Refused as exc:
                    log.error("completions refused: %s", exc)
                    answer = None
                for item in (answer or {}).get("results", []):
                    if item.get("accepted"):
                        self.completed += 1
                    else:
                        log.warning("completion not accepted: %s", item.get("error"))
            elif self._stopping.is_set() and not self._running:
                return

    async def _put_artifact(self, lease_id: str, data: bytes, content_type: str | None) -> str:
        client = self._client
        if client is None:
            raise RuntimeError("the worker is not serving")
        path = f"/tasks/{lease_id}/artifacts/{hashlib.sha256(data).hexdigest()}"
        media_type = content_type or "application/octet-stream"
        answer = await client.until(
            lambda: client.put_bytes(path, data, media_type), self._stopping
        )
        if answer is None:  # shutting down while the API is away: the attempt is released
            raise ApiAway("the worker is stopping and the API is unavailable")
        return str(answer["ref"])

    def _send(self, path: str, body: dict[str, Any]) -> None:
        """Fire a progress or log call from any thread; failures are logged, not raised."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def schedule() -> None:
            pending = loop.create_task(self._post_quietly(path, body))
            self._background.add(pending)
            pending.add_done_callback(self._background.discard)

        if _on_loop(loop):
            schedule()
        else:
            loop.call_soon_threadsafe(schedule)

    async def _post_quietly(self, path: str, body: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.post(path, body)
        except Exception as exc:
            log.debug("could not send %s: %s", path, exc)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _outputs(result: Any) -> dict[str, Any]:
    """A handler's return value as the step's outputs (a JSON object)."""
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        dumped: dict[str, Any] = result.model_dump(mode="json")
        return dumped
    if isinstance(result, dict):
        return result
    return {"result": result}


def _error(code: str, message: str, retryable: bool) -> dict[str, Any]:
    if not _CODE.match(code):
        code = "TASK_FAILED"  # the API takes UPPER_SNAKE codes only
    return {"error": {"code": code, "message": message[:4000], "retryable": retryable}}
