"""`dag validate` checks built-in plugins and their parameters locally, as publish does."""

from __future__ import annotations

from pathlib import Path

import pytest

from stellaorch.cli.dags import validate_file
from stellaorch.domain.errors import SpecInvalid

BAD = """\
dagId: badplug
version: 1
steps:
  - {id: a, plugin: nosuch}
  - {id: b, plugin: http, with: {nope: 1, url: "http://127.0.0.1/x"}}
  - {id: c, plugin: greeter@1.0.0, with: {anything: 1}}
"""


def test_unknown_plugins_and_parameters_are_refused_by_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(SpecInvalid) as caught:
        validate_file(path)
    paths = [e["path"] for e in caught.value.details["errors"]]
    assert paths == ["steps[0].plugin", "steps[1].with.nope"]  # the bundle step: at publish


def test_a_valid_spec_with_a_bundle_reference_validates(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("dagId: ok\nversion: 1\nsteps:\n  - {id: a, plugin: greeter@1.0.0}\n")
    assert validate_file(path)["dagId"] == "ok"
