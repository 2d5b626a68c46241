"""The `script` plugin: run a command in its own process group with a minimal environment.

Parameters: `command` (list of strings, executed directly, or a string run by `/bin/sh -c`),
optional `env` (object of strings), `stdin` (string written then closed) and `cwd` (absolute
path; default is a fresh temporary directory, removed afterwards, which is also `HOME`).
Outputs are the last stdout line that is a JSON object; logs are described in `capture`.
When the leader process ends, or the attempt is cancelled, the whole process group is sent
SIGTERM and, after a grace period, SIGKILL, so no process of the step outlives it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import tempfile
from asyncio import SubprocessTransport
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import PluginResult, StepContext, check_outputs, params_invalid
from stellaorch.plugins.capture import OutputCapture
from stellaorch.plugins.egress_forward import EXEC_FAILED
from stellaorch.plugins.egress_step import step_network
from stellaorch.plugins.overrun import limit_failure
from stellaorch.plugins.procgroup import terminate_group
from stellaorch.plugins.sandbox import TMP_DIR, WORK_DIR, Limits, Sandbox, sandbox_cwd
from stellaorch.plugins.usage import UsageMeter

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
SHELL = "/bin/sh"
# Exit codes by which POSIX shells report "command not found" and "found but not executable".
_SHELL_NOT_FOUND_CODES = (126, 127)
_NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ENOEXEC})
_STDIN, _STDERR = 0, 2
# Bounded wait for the pipes to close once the group is gone; only a process that left the
# group (setsid) while holding them could keep them open.
_DRAIN_SECONDS = 5.0
# Inside the sandbox `prlimit` (or the egress forwarder) executes the command and says so when
# it cannot; bubblewrap reports death by signal N as exit code 128 + N.
_EXEC_FAILED = ("prlimit: failed to execute", EXEC_FAILED)
_SIGNAL_EXIT_BASE = 128


@dataclass(frozen=True)
class ScriptParams:
    """Validated parameters of a script step."""

    argv: tuple[str, ...]
    via_shell: bool
    env: dict[str, str]
    stdin: bytes | None
    cwd: str

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> ScriptParams:
        """Validate raw step parameters; anything unusable is `PARAMS_INVALID`."""
        argv, via_shell = _argv(params.get("command"))
        return cls(
            argv=argv,
            via_shell=via_shell,
            env=parse_env(params.get("env", {})),
            stdin=parse_stdin(params.get("stdin")),
            cwd=_cwd(params.get("cwd")),
        )

    @property
    def program(self) -> str:
        """How error messages name the command."""
        return "shell command" if self.via_shell else f"command {self.argv[0]!r}"


class ScriptPlugin:
    """Runs `params.command` as a subprocess; see the module docstring for the contract."""

    name = "script"
    version = "1"

    def __init__(
        self,
        *,
        max_log_bytes: int = 1024 * 1024,
        kill_grace_seconds: float = 2.0,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._max_log_bytes = max_log_bytes
        self._kill_grace_seconds = kill_grace_seconds
        # None runs commands unconfined: for tests of the plugin itself, never for a server.
        self._sandbox = sandbox

    async def run(self, ctx: StepContext) -> PluginResult:
        """Run the command to completion and turn its exit status into a result or error."""
        params = ScriptParams.parse(ctx.params)
        if self._sandbox is not None and self._sandbox.enabled:
            # The first call probes bubblewrap (a blocking subprocess): off the event loop.
            await asyncio.to_thread(self._sandbox.require)
            return await self._run_sandboxed(ctx, params, self._sandbox, ())
        # One mkdir, done inline: in a thread, a cancellation could lose the path and leak it.
        workdir = tempfile.mkdtemp(prefix="stella-step-")
        try:
            cwd = _host_cwd(workdir, params.cwd)
            env = child_env(ctx, workdir, params.env)
            return await self._run_in(params, lambda m: m.wrap([*params.argv]), env, cwd, None, ctx)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)

    async def run_program(
        self, ctx: StepContext, params: ScriptParams, ro_binds: list[tuple[str, str]]
    ) -> PluginResult:
        """Run a parsed program with extra read-only binds; only ever inside the sandbox."""
        if self._sandbox is None or not self._sandbox.enabled:
            message = "plugins from bundles run only inside the step sandbox, which is off"
            raise StepFailed("SANDBOX_UNAVAILABLE", message, retryable=False)
        await asyncio.to_thread(self._sandbox.require)
        for host, _target in ro_binds:
            blocked = self._sandbox.blocked_parent(host)
            if blocked is not None:
                uid = self._sandbox.config.uid
                message = (
                    f"the step sandbox (uid {uid}) cannot enter {blocked}, above {host}: "
                    "let it traverse (chmod o+x) or set STELLA_ORCH_BUNDLE_CACHE_DIR elsewhere"
                )
                raise StepFailed("SANDBOX_UNAVAILABLE", message, retryable=False)
        return await self._run_sandboxed(ctx, params, self._sandbox, ro_binds)

    async def _run_sandboxed(
        self,
        ctx: StepContext,
        params: ScriptParams,
        sandbox: Sandbox,
        ro_binds: list[tuple[str, str]] | tuple[()],
    ) -> PluginResult:
        """Run inside bubblewrap with the step's limits; the work dir lives and dies with it."""
        limits = sandbox.config.defaults.for_step(ctx.resources, sandbox.config.ceiling)
        env = {**child_env(ctx, WORK_DIR, params.env), "TMPDIR": TMP_DIR}
        owner = (sandbox.config.uid, sandbox.config.gid) if sandbox.separate_uid else None
        async with step_network(ctx.network, owner=owner) as network:
            env.update(network.env)
            argv = [*network.argv_prefix, *params.argv]

            def command(meter: UsageMeter) -> list[str]:
                return sandbox.launch(
                    meter.wrap_inside(argv),
                    limits,
                    cwd=params.cwd,
                    binds=network.binds,
                    ro_binds=[*network.ro_binds, *ro_binds],
                )

            return await self._run_in(params, command, env, "/", limits, ctx)

    async def _run_in(
        self,
        params: ScriptParams,
        command: Callable[[UsageMeter], list[str]],
        env: dict[str, str],
        cwd: str,
        limits: Limits | None,
        ctx: StepContext,
    ) -> PluginResult:
        """Spawn, supervise and judge the command; `limits` is None when unconfined.

        `command` builds the argv around the leader that measures the process tree."""
        capture = OutputCapture(self._max_log_bytes, ctx.log_sink)
        meter = UsageMeter()  # the leader reports the tree's CPU time and peak RSS on it
        try:
            spawn = (params, command(meter), env, cwd, capture, meter)
            transport, protocol = await self._spawn_whole(*spawn)
            try:
                await self._supervise(transport, protocol, params.stdin)
            finally:
                transport.close()
            report = meter.read()
        finally:
            meter.close()
        if ctx.usage_sink is not None:
            ctx.usage_sink(report.usage)
        returncode = transport.get_returncode()
        assert returncode is not None  # _supervise returns only once the leader has exited
        if report.exec_errno is not None:
            message = f"{params.program} cannot be executed: {os.strerror(report.exec_errno)}"
            raise StepFailed("SCRIPT_NOT_FOUND", message, logs=capture.logs())
        if limits is not None:
            return _sandboxed_result(params, returncode, capture, limits)
        return _result(params, returncode, capture)

    async def _spawn_whole(
        self,
        params: ScriptParams,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        capture: OutputCapture,
        meter: UsageMeter,
    ) -> tuple[SubprocessTransport, _StepProtocol]:
        """`_spawn`, never cut short: a cancellation that lands while the pipes connect (the
        command already runs) stops the whole group once the spawn is done. Left to asyncio,
        it kills only the leader and then waits for pipes the leader's children hold open."""
        spawning = asyncio.ensure_future(_spawn(params, argv, env, cwd, capture, meter))
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            try:
                transport, protocol = await spawning
            except Exception:  # noqa: S110 - it never started; the cancellation is what counts
                pass
            else:
                try:
                    await self._end_group(transport, protocol)
                finally:
                    transport.close()
            raise

    async def _supervise(
        self, transport: SubprocessTransport, protocol: _StepProtocol, stdin: bytes | None
    ) -> None:
        """Wait for the leader to exit; then (or on cancellation) end the group and drain."""
        if stdin is not None:
            _feed(transport, stdin)
        try:
            await protocol.exited.wait()
        finally:
            # On exit and on cancellation alike: nothing the step started may outlive it.
            await self._end_group(transport, protocol)

    async def _end_group(self, transport: SubprocessTransport, protocol: _StepProtocol) -> None:
        """Stop whatever of the group still runs, then drain its pipes so the log is whole."""
        await self._stop_group(transport.get_pid(), protocol)
        await _drain(protocol)

    async def _stop_group(self, pgid: int, protocol: _StepProtocol) -> None:
        """SIGTERM the process group, SIGKILL what is left after the grace, await the leader."""
        try:
            await terminate_group(pgid, self._kill_grace_seconds)
        finally:
            await protocol.exited.wait()


