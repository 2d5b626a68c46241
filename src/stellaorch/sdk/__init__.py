"""The Python worker SDK: decorate handlers with `@task`, serve them with `Worker`.

Needs only httpx and pydantic: nothing of the orchestrator's server side is imported.
"""

from stellaorch.sdk.errors import Fatal, Retryable, TaskError
from stellaorch.sdk.worker import TaskContext, TaskDef, Worker, task

__all__ = ["Fatal", "Retryable", "TaskContext", "TaskDef", "TaskError", "Worker", "task"]
