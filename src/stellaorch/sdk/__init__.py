"""The Python worker SDK: decorate handlers with `@task`, serve them with `Worker`.

Needs only httpx and pydantic: nothing of the orchestrator's server side is imported.
"""

from stellaorch.sdk.client import Refused
from stellaorch.sdk.errors import Fatal, Retryable, TaskError
from stellaorch.sdk.worker import TaskContext, TaskDef, Worker, task

__all__ = [
    "Fatal",
    "Refused",
    "Retryable",
    "TaskContext",
    "TaskDef",
    "TaskError",
    "Worker",
    "task",
]
