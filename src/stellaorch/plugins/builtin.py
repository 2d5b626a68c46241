"""Built-in plugins for tests, examples and benchmarks: noop, sleep, fail (and the registry)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import (
    ParamProblem,
    PluginRegistry,
    PluginResult,
    StepContext,
    params_invalid,
)
from stellaorch.plugins.bundle import BundlePlugins
from stellaorch.plugins.bundle_source import BundleSource
from stellaorch.plugins.http import HttpPlugin
from stellaorch.plugins.http_params import check_http_params
from stellaorch.plugins.params import parsed_at, unknown_keys
from stellaorch.plugins.queue_task import QueuePlugin, check_queue_params
from stellaorch.plugins.sandbox import Sandbox
from stellaorch.plugins.script import ScriptPlugin
from stellaorch.plugins.script_rules import check_script_params
from stellaorch.plugins.task_hub import TaskHub

_DEFAULT_FAIL_CODE = "INJECTED_FAILURE"
_DEFAULT_FAIL_MESSAGE = "failure injected by the fail plugin"

_T = TypeVar("_T")


class NoopPlugin:
    """Does nothing and returns `params.outputs`, so examples can pass data downstream."""

    name = "noop"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Echo `outputs` from the parameters (it is the benchmark step: keep it cheap)."""
        return PluginResult(outputs=_outputs(ctx.params))


def _outputs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The optional `outputs` object."""
    outputs = params.get("outputs", {})
    if not isinstance(outputs, Mapping):
        raise params_invalid("noop: 'outputs' must be an object")
    return dict(outputs)


def check_noop_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: only `outputs`, an object."""
    return unknown_keys("noop", params, ["outputs"]) + parsed_at("outputs", params, _outputs)


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


def check_sleep_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: `seconds`, a finite number >= 0."""
    return unknown_keys("sleep", params, ["seconds"]) + parsed_at("seconds", params, _seconds)


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


# fail's parameters and how each is read at run time (the defaults do not matter here).
_FAIL_PARAMS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "code": lambda p: _typed(p, "code", str, ""),
    "message": lambda p: _typed(p, "message", str, ""),
    "retryable": lambda p: _typed(p, "retryable", bool, False),
    "untilAttempt": lambda p: _optional_int(p, "untilAttempt"),
}


def check_fail_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: the types of code, message, retryable and untilAttempt."""
    problems = unknown_keys("fail", params, _FAIL_PARAMS)
    for key, parse in _FAIL_PARAMS.items():
        problems += parsed_at(key, params, parse)
    return problems


INLINE_SCRIPTS_DISABLED = "INLINE_SCRIPTS_DISABLED"
_INLINE_OFF = (
    "inline shell commands are disabled on this server (STELLA_ORCH_INLINE_SCRIPTS); "
    "ship the script in a bundle and name it as name@version"
)


class DisabledScriptPlugin:
    """Stands in for `script` where the operator disabled inline commands: always refuses."""

    name = "script"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Fail the attempt, not retryable: a retry runs on a server with the same setting."""
        raise StepFailed(INLINE_SCRIPTS_DISABLED, _INLINE_OFF, retryable=False)


def check_disabled_script(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time: an inline command is refused where inline commands are disabled."""
    return [("", _INLINE_OFF)]


def builtin_registry(
    *,
    max_log_bytes: int = 1024 * 1024,
    sandbox: Sandbox | None = None,
    inline_scripts: bool = True,
    bundles: BundleSource | None = None,
    task_hub: TaskHub | None = None,
) -> PluginRegistry:
    """Noop, sleep, fail, http, queue and script, all at version 1, with their checks.

    `queue` offers its steps to external workers through `task_hub` (a fresh one if None).

    `script` runs inline commands in `sandbox` unless `inline_scripts` is False; with a
    `bundles` source, `name@version` references resolve to the tenant's bundles.
    """
    runner = ScriptPlugin(max_log_bytes=max_log_bytes, sandbox=sandbox)
    registry = PluginRegistry(None if bundles is None else BundlePlugins(bundles, runner))
    registry.register(NoopPlugin(), check_noop_params)
    registry.register(SleepPlugin(), check_sleep_params)
    registry.register(FailPlugin(), check_fail_params)
    registry.register(HttpPlugin(max_log_bytes=max_log_bytes), check_http_params)
    registry.register(QueuePlugin(task_hub or TaskHub()), check_queue_params)
    if inline_scripts:
        registry.register(runner, check_script_params)
    else:
        registry.register(DisabledScriptPlugin(), check_disabled_script)
    return registry
