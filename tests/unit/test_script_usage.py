"""The script plugin's measuring leader: CPU time and peak RSS of the whole process tree."""

from __future__ import annotations

from typing import Any

import pytest

from stellaorch.domain.errors import StepFailed
from stellaorch.engine.step_metrics import attempt_metrics
from stellaorch.plugins import ScriptPlugin, StepContext
from stellaorch.plugins.usage import parse_report

BUSY_CHILD = "python3 -c \"b = b'x' * (32 << 20); n = sum(range(2_000_000))\"; echo done"


def ctx(command: Any, usage: list[dict[str, Any]]) -> StepContext:
    """An attempt context whose usage sink appends to `usage`."""
    return StepContext(
        tenant="t",
        run_id="r",
        dag_id="d",
        step_id="s",
        attempt=1,
        params={"command": command},
        timeout_seconds=30,
        trace_id="0" * 31 + "1",
        usage_sink=usage.append,
    )


async def test_a_grandchilds_cpu_and_memory_are_counted() -> None:
    usage: list[dict[str, Any]] = []
    result = await ScriptPlugin().run(ctx(BUSY_CHILD, usage))
    assert result.logs.strip().endswith("done")
    (report,) = usage
    assert report["cpuUserSeconds"] + report["cpuSystemSeconds"] > 0.02, report
    assert report["maxRssKiB"] > 32 << 10, report


async def test_failures_are_measured_and_keep_their_codes() -> None:
    usage: list[dict[str, Any]] = []
    with pytest.raises(StepFailed) as killed:
        await ScriptPlugin().run(ctx(["/bin/sh", "-c", "kill -TERM $$"], usage))
    assert killed.value.code == "SCRIPT_KILLED" and "SIGTERM" in killed.value.message
    with pytest.raises(StepFailed) as exited:
        await ScriptPlugin().run(ctx(["/bin/sh", "-c", "exit 3"], usage))
    assert "code 3" in exited.value.message
    with pytest.raises(StepFailed) as missing:
        await ScriptPlugin().run(ctx(["/nonexistent/program"], usage))
    assert missing.value.code == "SCRIPT_NOT_FOUND"
    assert "No such file" in missing.value.message
    assert len(usage) == 3 and all("maxRssKiB" in u for u in usage)


def test_a_report_is_parsed_leniently_and_an_exec_failure_is_recognised() -> None:
    report = parse_report(b'{"execErrno": 2}\nnot json\n[1]\n{"cpuUserSeconds": 0.5, "x": "y"}\n')
    assert report.exec_errno == 2 and report.usage == {"cpuUserSeconds": 0.5}
    assert parse_report(b"").usage == {}


def test_the_document_sums_cpu_and_leaves_unmeasured_fields_null() -> None:
    usage = {"cpuUserSeconds": 0.25, "cpuSystemSeconds": 0.5, "maxRssKiB": 2}
    doc = attempt_metrics(
        wall_seconds=1.5, log_bytes=10, outputs={"a": 1}, usage=usage, plugin="script"
    )
    assert (doc["cpuSeconds"], doc["maxRssBytes"], doc["outputBytes"]) == (0.75, 2048, 17)
    bare = attempt_metrics(wall_seconds=0.1, log_bytes=0, outputs=None, usage={}, plugin="noop")
    assert bare["cpuSeconds"] is None and bare["maxRssBytes"] is None and bare["outputBytes"] == 0
