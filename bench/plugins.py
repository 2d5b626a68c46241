"""Per-step cost of a plugin from an already cached bundle against the same inline script.

Usage: .venv/bin/python bench/plugins.py [--runs N]
Both run `/bin/sh` printing one JSON line, sandboxed (a bundle never runs unconfined), through
the path a worker takes: `registry.load(ref, tenant)` then `plugin.run(ctx)`. The bundle is
served by an in-memory source whose bundle is already verified and unpacked (the cached
case), so what is measured is the bundle plugin's own overhead: resolution, the cached
program, one more read-only bind, the interpreter reading the script file. Interleaved so
drift hits both alike; prints p50/p90/p99 per mode and the p50 overhead, and the resolution
alone (no process) in microseconds. Target: p50 overhead <= 2 ms. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stellaorch.plugins import PluginRegistry, StepContext, builtin_registry
from stellaorch.plugins.bundle_source import LoadedBundle, PluginIdentity
from stellaorch.plugins.sandbox import Sandbox, SandboxConfig
from stellaorch.settings import Settings

TARGET_OVERHEAD_MS = 2.0
SCRIPT = "#!/bin/sh\necho '{\"ok\": true}'\n"
INLINE: dict[str, object] = {"command": ["/bin/sh", "-c", "echo '{\"ok\": true}'"]}
STEPS: dict[str, tuple[str, dict[str, object]]] = {
    "inline script": ("script", INLINE),
    "cached bundle": ("echo@1", {}),
}


class CachedSource:
    """A `BundleSource` holding one verified, unpacked bundle (what a warm worker cache has)."""

    def __init__(self, root: Path) -> None:
        self.bundle = LoadedBundle(
            name="echo",
            version="1",
            digest="sha256:" + "b" * 64,
            root_hash="sha256:" + "r" * 64,
            root=root,
            signed_by="bench",
            manifest={"plugin": {"type": "script", "entrypoint": "run"}},
        )

    def find(self, tenant: str, name: str, version: str) -> PluginIdentity | None:
        """The one bundle's identity."""
        return self.bundle.identity

    async def load(self, tenant: str, name: str, version: str) -> LoadedBundle:
        """The cached bundle, as a real source returns it after its first verification."""
        return self.bundle


def context(params: dict[str, object]) -> StepContext:
    """One attempt's context."""
    return StepContext(
        tenant="bench",
        run_id="run",
        dag_id="dag",
        step_id="step",
        attempt=1,
        params=params,
        timeout_seconds=60.0,
        trace_id="0" * 32,
    )


async def timed_step(registry: PluginRegistry, ref: str, params: dict[str, object]) -> float:
    """Milliseconds for one attempt: resolve, spawn, judge."""
    started = time.perf_counter()
    resolved = await registry.load(ref, "bench")
    result = await resolved.plugin.run(context(params))
    assert result.outputs == {"ok": True}, result
    return (time.perf_counter() - started) * 1000


async def timed_load(registry: PluginRegistry, ref: str, times: int) -> float:
    """Microseconds per resolution alone (no process)."""
    started = time.perf_counter()
    for _ in range(times):
        await registry.load(ref, "bench")
    return (time.perf_counter() - started) * 1e6 / times


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def measure(runs: int, root: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Interleaved step timings per mode, and resolution cost per mode."""
    sandbox = Sandbox(SandboxConfig.from_settings(Settings()))
    status = sandbox.status()
    if not status.available:
        sys.exit(f"sandbox unavailable: {status.reason}")
    registry = builtin_registry(sandbox=sandbox, bundles=CachedSource(root))
    samples: dict[str, list[float]] = {label: [] for label in STEPS}
    for ref, params in STEPS.values():  # warm-up: page cache, the sandbox's /etc
        await timed_step(registry, ref, params)
    for _ in range(runs):
        for label, (ref, params) in STEPS.items():
            samples[label].append(await timed_step(registry, ref, params))
    loads = {label: await timed_load(registry, ref, 20_000) for label, (ref, _) in STEPS.items()}
    return samples, loads


def bundle_dir() -> Path:
    """The unpacked bundle: readable by the sandbox's unprivileged uid."""
    root = Path(tempfile.mkdtemp(prefix="stella-bench-bundle-"))
    os.chmod(root, 0o755)
    (root / "run").write_text(SCRIPT)
    os.chmod(root / "run", 0o644)
    return root


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    root = bundle_dir()
    try:
        samples, loads = asyncio.run(measure(runs, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"sandboxed step wall time, {runs} runs each (ms); resolution alone (us)")
    print(f"{'step':<15} {'p50':>7} {'p90':>7} {'p99':>7} {'resolve':>9}")
    for label, values in samples.items():
        row = f"{label:<15} {statistics.median(values):7.2f} {quantile(values, 0.9):7.2f}"
        print(f"{row} {quantile(values, 0.99):7.2f} {loads[label]:9.2f}")
    overhead = statistics.median(samples["cached bundle"]) - statistics.median(
        samples["inline script"]
    )
    verdict = "ok" if overhead <= TARGET_OVERHEAD_MS else "OVER TARGET"
    print(f"\np50 overhead of a cached bundle step: {overhead:6.2f} ms (target <= 2 ms: {verdict})")
    sys.exit(0 if overhead <= TARGET_OVERHEAD_MS else 1)


if __name__ == "__main__":
    main()
