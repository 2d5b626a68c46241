"""`stella orch run diff` output: a FIELD/A/B table, NDJSON rows, or the whole JSON document."""

from __future__ import annotations

import json

import pytest

from stellaorch.cli.render import OutputFormat, Printer
from stellaorch.domain.run_diff import diff_runs

RUN_A = {
    "runId": "a", "dagId": "feed", "dagVersion": "1", "inputsHash": "sha256:1",
    "status": "completed", "inputs": {"date": "06"},
    "steps": [{"stepId": "fetch", "status": "succeeded", "outputsHash": "sha256:o",
               "plugin": {"kind": "builtin", "name": "noop", "version": "1", "digest": None},
               "attempts": [{"error": None}]}],
}  # fmt: skip
RUN_B = {
    **RUN_A, "runId": "b", "inputsHash": "sha256:2", "inputs": {"date": "07"},
    "steps": [{**RUN_A["steps"][0], "attempts": [{"error": {"code": "X"}}, {"error": None}]}],  # type: ignore[index]
}  # fmt: skip


def test_the_table_lists_one_difference_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    Printer(OutputFormat.TABLE).differences(diff_runs(RUN_A, RUN_B, ("sha256:s", "sha256:s")))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["FIELD", "A", "B"]
    assert [line.split()[0] for line in lines[1:]] == [
        "inputsHash", "inputs.date", "steps.fetch.attempts", "steps.fetch.errorCodes",
    ]  # fmt: skip
    assert lines[3].split()[1:] == ["1", "2"]


def test_identical_runs_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    Printer(OutputFormat.TABLE).differences(diff_runs(RUN_A, RUN_A, ("s", "s")))
    assert capsys.readouterr().out == "runs a and a do not differ\n"


def test_ndjson_prints_one_difference_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    Printer(OutputFormat.NDJSON).differences(diff_runs(RUN_A, RUN_B, ("s", "t")))
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {"field": "specHash", "a": "s", "b": "t"}
    assert len(rows) == 5


def test_json_prints_the_whole_document(capsys: pytest.CaptureFixture[str]) -> None:
    Printer(OutputFormat.JSON).differences(diff_runs(RUN_A, RUN_B, ("s", "s")))
    document = json.loads(capsys.readouterr().out)
    assert document["inputs"] == {"added": [], "removed": [], "changed": ["date"]}
    assert document["steps"][0]["differs"] == ["attempts", "errorCodes"]


def test_a_step_in_only_one_run_differs_in_every_field() -> None:
    only_a = diff_runs(RUN_A, {**RUN_A, "steps": []}, ("s", "s"))
    assert only_a["steps"][0]["b"] is None
    assert only_a["differences"][0]["field"] == "steps.fetch.status"
