"""Steps whose `plugin` is `name@version` of a tenant's bundle: its script or tool, sandboxed.

The bundle's manifest says what it runs: `{"plugin": {"type": "script" | "cli", "entrypoint":
"relative/path"}}`. A `script` is started through the interpreter its first line names
(`#!/usr/bin/python3`, `#!/usr/bin/env sh`), so it need not be executable; a `cli` tool is
executed directly and must be. Either runs in the step sandbox with the unpacked bundle bound
read-only at `/bundle` (also `STELLA_BUNDLE_DIR`), the work directory `/work`, the step's
network allowlist and resource limits, and an environment of only the declared `env`.

Parameters (`with`): `args` (list of strings: argv after the entrypoint, each one element),
`env` (object of strings) and `stdin` (string). Outputs are read as for inline scripts: the
last stdout line that is a JSON object.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import (
    ParamProblem,
    PluginNotFound,
    PluginResult,
    ResolvedPlugin,
    StepContext,
    params_invalid,
)
from stellaorch.plugins.bundle_source import BundleSource, LoadedBundle
from stellaorch.plugins.params import static_problems, unknown_keys
from stellaorch.plugins.sandbox import WORK_DIR
from stellaorch.plugins.script import ScriptParams, ScriptPlugin, parse_env, parse_stdin
from stellaorch.plugins.script_rules import env_problems

BUNDLE_DIR = "/bundle"
BUNDLE_PARAMS = ("args", "env", "stdin")
# A bundle whose manifest cannot be run as it says: a retry would find the same bytes.
BUNDLE_PLUGIN_INVALID = "BUNDLE_PLUGIN_INVALID"
_TYPES = ("script", "cli")
_SHEBANG_BYTES = 256


class BundleStepParams:
    """The validated `with` of a bundle step."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.args = _args(params.get("args", []))
        self.env = parse_env(params.get("env", {}))
        self.stdin = parse_stdin(params.get("stdin"))


def check_bundle_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: known keys, shapes of static fields, no reference loading code."""
    problems = unknown_keys("bundle plugin", params, BUNDLE_PARAMS)
    problems += env_problems(params.get("env"))
    return problems + static_problems(params, _PARSERS)


def _args(value: object) -> tuple[str, ...]:
    """The extra argv: strings; a whole reference's number or boolean becomes its JSON text."""
    if not isinstance(value, list | tuple):
        raise params_invalid("bundle plugin: 'args' must be a list of strings")
    args = []
    for item in value:
        if isinstance(item, bool | int | float):
            item = str(item).lower() if isinstance(item, bool) else str(item)
        if not isinstance(item, str) or "\0" in item:
            raise params_invalid("bundle plugin: every 'args' item must be a string without NUL")
        args.append(item)
    return tuple(args)


_PARSERS: dict[str, Callable[[object], object]] = {
    "args": _args,
    "env": parse_env,
    "stdin": parse_stdin,
}


def split_ref(ref: str) -> tuple[str, str]:
    """(`name`, `version`) of a bundle reference; PluginNotFound unless it is `name@version`."""
    name, _, version = ref.partition("@")
    if not name or not version:
        message = f"plugin {ref!r}: no such built-in, and a bundle plugin is named name@version"
        raise PluginNotFound(message, details={"ref": ref})
    return name, version


class BundlePlugins:
    """The registry's fallback: a tenant's bundles, found and loaded through a `BundleSource`."""

    def __init__(self, source: BundleSource, runner: ScriptPlugin) -> None:
        self._source = source
        self._runner = runner
        self._programs: dict[str, tuple[str, ...]] = {}  # digest -> argv up to the args

    def check_params(
        self, ref: str, params: Mapping[str, Any], tenant: str | None
    ) -> list[ParamProblem]:
        """PluginNotFound unless the tenant imported the bundle; then the parameters' problems."""
        name, version = split_ref(ref)
        if tenant is not None and self._source.find(tenant, name, version) is None:
            message = f"plugin {ref!r}: tenant {tenant} has imported no bundle {name}@{version}"
            raise PluginNotFound(message, details={"ref": ref})
        return check_bundle_params(params)

    async def load(self, ref: str, tenant: str) -> ResolvedPlugin:
        """Load (verified, cached by the source) and wrap the bundle's program for one attempt."""
        name, version = split_ref(ref)
        bundle = await self._source.load(tenant, name, version)
        program = self._programs.get(bundle.digest)
        if program is None:
            program = self._programs[bundle.digest] = program_argv(bundle)
        return ResolvedPlugin(BundleProgram(bundle, program, self._runner), bundle.identity)


