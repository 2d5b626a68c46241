"""The Python worker SDK: decorate handlers with `@task`, serve them with `Worker`, and
declare the DAGs that use them with `Dag`.

Needs only httpx and pydantic: nothing of the orchestrator's server side is imported.
"""

from stellaorch.sdk.client import Refused
from stellaorch.sdk.dag import Backoff, Dag, Retry, Step
from stellaorch.sdk.errors import Fatal, Retryable, TaskError
from stellaorch.sdk.worker import TaskContext, TaskDef, Worker, task

__all__ = [
    "Backoff",
    "Dag",
    "Fatal",
    "Refused",
    "Retry",
    "Retryable",
    "Step",
    "TaskContext",
    "TaskDef",
    "TaskError",
    "Worker",
    "task",
]
