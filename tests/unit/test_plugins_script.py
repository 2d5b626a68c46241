"""The script plugin: real subprocesses, their outputs, logs, environment and termination."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins import MAX_OUTPUT_BYTES, PluginResult, ScriptPlugin, StepContext

MARKER = re.compile(r"\[stella\] log truncated: (\d+) bytes dropped\n\Z")


def make_ctx(params: dict[str, Any]) -> StepContext:
    """A context for attempt 2 of step `build` of run `run-7`."""
    return StepContext(
        tenant="acme",
        run_id="run-7",
        dag_id="dag",
        step_id="build",
        attempt=2,
        params=params,
        timeout_seconds=30.0,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )


async def run_script(plugin: ScriptPlugin | None = None, **params: Any) -> PluginResult:
    """Run the script plugin with `params`."""
    return await (plugin or ScriptPlugin()).run(make_ctx(params))


async def script_failure(**params: Any) -> StepFailed:
    """Run the script plugin expecting a `StepFailed`, and return it."""
    with pytest.raises(StepFailed) as raised:
        await run_script(**params)
    return raised.value


def running_group_members(pgid: int) -> dict[int, str]:
    """Non-zombie processes of group `pgid` as pid -> command name, read from /proc."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, NotADirectoryError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and int(group) == pgid:
            members[int(entry.name)] = name
    return members


async def survivors(pgid: int, within: float = 3.0) -> dict[int, str]:
    """The group's live members once it emptied, or after `within` s (SIGKILL is delivered
    asynchronously: a killed process can still show as running for a moment under load)."""
    for _ in range(int(within / 0.02)):
        if not running_group_members(pgid):
            break
        await asyncio.sleep(0.02)
    return running_group_members(pgid)


# The shell's process group (field 5 of its /proc stat): the measuring leader's, not `$$`.
WRITE_PGID = "cut -d' ' -f5 /proc/$$/stat >"


def read_pgid(pidfile: Path) -> int | None:
    """The group id a script wrote with `{WRITE_PGID} pidfile`, once fully written."""
    text = pidfile.read_text() if pidfile.exists() else ""
    return int(text) if text.endswith("\n") else None


async def wait_for_sleepers(pidfile: Path, count: int) -> int:
    """Wait until the script wrote its pid to `pidfile` and `count` sleeps run in its group."""
    for _ in range(500):
        pgid = read_pgid(pidfile)
        if pgid and list(running_group_members(pgid).values()).count("sleep") >= count:
            return pgid
        await asyncio.sleep(0.01)
    raise AssertionError("the script's sleeps never started")


def path_exists(path: str) -> bool:
    """Whether `path` exists (a plain helper so async tests stay free of blocking calls)."""
    return os.path.exists(path)


async def cancel_and_time(task: asyncio.Task[PluginResult]) -> float:
    """Cancel `task`, wait at most 10 s for it to end, return how long that took."""
    started = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    return time.monotonic() - started


# --- outputs and logs --------------------------------------------------------------------


async def test_outputs_are_the_last_stdout_line_that_is_a_json_object() -> None:
    command = "echo '{\"n\": 1}'; echo plain; echo '{\"n\": 2}'; echo '[3]'; echo done"
    result = await run_script(command=command)
    assert result.outputs == {"n": 2}


async def test_outputs_are_empty_without_a_json_line() -> None:
    assert (await run_script(command="echo hello")).outputs == {}


async def test_logs_interleave_stdout_and_prefixed_stderr() -> None:
    result = await run_script(command="echo out; sleep 0.05; echo err >&2; sleep 0.05; echo end")
    assert result.logs == "out\n[stderr] err\nend\n"


async def test_nonzero_exit_is_a_retryable_failure_carrying_the_logs() -> None:
    error = await script_failure(command="echo working; echo broken >&2; exit 3")
    assert (error.code, error.retryable) == ("SCRIPT_EXIT_NONZERO", True)
    assert "exited with code 3" in error.message
    assert error.logs == "working\n[stderr] broken\n"


