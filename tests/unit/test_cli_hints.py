"""The CLI's hints: an expired token says how to get a new one; a bad DAG file is named."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from stellaorch.cli.client import ApiTarget, error_from_response
from stellaorch.domain.errors import SpecInvalid
from stellaorch.engine.catalog import load_directory


def test_an_expired_token_error_says_how_to_get_a_new_one() -> None:
    body = {"error": {"code": "UNAUTHENTICATED", "message": "bearer token has expired"}}
    response = httpx.Response(401, content=json.dumps(body).encode())
    error = error_from_response(response, ApiTarget("http://api", "old-token", "acme"))
    assert "stella orch token issue" in error.message and "--ttl" in error.message


def test_an_invalid_file_in_a_dag_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(
        "dagId: good\nversion: 1\nsteps: [{id: s, plugin: noop}]\n"
    )
    (tmp_path / "b-bad.yaml").write_text("dagId: Bad\nversion: 1\nsteps: []\n")
    with pytest.raises(SpecInvalid) as raised:
        load_directory(tmp_path)
    assert str(tmp_path / "b-bad.yaml") in raised.value.message


def test_the_first_start_hint_names_an_executable_that_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stellaorch.cli import credentials

    monkeypatch.setattr(credentials.shutil, "which", lambda name: None)
    monkeypatch.setattr(credentials.sys, "argv", [str(tmp_path / ".venv/bin/stella"), "orch"])
    assert credentials.stella_command() == str(tmp_path / ".venv/bin/stella")
    monkeypatch.setattr(credentials.sys, "argv", ["-m", "orch"])
    assert credentials.stella_command().endswith("-m stellaorch.cli.main")
    monkeypatch.setattr(credentials.shutil, "which", lambda name: "/usr/bin/stella")
    assert credentials.stella_command() == "stella"
