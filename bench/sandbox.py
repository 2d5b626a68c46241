"""Sandbox overhead per script step: the same command unconfined and inside bubblewrap.

Usage: .venv/bin/python bench/sandbox.py [--runs N]
Runs `/bin/true` (and a small shell pipeline) through the real `script` plugin, first
unconfined, then sandboxed (namespaces, minimal file system, rlimits), interleaved so drift
hits both alike; prints p50/p90/p99 per mode and the p50 overhead. Target: p50 overhead
<= 10 ms. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from stellaorch.plugins import ScriptPlugin, StepContext
from stellaorch.plugins.sandbox import Sandbox, SandboxConfig

TARGET_OVERHEAD_MS = 10.0
COMMANDS: dict[str, Any] = {
    "/bin/true (argv)": ["/bin/true"],
    "sh pipeline": "echo hello | tr a-z A-Z > /dev/null; echo '{\"ok\": true}'",
}


def context(command: Any) -> StepContext:
    """One attempt's context running `command`."""
    return StepContext(
        tenant="bench",
        run_id="run",
        dag_id="dag",
        step_id="step",
        attempt=1,
        params={"command": command},
        timeout_seconds=60.0,
        trace_id="0" * 32,
    )


async def timed(plugin: ScriptPlugin, command: Any) -> float:
    """Milliseconds for one attempt, spawn to judged result."""
    started = time.perf_counter()
    await plugin.run(context(command))
    return (time.perf_counter() - started) * 1000


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def measure(runs: int) -> list[tuple[str, str, list[float]]]:
    """Interleaved timings per command and mode."""
    sandbox = Sandbox(SandboxConfig())
    status = sandbox.status()
    if not status.available:
        sys.exit(f"sandbox unavailable: {status.reason}")
    plugins = {"unconfined": ScriptPlugin(), "sandboxed": ScriptPlugin(sandbox=sandbox)}
    results: list[tuple[str, str, list[float]]] = []
    for label, command in COMMANDS.items():
        samples: dict[str, list[float]] = {mode: [] for mode in plugins}
        for plugin in plugins.values():  # warm-up: page cache, the /etc directory
            await timed(plugin, command)
        for _ in range(runs):
            for mode, plugin in plugins.items():
                samples[mode].append(await timed(plugin, command))
        results += [(label, mode, values) for mode, values in samples.items()]
    return results


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    results = asyncio.run(measure(runs))
    print(f"script step wall time, {runs} runs each (ms)")
    print(f"{'command':<20} {'mode':<11} {'p50':>7} {'p90':>7} {'p99':>7}")
    p50: dict[tuple[str, str], float] = {}
    for label, mode, values in results:
        p50[(label, mode)] = statistics.median(values)
        row = f"{label:<20} {mode:<11} {p50[(label, mode)]:7.2f}"
        print(f"{row} {quantile(values, 0.9):7.2f} {quantile(values, 0.99):7.2f}")
    print()
    missed = False
    for label in COMMANDS:
        overhead = p50[(label, "sandboxed")] - p50[(label, "unconfined")]
        missed |= overhead > TARGET_OVERHEAD_MS
        verdict = "ok" if overhead <= TARGET_OVERHEAD_MS else "OVER TARGET"
        print(f"p50 overhead {label:<20} {overhead:6.2f} ms (target <= 10 ms: {verdict})")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
