"""The `queue` plugin: hand a step to an external worker through the task hub and wait."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import ParamProblem, PluginRegistry, PluginResult, StepContext
from stellaorch.plugins.task_hub import DEFAULT_QUEUE, Job, TaskHub

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_RESERVED = ("task", "queue")


class QueuePlugin:
    """Offers the attempt to external workers serving `task` on `queue`; returns their result."""

    name = "queue"
    version = "1"

    def __init__(self, hub: TaskHub) -> None:
        self.hub = hub

    async def run(self, ctx: StepContext) -> PluginResult:
        """Wait for an external worker's completion; a cancel withdraws the offer."""
        params = ctx.params
        task, queue = str(params.get("task", "")), str(params.get("queue", DEFAULT_QUEUE))
        if not NAME.match(task) or not NAME.match(queue):
            raise StepFailed("PARAMS_INVALID", "queue: 'task' and 'queue' must be names")
        loop = asyncio.get_running_loop()
        job = Job(
            tenant=ctx.tenant,
            run_id=ctx.run_id,
            dag_id=ctx.dag_id,
            step_id=ctx.step_id,
            attempt=ctx.attempt,
            task=task,
            queue=queue,
            params={k: v for k, v in params.items() if k not in _RESERVED},
            traceparent=ctx.traceparent,
            deadline_us=int((time.time() + ctx.timeout_seconds) * 1_000_000),
            result=loop.create_future(),
            log_sink=ctx.log_sink,
        )
        self.hub.offer(job)
        try:
            result = await job.result
        except asyncio.CancelledError:
            self.hub.withdraw(job)
            raise
        if result.error is not None:
            error = result.error
            raise StepFailed(
                str(error.get("code") or "TASK_FAILED"),
                str(error.get("message") or ""),
                retryable=bool(error.get("retryable", False)),
            )
        return PluginResult(outputs=dict(result.outputs or {}))


def check_queue_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: `task` is a literal name, `queue` (optional) too."""
    problems: list[ParamProblem] = []
    task = params.get("task")
    if not isinstance(task, str) or not NAME.match(task):
        problems.append(("task", "queue: 'task' is required, a name of 1-128 [A-Za-z0-9._:-]"))
    if "queue" in params:
        queue = params["queue"]
        if not isinstance(queue, str) or not NAME.match(queue):
            problems.append(("queue", "queue: 'queue' must be a name of 1-128 [A-Za-z0-9._:-]"))
    return problems


def task_hub_of(registry: PluginRegistry) -> TaskHub | None:
    """The hub behind the registry's `queue` plugin (None when it has none)."""
    try:
        plugin = registry.resolve("queue@1")
    except Exception:
        return None
    return plugin.hub if isinstance(plugin, QueuePlugin) else None
