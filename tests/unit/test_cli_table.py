"""`--output table`: a header, one line per item, columns padded and two spaces apart."""

from __future__ import annotations

import pytest

from stellaorch.cli.ops_commands import OpsPrinter
from stellaorch.cli.render import COLUMNS, OutputFormat, Printer, table_lines


def test_columns_are_padded_to_their_longest_cell_and_absent_values_show_as_a_dash() -> None:
    lines = table_lines(
        COLUMNS["log"], [{"attempt": 1, "line": "started"}, {"attempt": 12, "line": None}]
    )

    assert lines == ["ATTEMPT  LINE", "1        started", "12       -"]


def test_cells_are_printed_as_they_are_never_as_markup_and_never_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "20")  # a narrow terminal changes nothing
    line = "[bold]not bold[/bold] :smile: " + "x" * 200

    lines = table_lines(COLUMNS["log"], [{"attempt": 1, "line": line}])

    assert lines[1] == f"1        {line}"


def test_an_empty_list_is_its_header_only() -> None:
    assert table_lines(COLUMNS["manifest"], []) == ["COUNT  SHA256  ROOT_HASH  CHECKPOINTS  FILE"]


def test_the_operations_printer_uses_the_same_table_with_its_own_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    OpsPrinter(OutputFormat.TABLE).one("auditexport", {"count": 3, "sha256": "ab", "file": "a"})
    Printer(OutputFormat.TABLE).one("manifest", {"count": 3, "sha256": "ab"})

    assert capsys.readouterr().out.splitlines() == [
        "COUNT  SHA256  FILE",
        "3      ab      a",
        "COUNT  SHA256  ROOT_HASH  CHECKPOINTS  FILE",
        "3      ab      -          -            -",
    ]
