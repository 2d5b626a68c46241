"""`stella orch dag render module:attr` and `dag publish --from`'s local checks, in-process."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from stellaorch.cli.main import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-worker"

GOOD = """\
from stellaorch.sdk import Dag

dag = Dag("hello", version=1)
dag.step("greet", plugin="noop", with_={"outputs": {"greeting": "hi"}}) >> dag.step(
    "done", plugin="noop"
)
"""

CYCLE = """\
from stellaorch.sdk import Dag

dag = Dag("loop", version=1)
a, b = dag.step("a", plugin="noop"), dag.step("b", plugin="noop")
a >> b >> a
"""


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory on sys.path and as the current directory, for throwaway modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    forget_modules_in(tmp_path)


def forget_modules_in(directory: Path) -> None:
    """Drop the modules imported from `directory` (only those: the project's stay loaded)."""
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").is_relative_to(directory):
            del sys.modules[name]


def write_module(directory: Path, source: str) -> str:
    """A module with a unique name (imported modules are cached per process)."""
    name = f"dagmod_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(source)
    return name


def stella(*args: str) -> Result:
    """`stella orch ARGS` in this process."""
    return CliRunner().invoke(app, ["orch", *args])


def one_error_line(result: Result, code: str) -> str:
    """The single `error: CODE: …` line on stderr (no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), result.stderr
    return lines[0]


def test_render_prints_the_spec_in_the_spec_key_order(module_dir: Path) -> None:
    name = write_module(module_dir, GOOD)
    result = stella("dag", "render", f"{name}:dag")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("dagId: hello\nversion: 1\nsteps:\n")
    assert yaml.safe_load(result.stdout)["edges"] == [{"from": "greet", "to": "done"}]


def test_render_of_an_unknown_module_is_a_usage_error(module_dir: Path) -> None:
    result = stella("dag", "render", "no_such_module_here:dag")
    assert result.exit_code == 2
    assert "no_such_module_here" in one_error_line(result, "USAGE_INVALID")


@pytest.mark.parametrize("suffix", ["", ":", ":missing", ":os"])
def test_render_of_a_reference_naming_no_dag_is_a_usage_error(
    module_dir: Path, suffix: str
) -> None:
    name = write_module(module_dir, GOOD + "import os\n")
    result = stella("dag", "render", f"{name}{suffix}")
    assert result.exit_code == 2
    one_error_line(result, "USAGE_INVALID")


def test_a_module_that_raises_on_import_is_one_usage_line(module_dir: Path) -> None:
    name = write_module(module_dir, 'raise RuntimeError("boom\\nsecond line")\n')
    result = stella("dag", "render", f"{name}:dag")
    assert result.exit_code == 2
    assert one_error_line(result, "USAGE_INVALID").endswith("boom")


def test_render_of_an_invalid_dag_prints_the_spec_errors(module_dir: Path) -> None:
    name = write_module(module_dir, CYCLE)
    result = stella("dag", "render", f"{name}:dag")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "cycle" in one_error_line(result, "DAG_SPEC_INVALID")


def test_render_checks_plugin_params_as_validate_does(module_dir: Path) -> None:
    source = 'from stellaorch.sdk import Dag\ndag = Dag("q", version=1)\n'
    name = write_module(module_dir, source + 'dag.step("s", plugin="queue", with_={})\n')
    result = stella("dag", "render", f"{name}:dag")
    assert result.exit_code == 2
    assert "task" in one_error_line(result, "DAG_SPEC_INVALID")


@pytest.mark.parametrize("sources", [[], ["--file", "x.yaml", "--from", "m:dag"]])
def test_publish_takes_exactly_one_of_file_or_from(module_dir: Path, sources: list[str]) -> None:
    result = stella("dag", "publish", *sources, "--reason", "r", "--api-url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "exactly one of --file or --from" in one_error_line(result, "USAGE_INVALID")


def test_the_example_renders_to_its_yaml_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # leave the example's tree alone
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(EXAMPLE)
    try:
        result = stella("dag", "render", "pipeline:dag")
    finally:
        forget_modules_in(EXAMPLE)
    assert result.exit_code == 0, result.stderr
    expected = yaml.safe_load((EXAMPLE / "dags" / "resize.yaml").read_text())
    assert yaml.safe_load(result.stdout) == expected
