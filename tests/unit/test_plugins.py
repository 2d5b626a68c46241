"""Plugin contract, registry, output checks, log capture and the noop/sleep/fail built-ins."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import pytest

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins import (
    MAX_OUTPUT_BYTES,
    FailPlugin,
    NoopPlugin,
    PluginConflict,
    PluginNotFound,
    PluginRegistry,
    PluginResult,
    SleepPlugin,
    StepContext,
    builtin_registry,
    check_outputs,
)
from stellaorch.plugins.capture import LineSplitter, LogBuffer, OutputCapture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def make_ctx(params: dict[str, Any] | None = None, *, attempt: int = 1) -> StepContext:
    """A context for step `s1` of run `run-1`."""
    return StepContext(
        tenant="acme",
        run_id="run-1",
        dag_id="dag",
        step_id="s1",
        attempt=attempt,
        params=params or {},
        timeout_seconds=30.0,
        trace_id=TRACE_ID,
    )


class FakePlugin:
    """A plugin that only has a name and version."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version

    async def run(self, ctx: StepContext) -> PluginResult:
        return PluginResult()


# --- StepContext -------------------------------------------------------------------------


def test_traceparent_is_w3c_with_the_run_trace_id() -> None:
    traceparent = make_ctx().traceparent
    assert re.fullmatch(rf"00-{TRACE_ID}-[0-9a-f]{{16}}-01", traceparent)


def test_traceparent_span_is_stable_for_an_attempt_and_differs_between_attempts() -> None:
    assert make_ctx().traceparent == make_ctx().traceparent
    assert make_ctx(attempt=1).span_id != make_ctx(attempt=2).span_id


def test_secrets_are_left_out_of_the_context_repr() -> None:
    ctx = StepContext("t", "r", "d", "s", 1, {}, 1.0, TRACE_ID, secrets={"token": "hunter2"})
    assert "hunter2" not in repr(ctx)


# --- PluginRegistry ----------------------------------------------------------------------


def test_registry_resolves_a_bare_name() -> None:
    registry = PluginRegistry()
    plugin = FakePlugin("http", "2")
    registry.register(plugin)
    assert registry.resolve("http") is plugin


def test_registry_resolves_name_at_matching_version() -> None:
    registry = PluginRegistry()
    plugin = FakePlugin("http", "2")
    registry.register(plugin)
    assert registry.resolve("http@2") is plugin


def test_registry_rejects_a_version_that_is_not_registered() -> None:
    registry = builtin_registry()
    with pytest.raises(PluginNotFound) as raised:
        registry.resolve("noop@2")
    assert raised.value.code == "PLUGIN_NOT_FOUND"
    assert "noop@1" in raised.value.message


def test_registry_rejects_an_unknown_name_and_lists_known_plugins() -> None:
    with pytest.raises(PluginNotFound) as raised:
        builtin_registry().resolve("teleport")
    known = "known plugins: fail@1, http@1, noop@1, queue@1, script@1, sleep@1"
    assert known in raised.value.message
    assert raised.value.details["ref"] == "teleport"


def test_registry_rejects_a_bare_name_registered_in_two_versions() -> None:
    registry = PluginRegistry()
    registry.register(FakePlugin("http", "1"))
    registry.register(FakePlugin("http", "2"))
    with pytest.raises(PluginNotFound, match="ambiguous"):
        registry.resolve("http")


def test_registering_the_same_name_and_version_twice_is_a_conflict() -> None:
    registry = PluginRegistry()
    registry.register(FakePlugin("http", "1"))
    with pytest.raises(PluginConflict):
        registry.register(FakePlugin("http", "1"))


def test_names_are_sorted_name_at_version() -> None:
    registry = PluginRegistry()
    for name, version in [("zeta", "1"), ("alpha", "2"), ("alpha", "10")]:
        registry.register(FakePlugin(name, version))
    assert registry.names() == ["alpha@10", "alpha@2", "zeta@1"]


def test_builtin_registry_holds_noop_sleep_fail_http_and_script() -> None:
    names = ["fail@1", "http@1", "noop@1", "queue@1", "script@1", "sleep@1"]
    assert builtin_registry().names() == names


# --- check_outputs -----------------------------------------------------------------------


def test_check_outputs_returns_a_json_object_as_parsed_json() -> None:
    assert check_outputs({"a": [1, 2.5, None], "b": {"c": True}}) == {
        "a": [1, 2.5, None],
        "b": {"c": True},
    }


@pytest.mark.parametrize("outputs", [[1, 2], "text", None, 3])
def test_check_outputs_rejects_anything_but_an_object(outputs: object) -> None:
    with pytest.raises(StepFailed) as raised:
        check_outputs(outputs)
    assert (raised.value.code, raised.value.retryable) == ("OUTPUT_INVALID", False)


def test_check_outputs_rejects_non_string_keys() -> None:
    with pytest.raises(StepFailed, match="keys") as raised:
        check_outputs({1: "one"})
    assert raised.value.code == "OUTPUT_INVALID"


@pytest.mark.parametrize("value", [{1, 2}, math.nan, math.inf, object()])
def test_check_outputs_rejects_values_json_cannot_hold(value: object) -> None:
    with pytest.raises(StepFailed) as raised:
        check_outputs({"v": value})
    assert raised.value.code == "OUTPUT_INVALID"


def test_check_outputs_accepts_exactly_the_size_limit() -> None:
    padding = MAX_OUTPUT_BYTES - len('{"v":""}')
    assert check_outputs({"v": "x" * padding}) == {"v": "x" * padding}


def test_check_outputs_rejects_one_byte_over_the_limit_as_too_large() -> None:
    padding = MAX_OUTPUT_BYTES - len('{"v":""}') + 1
    with pytest.raises(StepFailed) as raised:
        check_outputs({"v": "x" * padding})
    assert (raised.value.code, raised.value.retryable) == ("OUTPUT_TOO_LARGE", False)