class _StepProtocol(asyncio.SubprocessProtocol):
    """Feeds the child's pipes into an `OutputCapture` as data arrives; flags exit and close.

    A protocol rather than `asyncio.subprocess.Process`: on Python 3.11 `Process.wait()` also
    waits for the pipes to close, which a leftover background process can delay forever, and
    data arriving in callbacks is consumed at once, so a full log never stalls the child.
    """

    def __init__(self, capture: OutputCapture) -> None:
        self.capture = capture
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Bytes from stdout or stderr."""
        self.capture.feed(data, stderr=fd == _STDERR)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """EOF on a pipe; stdin closing is of no interest."""
        if fd != _STDIN:
            self.capture.end(stderr=fd == _STDERR)

    def process_exited(self) -> None:
        """The leader exited (other group members and the pipes may live on)."""
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """The leader exited and every pipe is closed."""
        self.closed.set()


def child_env(ctx: StepContext, home: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The child's whole environment; the step's `env` cannot override Stella's identity vars."""
    return {
        "PATH": DEFAULT_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        **extra,
        "TRACEPARENT": ctx.traceparent,
        "STELLA_RUN_ID": ctx.run_id,
        "STELLA_STEP_ID": ctx.step_id,
        "STELLA_ATTEMPT": str(ctx.attempt),
    }


