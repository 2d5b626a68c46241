"""Plugins from bundles: resolution per tenant, parameters, and their programs in the sandbox."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from bundle_fakes import FakeBundles
from stellaorch.domain.errors import StepFailed
from stellaorch.plugins import PluginNotFound, PluginRegistry, StepContext, builtin_registry
from stellaorch.plugins.bundle import BUNDLE_PLUGIN_INVALID, check_bundle_params
from stellaorch.plugins.bundle_source import BUNDLE_NOT_FOUND, BUNDLE_REVOKED
from stellaorch.plugins.sandbox import Limits, Sandbox, SandboxConfig
from stellaorch.settings import Settings

LIMITS = Limits(
    cpu_seconds=20, memory_mb=512, processes=64, open_files=256, file_size_mb=16, tmp_mb=8,
    work_mb=16,
)  # fmt: skip
ECHO = """#!/usr/bin/python3
import json, os, sys
print("log line")
print(json.dumps({
    "argv": sys.argv[1:], "stdin": sys.stdin.read(), "greeting": os.environ.get("GREETING"),
    "bundleDir": os.environ.get("STELLA_BUNDLE_DIR"), "uid": os.getuid(),
    "home": os.environ.get("HOME"), "cwd": os.getcwd(),
    "path": os.path.abspath(__file__),
}))
"""
WRITE = """#!/bin/sh
if echo x > /bundle/new 2>/dev/null; then echo WROTE; else echo '{"readOnly": true}'; fi
"""


@pytest.fixture
def bundles() -> Iterator[FakeBundles]:
    """An empty fake bundle source, removed afterwards."""
    source = FakeBundles()
    yield source
    source.close()


@pytest.fixture
def registry(bundles: FakeBundles) -> PluginRegistry:
    """The built-in registry with the fake bundles, sandboxed as a uid of its own."""
    uid = random.randrange(200_000, 2_000_000)
    bwrap = Settings().sandbox_bwrap
    config = SandboxConfig(bwrap=bwrap, uid=uid, gid=uid, defaults=LIMITS, ceiling=LIMITS)
    return builtin_registry(sandbox=Sandbox(config), bundles=bundles)


def ctx(params: dict[str, Any], tenant: str = "acme") -> StepContext:
    """One attempt of a bundle step."""
    return StepContext(
        tenant=tenant, run_id="run-1", dag_id="dag", step_id="tool", attempt=1, params=params,
        timeout_seconds=30.0, trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )  # fmt: skip


async def run(registry: PluginRegistry, ref: str, params: dict[str, Any]) -> dict[str, Any]:
    """Load `ref` for acme and run it; its outputs."""
    resolved = await registry.load(ref, "acme")
    return (await resolved.plugin.run(ctx(params))).outputs


async def failure(registry: PluginRegistry, ref: str, params: dict[str, Any]) -> StepFailed:
    """Load and run `ref`, expecting a StepFailed."""
    with pytest.raises(StepFailed) as raised:
        await run(registry, ref, params)
    return raised.value


# --- resolution and publish-time checks ------------------------------------------------------
def test_a_bundle_ref_resolves_only_for_the_tenant_that_imported_it(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "echo", "1.0.0", {"run": (ECHO, 0o644)})
    assert registry.check_params("echo@1.0.0", {"args": ["a"]}, "acme") == []
    with pytest.raises(PluginNotFound, match=r"tenant globex has imported no bundle echo@1\.0\.0"):
        registry.check_params("echo@1.0.0", {}, "globex")


def test_an_unknown_bundle_version_is_plugin_not_found(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "echo", "1.0.0", {"run": (ECHO, 0o644)})
    with pytest.raises(PluginNotFound) as raised:
        registry.check_params("echo@2.0.0", {}, "acme")
    assert raised.value.code == "PLUGIN_NOT_FOUND"


def test_a_bare_name_that_is_no_builtin_is_plugin_not_found(registry: PluginRegistry) -> None:
    with pytest.raises(PluginNotFound, match="named name@version"):
        registry.check_params("echo", {}, "acme")


def test_builtin_names_never_resolve_to_bundles(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "noop", "9", {"run": (ECHO, 0o644)})
    with pytest.raises(PluginNotFound, match="known plugins"):
        registry.check_params("noop@9", {}, "acme")


def test_bundle_params_are_checked_at_publish() -> None:
    problems = dict(
        check_bundle_params(
            {"args": "not-a-list", "env": {"PATH": "${inputs.p}"}, "stdin": 3, "cmd": "x"}
        )
    )
    assert set(problems) == {"args", "env.PATH", "stdin", "cmd"}
    assert "load or run" in problems["env.PATH"]


def test_references_in_args_env_values_and_stdin_are_data() -> None:
    params = {"args": ["-d", "${inputs.d}"], "env": {"D": "${inputs.d}"}, "stdin": "${inputs.s}"}
    assert check_bundle_params(params) == []


# --- running ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("require_sandbox")
async def test_a_script_bundle_runs_through_its_interpreter_line_with_args_env_and_stdin(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "echo", "1.0.0", {"run": (ECHO, 0o644)})
    params = {"args": ["a; rm -rf /", "$(id)"], "env": {"GREETING": "hi"}, "stdin": "in"}
    outputs = await run(registry, "echo@1.0.0", params)
    assert outputs["argv"] == ["a; rm -rf /", "$(id)"]
    assert outputs["stdin"] == "in" and outputs["greeting"] == "hi"
    assert outputs["bundleDir"] == "/bundle" and outputs["path"] == "/bundle/run"
    assert outputs["home"] == "/work" and outputs["cwd"] == "/work"
    assert outputs["uid"] != 0


@pytest.mark.usefixtures("require_sandbox")
async def test_load_returns_the_bundle_identity(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundle = bundles.add("acme", "echo", "1.0.0", {"run": (ECHO, 0o644)})
    resolved = await registry.load("echo@1.0.0", "acme")
    assert resolved.identity.as_json() == {
        "kind": "bundle", "name": "echo", "version": "1.0.0", "digest": bundle.digest,
    }  # fmt: skip
    builtin = await registry.load("noop", "acme")
    assert builtin.identity.as_json() == {
        "kind": "builtin", "name": "noop", "version": "1", "digest": None,
    }  # fmt: skip


@pytest.mark.usefixtures("require_sandbox")
async def test_the_bundle_is_mounted_read_only(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "writer", "1", {"run": (WRITE, 0o644)})
    assert await run(registry, "writer@1", {}) == {"readOnly": True}


@pytest.mark.usefixtures("require_sandbox")
async def test_a_cli_bundle_runs_its_executable_tool(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    tool = '#!/bin/sh\nprintf \'{"args": "%s"}\\n\' "$*"\n'
    bundles.add("acme", "tool", "2", {"bin/tool": (tool, 0o755)}, kind="cli", entrypoint="bin/tool")
    assert await run(registry, "tool@2", {"args": ["x", "y"]}) == {"args": "x y"}


async def test_a_cli_entrypoint_that_is_not_executable_is_refused(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    files = {"tool": ("#!/bin/sh\n", 0o644)}
    bundles.add("acme", "tool", "2", files, kind="cli", entrypoint="tool")
    error = await failure(registry, "tool@2", {})
    assert error.code == BUNDLE_PLUGIN_INVALID and not error.retryable
    assert "not executable" in error.message


async def test_a_script_without_an_interpreter_line_is_refused(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "bad", "1", {"run": ("echo hi\n", 0o755)})
    error = await failure(registry, "bad@1", {})
    assert error.code == BUNDLE_PLUGIN_INVALID and "#!" in error.message


@pytest.mark.parametrize("entrypoint", ["../outside", "/etc/passwd", "a/../run", "", "link"])
async def test_an_entrypoint_outside_the_bundle_is_refused(
    bundles: FakeBundles, registry: PluginRegistry, entrypoint: str
) -> None:
    bundle = bundles.add("acme", "esc", "1", {"run": (ECHO, 0o644)}, entrypoint=entrypoint)
    (bundle.root / "link").symlink_to("/etc/passwd")
    error = await failure(registry, "esc@1", {})
    assert error.code == BUNDLE_PLUGIN_INVALID and not error.retryable


async def test_an_unknown_plugin_type_is_refused(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("acme", "odd", "1", {"run": (ECHO, 0o644)}, kind="wasm")
    error = await failure(registry, "odd@1", {})
    assert error.code == BUNDLE_PLUGIN_INVALID and "wasm" in error.message


@pytest.mark.parametrize("code", [BUNDLE_NOT_FOUND, BUNDLE_REVOKED, "BUNDLE_UNVERIFIED"])
async def test_a_bundle_that_cannot_be_loaded_fails_with_the_source_code(
    bundles: FakeBundles, registry: PluginRegistry, code: str
) -> None:
    bundles.add("acme", "echo", "1", {"run": (ECHO, 0o644)})
    bundles.broken[("acme", "echo", "1")] = code
    error = await failure(registry, "echo@1", {})
    assert error.code == code and not error.retryable


async def test_another_tenants_bundle_is_not_loaded(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    bundles.add("globex", "echo", "1", {"run": (ECHO, 0o644)})
    error = await failure(registry, "echo@1", {})
    assert error.code == BUNDLE_NOT_FOUND


async def test_a_bundle_never_runs_without_the_sandbox(bundles: FakeBundles) -> None:
    bundles.add("acme", "echo", "1", {"run": (ECHO, 0o644)})
    unconfined = builtin_registry(sandbox=Sandbox(SandboxConfig(enabled=False)), bundles=bundles)
    error = await failure(unconfined, "echo@1", {})
    assert error.code == "SANDBOX_UNAVAILABLE"


@pytest.mark.usefixtures("require_sandbox")
async def test_a_bundle_step_has_no_network_without_an_allowlist(
    bundles: FakeBundles, registry: PluginRegistry
) -> None:
    probe = (
        "#!/usr/bin/python3\nimport json, socket\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); ok = True\n"
        "except OSError:\n    ok = False\nprint(json.dumps({'connected': ok}))\n"
    )
    bundles.add("acme", "net", "1", {"run": (probe, 0o644)})
    assert json.dumps(await run(registry, "net@1", {})) == '{"connected": false}'