def test_check_outputs_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(StepFailed) as raised:
        check_outputs({"v": "é" * (MAX_OUTPUT_BYTES // 2 + 1)})
    assert raised.value.code == "OUTPUT_TOO_LARGE"


# --- log capture -------------------------------------------------------------------------


def test_log_buffer_keeps_the_first_bytes_and_reports_the_dropped_count() -> None:
    log = LogBuffer(10)
    for _ in range(3):
        log.add_line(b"abcd")  # 5 bytes each with the newline
    assert log.text() == "abcd\nabcd\n[stella] log truncated: 5 bytes dropped\n"


def test_log_buffer_cuts_a_line_that_crosses_the_limit_and_ends_it_before_the_marker() -> None:
    log = LogBuffer(6)
    log.add_line(b"abcdefgh")
    assert log.text() == "abcdef\n[stella] log truncated: 3 bytes dropped\n"


def test_line_splitter_joins_lines_across_chunks() -> None:
    splitter = LineSplitter(cap=100)
    lines = [
        *splitter.feed(b"one\ntw"),
        *splitter.feed(b"o\nthr"),
        *splitter.feed(b"ee"),
        *splitter.close(),
    ]
    assert lines == [(b"one", True), (b"two", True), (b"three", True)]


def test_line_splitter_never_holds_more_than_its_cap_of_one_line() -> None:
    splitter = LineSplitter(cap=8)
    pieces = [*splitter.feed(b"x" * 5), *splitter.feed(b"x" * 5), *splitter.feed(b"yy\nz\n")]
    assert pieces == [(b"x" * 10, False), (b"yy", False), (b"z", True)]


def test_stderr_lines_are_prefixed_and_never_become_outputs() -> None:
    capture = OutputCapture(1000)
    capture.feed(b'{"from": "stdout"}\n', stderr=False)
    capture.feed(b'{"from": "stderr"}\n', stderr=True)
    assert capture.outputs == {"from": "stdout"}
    assert capture.logs() == '{"from": "stdout"}\n[stderr] {"from": "stderr"}\n'


def test_json_lines_with_nan_or_that_are_not_objects_are_not_outputs() -> None:
    capture = OutputCapture(1000)
    for line in [b'{"ok": 1}', b'{"bad": NaN}', b"[1, 2]", b"{not json}"]:
        capture.feed(line + b"\n", stderr=False)
    assert capture.outputs == {"ok": 1}


# --- noop / sleep / fail -----------------------------------------------------------------


async def test_noop_echoes_the_outputs_param() -> None:
    result = await NoopPlugin().run(make_ctx({"outputs": {"answer": 42}}))
    assert result == PluginResult(outputs={"answer": 42})


async def test_noop_without_outputs_returns_empty_outputs() -> None:
    assert (await NoopPlugin().run(make_ctx())).outputs == {}


async def test_noop_rejects_outputs_that_are_not_an_object() -> None:
    with pytest.raises(StepFailed) as raised:
        await NoopPlugin().run(make_ctx({"outputs": [1]}))
    assert raised.value.code == "PARAMS_INVALID"


async def test_sleep_sleeps_and_reports_the_seconds() -> None:
    started = time.monotonic()
    result = await SleepPlugin().run(make_ctx({"seconds": 0.05}))
    assert time.monotonic() - started >= 0.05
    assert result.outputs == {"sleptSeconds": 0.05}


@pytest.mark.parametrize(
    "params",
    [{}, {"seconds": -1}, {"seconds": "1"}, {"seconds": True}, {"seconds": math.nan}],
    ids=["missing", "negative", "string", "bool", "nan"],
)
async def test_sleep_rejects_invalid_seconds_as_not_retryable(params: dict[str, Any]) -> None:
    with pytest.raises(StepFailed) as raised:
        await SleepPlugin().run(make_ctx(params))
    assert (raised.value.code, raised.value.retryable) == ("PARAMS_INVALID", False)


async def test_fail_raises_the_default_injected_failure() -> None:
    with pytest.raises(StepFailed) as raised:
        await FailPlugin().run(make_ctx())
    error = raised.value
    assert (error.code, error.message, error.retryable) == (
        "INJECTED_FAILURE",
        "failure injected by the fail plugin",
        False,
    )


async def test_fail_raises_the_code_message_and_retryable_it_is_given() -> None:
    params = {"code": "DISK_FULL", "message": "no space", "retryable": True}
    with pytest.raises(StepFailed) as raised:
        await FailPlugin().run(make_ctx(params))
    assert (raised.value.code, raised.value.message, raised.value.retryable) == (
        "DISK_FULL",
        "no space",
        True,
    )


@pytest.mark.parametrize("attempt", [1, 2])
async def test_fail_with_until_attempt_fails_before_that_attempt(attempt: int) -> None:
    with pytest.raises(StepFailed):
        await FailPlugin().run(make_ctx({"untilAttempt": 3, "retryable": True}, attempt=attempt))


@pytest.mark.parametrize("attempt", [3, 4])
async def test_fail_with_until_attempt_succeeds_from_that_attempt_on(attempt: int) -> None:
    result = await FailPlugin().run(make_ctx({"untilAttempt": 3}, attempt=attempt))
    assert result.outputs == {"attempt": attempt}


@pytest.mark.parametrize("params", [{"untilAttempt": "3"}, {"code": 5}, {"retryable": "yes"}])
async def test_fail_rejects_mistyped_params(params: dict[str, Any]) -> None:
    with pytest.raises(StepFailed) as raised:
        await FailPlugin().run(make_ctx(params))
    assert raised.value.code == "PARAMS_INVALID"
