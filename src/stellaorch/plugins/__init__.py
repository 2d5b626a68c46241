"""Plugins: the step contract, the registry and the built-in plugins."""

from stellaorch.plugins.base import (
    MAX_OUTPUT_BYTES,
    Plugin,
    PluginConflict,
    PluginNotFound,
    PluginRegistry,
    PluginResult,
    StepContext,
    check_outputs,
    params_invalid,
)
from stellaorch.plugins.builtin import (
    FailPlugin,
    NoopPlugin,
    SleepPlugin,
    builtin_registry,
)
from stellaorch.plugins.script import ScriptPlugin

__all__ = [
    "MAX_OUTPUT_BYTES",
    "FailPlugin",
    "NoopPlugin",
    "Plugin",
    "PluginConflict",
    "PluginNotFound",
    "PluginRegistry",
    "PluginResult",
    "ScriptPlugin",
    "SleepPlugin",
    "StepContext",
    "builtin_registry",
    "check_outputs",
    "params_invalid",
]