async def test_death_by_signal_is_a_retryable_script_killed() -> None:
    error = await script_failure(command=["/bin/sh", "-c", "kill -KILL $$"])
    assert (error.code, error.retryable) == ("SCRIPT_KILLED", True)
    assert "SIGKILL" in error.message


async def test_json_output_line_over_the_size_limit_is_output_too_large() -> None:
    code = f"print('{{\"v\": \"' + 'x' * {MAX_OUTPUT_BYTES} + '\"}}')"
    with pytest.raises(StepFailed) as raised:
        await run_script(ScriptPlugin(max_log_bytes=100), command=[sys.executable, "-c", code])
    assert (raised.value.code, raised.value.retryable) == ("OUTPUT_TOO_LARGE", False)
    assert MARKER.search(raised.value.logs)


# --- commands ----------------------------------------------------------------------------


async def test_string_command_runs_through_the_shell() -> None:
    result = await run_script(command="echo abc | tr a-c x-z")
    assert result.logs == "xyz\n"


async def test_list_command_is_executed_without_a_shell() -> None:
    result = await run_script(command=["echo", "$HOME", "a  b", "*"])
    assert result.logs == "$HOME a  b *\n"


async def test_stdin_is_written_to_the_command_then_closed() -> None:
    result = await run_script(command=["cat"], stdin='{"piped": true}\n')
    assert result.outputs == {"piped": True}


async def test_missing_program_is_a_non_retryable_script_not_found() -> None:
    error = await script_failure(command=["stella-no-such-program", "--help"])
    assert (error.code, error.retryable) == ("SCRIPT_NOT_FOUND", False)


