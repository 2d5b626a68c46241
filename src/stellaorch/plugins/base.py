"""The plugin contract: what a step receives, what it returns, and how plugins are found."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from stellaorch.domain.errors import Conflict, NotFound, StepFailed
from stellaorch.domain.limits import MAX_JSON_DEPTH, value_depth_exceeds
from stellaorch.plugins.bundle_source import PluginIdentity

MAX_OUTPUT_BYTES = 1024 * 1024

_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def attempt_span_id(run_id: str, step_id: str, attempt: int) -> str:
    """16 hex digits naming one attempt's span, the same in every process."""
    return hashlib.sha256(f"{run_id}/{step_id}/{attempt}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StepContext:
    """Everything one attempt of one step may know about itself."""

    tenant: str
    run_id: str
    dag_id: str
    step_id: str
    attempt: int
    params: Mapping[str, Any]
    timeout_seconds: float
    trace_id: str
    # The step's declared `network` allowlist and `resources` (the sandbox enforces them).
    network: tuple[str, ...] = ()
    resources: Mapping[str, float] = field(default_factory=dict)
    # Kept out of repr so a logged context never leaks a secret value.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Where a plugin hands the log bytes it keeps while it runs (the worker's live log);
    # None: nobody listens, the log is only what the result carries.
    log_sink: Callable[[bytes], None] | None = field(default=None, repr=False, compare=False)
    # Where a plugin that runs processes reports their resource usage once they ended
    # (`cpuUserSeconds`, `cpuSystemSeconds`, `maxRssKiB`); None: nobody records it.
    usage_sink: Callable[[dict[str, Any]], None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def span_id(self) -> str:
        """16 hex digits naming this attempt's span, stable across processes and restarts."""
        return attempt_span_id(self.run_id, self.step_id, self.attempt)

    @property
    def traceparent(self) -> str:
        """W3C `traceparent` header value for this attempt (sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass(frozen=True)
class PluginResult:
    """What a successful attempt produced: a JSON object of outputs and its log text."""

    outputs: dict[str, Any] = field(default_factory=dict)
    logs: str = ""


class Plugin(Protocol):
    """A step implementation; `run` is called once per attempt.

    Contract: raise `StepFailed` for a typed failure (its `retryable` decides retries); any
    other exception is treated by the worker as a crash. The worker enforces timeouts and run
    cancellation by cancelling the task, so `run` must release every resource (processes,
    connections, files) on `asyncio.CancelledError` and then re-raise it.
    """

    name: str
    version: str

    async def run(self, ctx: StepContext) -> PluginResult:
        """Execute one attempt of a step."""
        ...


# (where inside the step's `with`, e.g. `command[0]` or `env.DATE`; "" for `with` itself,
# what is wrong). A check sees the raw parameters, references unresolved.
ParamProblem: TypeAlias = tuple[str, str]
ParamsCheck: TypeAlias = Callable[[Mapping[str, Any]], list[ParamProblem]]


def no_check(params: Mapping[str, Any]) -> list[ParamProblem]:
    """The check of a plugin that declares none: every parameter tree is accepted."""
    return []


@dataclass(frozen=True)
class ResolvedPlugin:
    """The plugin one attempt runs, and the identity the attempt records for it."""

    plugin: Plugin
    identity: PluginIdentity


class BundlePlugins(Protocol):
    """Where a registry looks up `name@version` references that are not built-ins."""

    def check_params(
        self, ref: str, params: Mapping[str, Any], tenant: str | None
    ) -> list[ParamProblem]:
        """Problems of a step's parameters; PluginNotFound when the tenant has no such bundle."""
        ...

    async def load(self, ref: str, tenant: str) -> ResolvedPlugin:
        """The verified bundle's plugin for one attempt, or a non-retryable `StepFailed`."""
        ...


class PluginNotFound(NotFound):
    """No registered plugin matches a step's `plugin` reference."""

    code = "PLUGIN_NOT_FOUND"


class PluginConflict(Conflict):
    """A plugin with the same `name@version` is already registered."""

    code = "PLUGIN_CONFLICT"


class PluginRegistry:
    """Plugins by name and version; steps address them as `name` or `name@version`."""

    def __init__(self, bundles: BundlePlugins | None = None) -> None:
        self._plugins: dict[str, dict[str, Plugin]] = {}
        self._checks: dict[tuple[str, str], ParamsCheck] = {}
        # A reference whose name is no built-in's is looked up here, per tenant.
        self.bundles = bundles

    def register(self, plugin: Plugin, check: ParamsCheck = no_check) -> None:
        """Add a plugin with the publish-time check of its parameters (`name@version` once)."""
        versions = self._plugins.setdefault(plugin.name, {})
        if plugin.version in versions:
            raise PluginConflict(f"plugin {plugin.name}@{plugin.version} is already registered")
        versions[plugin.version] = plugin
        self._checks[(plugin.name, plugin.version)] = check

    def check_params(
        self, ref: str, params: Mapping[str, Any], tenant: str | None = None
    ) -> list[ParamProblem]:
        """What is wrong with a step's static parameters; PluginNotFound for an unknown `ref`.

        A reference that names no built-in goes to the tenant's bundles; without a tenant
        (offline validation) only the shape of a bundle step's parameters is checked.
        """
        if self.bundles is not None and not self._is_builtin(ref):
            return self.bundles.check_params(ref, params, tenant)
        plugin = self.resolve(ref)
        return self._checks[(plugin.name, plugin.version)](params)

    async def load(self, ref: str, tenant: str) -> ResolvedPlugin:
        """The plugin an attempt of `tenant` runs for `ref`, with its identity."""
        if self.bundles is not None and not self._is_builtin(ref):
            return await self.bundles.load(ref, tenant)
        plugin = self.resolve(ref)
        return ResolvedPlugin(plugin, PluginIdentity(plugin.name, plugin.version))

    def _is_builtin(self, ref: str) -> bool:
        """Whether `ref` names a registered plugin (built-in names are never bundles)."""
        return ref.partition("@")[0] in self._plugins

    def resolve(self, ref: str) -> Plugin:
        """Find the plugin for `name` or `name@version`; a bare name must be unambiguous."""
        name, sep, version = ref.partition("@")
        versions = self._plugins.get(name, {})
        if sep:
            plugin = versions.get(version)
            if plugin is not None:
                return plugin
            raise self._not_found(ref, "no such plugin")
        if len(versions) == 1:
            return next(iter(versions.values()))
        reason = "ambiguous, give a version" if versions else "no such plugin"
        raise self._not_found(ref, reason)

    def names(self) -> list[str]:
        """Every registered plugin as `name@version`, sorted."""
        return sorted(f"{name}@{v}" for name, versions in self._plugins.items() for v in versions)

    def _not_found(self, ref: str, reason: str) -> PluginNotFound:
        known = self.names()
        message = f"plugin {ref!r}: {reason}; known plugins: {', '.join(known) or 'none'}"
        return PluginNotFound(message, details={"ref": ref, "known": known})


def check_outputs(outputs: object) -> dict[str, Any]:
    """Return `outputs` as a plain JSON object, or raise a non-retryable `StepFailed`."""
    if not isinstance(outputs, dict):
        raise _invalid(f"outputs must be a JSON object, got {type(outputs).__name__}")
    if not all(isinstance(key, str) for key in outputs):
        raise _invalid("outputs keys must be strings")
    if value_depth_exceeds(outputs):
        raise _invalid(f"outputs nest deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = _COMPACT_JSON.encode(outputs)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _invalid(f"outputs are not JSON-serialisable: {exc}") from exc
    size = len(text.encode("utf-8"))
    if size > MAX_OUTPUT_BYTES:
        raise StepFailed(
            "OUTPUT_TOO_LARGE",
            f"outputs are {size} bytes, more than {MAX_OUTPUT_BYTES}; use an artifact",
        )
    # Parsing back yields exactly what a reader of the stored JSON will see.
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def params_invalid(message: str) -> StepFailed:
    """The error for step parameters that can never work; retrying would not help."""
    return StepFailed("PARAMS_INVALID", message, retryable=False)


def _invalid(message: str) -> StepFailed:
    """Build the error for outputs that are not a JSON object."""
    return StepFailed("OUTPUT_INVALID", message)