class BundleProgram:
    """One loaded bundle's program as a `Plugin`."""

    def __init__(
        self, bundle: LoadedBundle, program: tuple[str, ...], runner: ScriptPlugin
    ) -> None:
        self.name = bundle.name
        self.version = bundle.version
        self._root = str(bundle.root)
        self._program = program
        self._runner = runner

    async def run(self, ctx: StepContext) -> PluginResult:
        """Run the program with the step's args, env and stdin in the sandbox."""
        step = BundleStepParams(ctx.params)
        params = ScriptParams(
            argv=(*self._program, *step.args),
            via_shell=False,
            env={**step.env, "STELLA_BUNDLE_DIR": BUNDLE_DIR},
            stdin=step.stdin,
            cwd=WORK_DIR,
        )
        return await self._runner.run_program(ctx, params, [(self._root, BUNDLE_DIR)])


def program_argv(bundle: LoadedBundle) -> tuple[str, ...]:
    """The argv that starts the bundle's entrypoint inside the sandbox (before the args)."""
    kind, entry = _plugin_section(bundle)
    host = _entry_on_host(bundle.root, entry)
    inside = f"{BUNDLE_DIR}/{entry}"
    if kind == "cli":
        if not os.stat(host).st_mode & 0o111:
            raise _invalid(bundle, f"its cli entrypoint {entry!r} is not executable")
        return (inside,)
    return (*_interpreter(bundle, host, entry), inside)


def _plugin_section(bundle: LoadedBundle) -> tuple[str, str]:
    """The manifest's plugin type and entrypoint, checked."""
    section = bundle.manifest.get("plugin")
    if not isinstance(section, Mapping):
        raise _invalid(bundle, "its manifest has no 'plugin' object")
    kind, entry = section.get("type"), section.get("entrypoint")
    if kind not in _TYPES:
        raise _invalid(bundle, f"its plugin type {kind!r} is not one of {', '.join(_TYPES)}")
    if not isinstance(entry, str) or not _is_relative_inside(entry):
        raise _invalid(bundle, f"its entrypoint {entry!r} is not a relative path inside it")
    return str(kind), entry


def _is_relative_inside(entry: str) -> bool:
    """A relative POSIX path without `..`, `.` or empty segments, NUL or backslash."""
    path = PurePosixPath(entry)
    parts = entry.split("/")
    bad = any(p in ("", ".", "..") for p in parts) or "\0" in entry or "\\" in entry
    return not path.is_absolute() and not bad


def _entry_on_host(root: Path, entry: str) -> str:
    """The entrypoint's host path; it must be a regular file that stays inside the bundle."""
    real_root = os.path.realpath(root)
    host = os.path.realpath(os.path.join(real_root, entry))
    if not host.startswith(real_root + os.sep) or not os.path.isfile(host):
        message = f"the bundle's entrypoint {entry!r} is not a file inside it"
        raise StepFailed(BUNDLE_PLUGIN_INVALID, message, retryable=False)
    return host


def _interpreter(bundle: LoadedBundle, host: str, entry: str) -> tuple[str, ...]:
    """The `#!` line of a script entrypoint as argv: the interpreter and its one argument."""
    with open(host, "rb") as handle:
        head = handle.read(_SHEBANG_BYTES)
    line = head.split(b"\n", 1)[0]
    if not line.startswith(b"#!") or b"\n" not in head:
        raise _invalid(bundle, f"its script {entry!r} does not start with a #! interpreter line")
    words = line[2:].decode("utf-8", "replace").strip().split(None, 1)
    if not words or not words[0].startswith("/"):
        raise _invalid(bundle, f"the #! line of {entry!r} must name an absolute interpreter")
    return tuple(words)


def _invalid(bundle: LoadedBundle, why: str) -> StepFailed:
    """The non-retryable error of a bundle that cannot run as its manifest says."""
    message = f"bundle {bundle.name}@{bundle.version} cannot run: {why}"
    return StepFailed(BUNDLE_PLUGIN_INVALID, message, retryable=False)