async def _spawn(
    params: ScriptParams,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    capture: OutputCapture,
    meter: UsageMeter,
) -> tuple[SubprocessTransport, _StepProtocol]:
    """Start the command as leader of a new session, so its whole group can be signalled."""
    loop = asyncio.get_running_loop()
    try:
        spawned = await loop.subprocess_exec(
            lambda: _StepProtocol(capture),
            *argv,
            stdin=DEVNULL if params.stdin is None else PIPE,
            stdout=PIPE,
            stderr=PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
            pass_fds=meter.fds,
        )
        meter.spawned()
        return spawned
    except OSError as exc:
        # subprocess names the directory when chdir failed and the program when exec failed.
        if exc.filename == cwd:
            raise params_invalid(f"script: cannot use cwd {cwd!r}: {exc.strerror}") from exc
        if exc.errno in _NOT_FOUND_ERRNOS:
            message = f"{params.program} cannot be executed: {exc.strerror}"
            raise StepFailed("SCRIPT_NOT_FOUND", message) from exc
        raise


def _feed(transport: SubprocessTransport, data: bytes) -> None:
    """Queue `data` for the child's stdin and close it once written (a child may not read)."""
    pipe = transport.get_pipe_transport(_STDIN)
    assert isinstance(pipe, asyncio.WriteTransport)
    pipe.write(data)
    pipe.close()


