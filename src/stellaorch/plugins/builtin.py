"""Built-in plugins for tests, examples and benchmarks: noop, sleep, fail (and the registry)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import PluginRegistry, PluginResult, StepContext, params_invalid
from stellaorch.plugins.sandbox import Sandbox
from stellaorch.plugins.script import ScriptPlugin

_DEFAULT_FAIL_CODE = "INJECTED_FAILURE"
_DEFAULT_FAIL_MESSAGE = "failure injected by the fail plugin"

_T = TypeVar("_T")


class NoopPlugin:
    """Does nothing and returns `params.outputs`, so examples can pass data downstream."""

    name = "noop"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Echo `outputs` from the parameters (it is the benchmark step: keep it cheap)."""
        outputs = ctx.params.get("outputs", {})
        if not isinstance(outputs, Mapping):
            raise params_invalid("noop: 'outputs' must be an object")
        return PluginResult(outputs=dict(outputs))


class SleepPlugin:
    """Sleeps `seconds`; cancellable like any real long-running step."""

    name = "sleep"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Sleep for `params.seconds` and report how long."""
        seconds = _seconds(ctx.params)
        await asyncio.sleep(seconds)
        return PluginResult(outputs={"sleptSeconds": seconds})


def _seconds(params: Mapping[str, Any]) -> float:
    """The required, finite, non-negative `seconds` parameter."""
    value = params.get("seconds")
    # bool is an int subclass, but `seconds: true` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise params_invalid("sleep: 'seconds' is required and must be a number")
    if not math.isfinite(value) or value < 0:
        raise params_invalid(f"sleep: 'seconds' must be a finite number >= 0, got {value}")
    return value


class FailPlugin:
    """Fails with a chosen error; with `untilAttempt` it is a flaky step that later succeeds."""

    name = "fail"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Raise the configured `StepFailed`, or succeed once `attempt >= untilAttempt`."""
        until = _optional_int(ctx.params, "untilAttempt")
        if until is not None and ctx.attempt >= until:
            return PluginResult(outputs={"attempt": ctx.attempt})
        raise StepFailed(
            _typed(ctx.params, "code", str, _DEFAULT_FAIL_CODE),
            _typed(ctx.params, "message", str, _DEFAULT_FAIL_MESSAGE),
            retryable=_typed(ctx.params, "retryable", bool, False),
        )


def _typed(params: Mapping[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    """`params[key]` if present and of type `kind`, else `default` when absent."""
    value = params.get(key, default)
    if not isinstance(value, kind):
        raise params_invalid(f"fail: {key!r} must be a {kind.__name__}")
    return value


def _optional_int(params: Mapping[str, Any], key: str) -> int | None:
    """An optional integer parameter (booleans rejected)."""
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise params_invalid(f"fail: {key!r} must be an integer")
    return value


def builtin_registry(
    *, max_log_bytes: int = 1024 * 1024, sandbox: Sandbox | None = None
) -> PluginRegistry:
    """A registry holding noop, sleep, fail and script (in `sandbox`), all at version 1."""
    registry = PluginRegistry()
    registry.register(NoopPlugin())
    registry.register(SleepPlugin())
    registry.register(FailPlugin())
    registry.register(ScriptPlugin(max_log_bytes=max_log_bytes, sandbox=sandbox))
    return registry
