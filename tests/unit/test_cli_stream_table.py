"""`run stream -o table`: one fixed-column line per event message."""

from __future__ import annotations

import json

from stellaorch.cli.stream import STREAM_COLUMNS, event_cells, event_row


def test_an_event_becomes_its_columns_and_a_missing_field_a_dash() -> None:
    event = {"seq": 7, "type": "run.started", "runId": "r-1", "status": "running",
             "timestamp": "2026-12-07T10:00:00.000Z", "stepId": None}  # fmt: skip
    cells = event_cells(json.dumps(event))
    assert cells == ("7", "2026-12-07T10:00:00.000Z", "run.started", "r-1", "-", "-", "running")
    assert len(cells) == len(STREAM_COLUMNS)


def test_rows_line_up_under_the_header() -> None:
    header = event_row(STREAM_COLUMNS)
    row = event_row(event_cells(json.dumps({"seq": 12, "type": "step.updated", "runId": "r"})))
    assert header.index("TYPE") == row.index("step.updated")


def test_a_message_that_is_not_an_event_is_shown_not_dropped() -> None:
    cells = event_cells('{"error": {"code": "X"}}')
    assert cells[2] == "message" and "X" in cells[-1]