async def _drain(protocol: _StepProtocol) -> None:
    """Wait until every pipe is closed so the log is complete; bounded, see `_DRAIN_SECONDS`."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            await protocol.closed.wait()
    except TimeoutError:
        protocol.capture.note("output capture stopped: a pipe stayed open after the group ended")


def _result(params: ScriptParams, returncode: int, capture: OutputCapture) -> PluginResult:
    """Success with the outputs for exit code 0; a typed `StepFailed` otherwise."""
    logs = capture.logs()
    if returncode != 0:
        raise _exit_failure(params, returncode, logs)
    try:
        outputs = check_outputs(capture.outputs)
    except StepFailed as exc:
        raise StepFailed(exc.code, exc.message, retryable=exc.retryable, logs=logs) from exc
    return PluginResult(outputs=outputs, logs=logs)


def _sandboxed_result(
    params: ScriptParams, returncode: int, capture: OutputCapture, limits: Limits
) -> PluginResult:
    """Like `_result`, but a hit resource limit is its own error and 128+N means signal N."""
    overrun = limit_failure(returncode, capture.stderr_tail(), limits, capture.logs())
    if overrun is not None:
        raise overrun
    tail = capture.stderr_tail()
    if returncode in _SHELL_NOT_FOUND_CODES and any(marker in tail for marker in _EXEC_FAILED):
        message = f"{params.program} cannot be executed in the sandbox (not found or no access)"
        raise StepFailed("SCRIPT_NOT_FOUND", message, logs=capture.logs())
    if _SIGNAL_EXIT_BASE < returncode < _SIGNAL_EXIT_BASE + signal.NSIG:
        returncode = _SIGNAL_EXIT_BASE - returncode  # negative: the signal's number
    return _result(params, returncode, capture)


def _exit_failure(params: ScriptParams, returncode: int, logs: str) -> StepFailed:
    """The error for a non-zero exit status (negative means killed by that signal)."""
    if returncode < 0:
        message = f"{params.program} was killed by {_signal_name(-returncode)}"
        return StepFailed("SCRIPT_KILLED", message, retryable=True, logs=logs)
    if params.via_shell and returncode in _SHELL_NOT_FOUND_CODES:
        message = f"{params.program} exited with code {returncode}: command not found"
        return StepFailed("SCRIPT_NOT_FOUND", message, logs=logs)
    message = f"{params.program} exited with code {returncode}"
    return StepFailed("SCRIPT_EXIT_NONZERO", message, retryable=True, logs=logs)


def _signal_name(number: int) -> str:
    """`SIGKILL` for 9; a plain description for numbers Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def field_problems(params: Mapping[str, Any], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Publish-time use of the checks `parse` runs: (field, message) for each failing field."""
    parsers = {"command": _argv, "env": parse_env, "stdin": parse_stdin, "cwd": _cwd}
    problems = []
    for name in names:
        try:
            parsers[name](params.get(name, {} if name == "env" else None))
        except StepFailed as exc:
            problems.append((name, exc.message))
    return problems


def _argv(command: object) -> tuple[tuple[str, ...], bool]:
    """The argv to execute and whether it goes through the shell."""
    if isinstance(command, str) and command.strip():
        return (SHELL, "-c", _no_nul(command, "command")), True
    if isinstance(command, list | tuple) and command and all(isinstance(a, str) for a in command):
        if not command[0]:
            raise params_invalid("script: 'command' must start with a program name")
        return tuple(_no_nul(arg, "command") for arg in command), False
    raise params_invalid("script: 'command' must be a non-empty string or list of strings")


def parse_env(value: object) -> dict[str, str]:
    """The step's extra environment variables, checked so exec cannot reject them."""
    if not isinstance(value, Mapping):
        raise params_invalid("script: 'env' must be an object of strings")
    env: dict[str, str] = {}
    for key, item in value.items():
        # A whole-value reference keeps its JSON type: a number or boolean becomes its JSON text.
        if isinstance(item, bool | int | float) and not isinstance(item, str):
            item = json.dumps(item)
        if not isinstance(key, str) or not key or "=" in key or not isinstance(item, str):
            raise params_invalid(f"script: 'env' entry {key!r} must be a NAME: string pair")
        env[_no_nul(key, "env")] = _no_nul(item, "env")
    return env


def parse_stdin(value: object) -> bytes | None:
    """The optional stdin text, as UTF-8 bytes."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise params_invalid("script: 'stdin' must be a string")
    return value.encode("utf-8")


def _cwd(value: object) -> str:
    """The working directory inside the sandbox (`/work`, or relative to or under it)."""
    if value is None:
        return WORK_DIR
    if not isinstance(value, str):
        raise params_invalid("script: 'cwd' must be a string")
    return sandbox_cwd(_no_nul(value, "cwd"))


def _host_cwd(workdir: str, cwd: str) -> str:
    """Unconfined, `/work` is the temporary work dir: the same path as inside the sandbox."""
    path = os.path.join(workdir, os.path.relpath(cwd, WORK_DIR))
    os.makedirs(path, exist_ok=True)
    return os.path.normpath(path)


def _no_nul(text: str, field: str) -> str:
    """Reject NUL characters, which no argv, environment or path can carry."""
    if "\0" in text:
        raise params_invalid(f"script: {field!r} must not contain NUL characters")
    return text
