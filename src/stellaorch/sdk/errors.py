"""What a task handler raises to choose how its attempt fails."""

from __future__ import annotations


class TaskError(Exception):
    """Base of the handler's typed failures: a stable UPPER_SNAKE code and a message."""

    retryable = False
    default_code = "TASK_FAILED"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class Retryable(TaskError):
    """The attempt failed but another may succeed: the step's retry policy decides."""

    retryable = True
    default_code = "TASK_RETRYABLE"


class Fatal(TaskError):
    """The attempt failed and retrying cannot help: the step fails now."""

    default_code = "TASK_FATAL"