async def test_file_without_execute_permission_is_script_not_found(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    error = await script_failure(command=[str(script)])
    assert error.code == "SCRIPT_NOT_FOUND"


async def test_shell_command_not_found_is_script_not_found() -> None:
    error = await script_failure(command="stella-no-such-program")
    assert (error.code, error.retryable) == ("SCRIPT_NOT_FOUND", False)
    assert "not found" in error.logs


@pytest.mark.parametrize(
    "params",
    [{}, {"command": ""}, {"command": "   "}, {"command": []}, {"command": [1]}, {"command": 7}],
    ids=["missing", "empty", "blank", "empty-list", "non-string-arg", "number"],
)
async def test_missing_or_invalid_command_is_params_invalid(params: dict[str, Any]) -> None:
    error = await script_failure(**params)
    assert (error.code, error.retryable) == ("PARAMS_INVALID", False)


@pytest.mark.parametrize(
    "params",
    [
        {"env": {"A": [1]}},
        {"env": {"A=B": "x"}},
        {"env": ["A"]},
        {"stdin": 5},
        {"cwd": "../escape"},
        {"cwd": "/stella/no/such/dir"},
        {"cwd": 7},
    ],
    ids=["env-value", "env-name", "env-list", "stdin", "cwd-above-work", "cwd-outside", "cwd-int"],
)
async def test_invalid_env_stdin_or_cwd_is_params_invalid(params: dict[str, Any]) -> None:
    error = await script_failure(command=["true"], **params)
    assert error.code == "PARAMS_INVALID"


# --- environment and working directory ---------------------------------------------------


async def test_environment_is_minimal_and_never_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STELLA_SECRET_TEST", "x")
    result = await run_script(command=["env"])
    names = {line.split("=", 1)[0] for line in result.logs.splitlines()}
    assert names == {
        "PATH",
        "HOME",
        "LANG",
        "TRACEPARENT",
        "STELLA_RUN_ID",
        "STELLA_STEP_ID",
        "STELLA_ATTEMPT",
    }


async def test_environment_identifies_the_attempt_and_its_trace() -> None:
    ctx = make_ctx({"command": ["env"]})
    result = await ScriptPlugin().run(ctx)
    env = dict(line.split("=", 1) for line in result.logs.splitlines())
    assert (env["STELLA_RUN_ID"], env["STELLA_STEP_ID"], env["STELLA_ATTEMPT"]) == (
        "run-7",
        "build",
        "2",
    )
    assert env["TRACEPARENT"] == ctx.traceparent


async def test_step_env_is_added_but_cannot_override_identity_vars() -> None:
    env = {"GREETING": "hi", "PATH": "/bin", "STELLA_RUN_ID": "forged"}
    result = await run_script(command=["env"], env=env)
    lines = result.logs.splitlines()
    assert {"GREETING=hi", "PATH=/bin", "STELLA_RUN_ID=run-7"} <= set(lines)


async def test_home_is_a_fresh_working_directory_removed_afterwards() -> None:
    result = await run_script(command='pwd; echo "$HOME"; touch made-here')
    cwd, home = result.logs.splitlines()
    assert cwd == home
    assert os.path.basename(home).startswith("stella-step-")
    assert not path_exists(home)


@pytest.mark.parametrize("cwd", ["sub/dir", "/work/sub/dir", "./sub/x/../dir"])
async def test_cwd_param_is_a_directory_under_the_work_dir(cwd: str) -> None:
    result = await run_script(command='pwd; echo "$HOME"', cwd=cwd)
    where, home = result.logs.splitlines()
    assert where == f"{home}/sub/dir"


# --- bounded output ----------------------------------------------------------------------


async def test_output_flood_is_truncated_fast_and_outputs_after_it_are_found() -> None:
    plugin = ScriptPlugin(max_log_bytes=64 * 1024)
    command = "yes 'filler line of output' | head -n 500000; echo '{\"after\": \"flood\"}'"
    started = time.monotonic()
    result = await run_script(plugin, command=command)
    assert time.monotonic() - started < 10
    assert result.outputs == {"after": "flood"}
    marker = MARKER.search(result.logs)
    assert marker is not None
    total = 500_000 * len("filler line of output\n") + len('{"after": "flood"}\n')
    assert int(marker.group(1)) == total - 64 * 1024
    assert len(result.logs[: marker.start()].encode()) <= 64 * 1024 + 1


async def test_stderr_flood_does_not_block_the_command() -> None:
    plugin = ScriptPlugin(max_log_bytes=1024)
    command = "head -c 8000000 /dev/zero >&2; echo '{\"done\": true}'"
    result = await asyncio.wait_for(run_script(plugin, command=command), timeout=10)
    assert result.outputs == {"done": True}
    assert MARKER.search(result.logs)


# --- termination -------------------------------------------------------------------------


async def test_cancelling_a_hanging_command_kills_its_whole_group_within_seconds(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pgid"
    command = f"{WRITE_PGID} {pidfile}; sleep 100 & sleep 100"
    task = asyncio.create_task(run_script(command=command))
    pgid = await wait_for_sleepers(pidfile, count=2)
    assert await cancel_and_time(task) < 3
    assert await survivors(pgid) == {}


async def test_timeout_of_a_hanging_command_raises_promptly() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await run_script(command=["sleep", "100"])
    assert time.monotonic() - started < 3


async def test_processes_ignoring_sigterm_are_killed_after_the_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    command = f"trap '' TERM; {WRITE_PGID} {pidfile}; sleep 100 & sleep 100"
    plugin = ScriptPlugin(kill_grace_seconds=0.3)
    task = asyncio.create_task(run_script(plugin, command=command))
    pgid = await wait_for_sleepers(pidfile, count=2)
    elapsed = await cancel_and_time(task)
    assert 0.3 <= elapsed < 3
    assert await survivors(pgid) == {}


async def test_background_process_does_not_outlive_a_finished_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    command = f"{WRITE_PGID} {pidfile}; sleep 100 & echo '{{\"ok\": true}}'"
    result = await asyncio.wait_for(run_script(command=command), timeout=10)
    assert result.outputs == {"ok": True}
    pgid = read_pgid(pidfile)
    assert pgid is not None
    assert await survivors(pgid) == {}


async def test_a_number_or_boolean_env_value_arrives_as_its_json_text() -> None:
    result = await run_script(
        command='printf "%s %s %s" "$N" "$F" "$B"', env={"N": 120, "F": 1.5, "B": True}
    )
    assert result.logs.strip() == "120 1.5 true"
