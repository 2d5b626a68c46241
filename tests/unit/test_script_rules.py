"""Publish-time rules that keep a `${…}` reference out of anything run as code (issue 9 item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from stellaorch.plugins.codeargs import code_args
from stellaorch.plugins.script_rules import check_script_params

REF = "${inputs.date}"


def where(params: dict[str, Any]) -> list[str]:
    """The paths the check complains about."""
    return [path for path, _ in check_script_params(params)]


@pytest.mark.parametrize(
    "params",
    [
        {"command": f"echo {REF}"},
        {"command": f'echo "{REF}"'},
        {"command": REF},
        {"command": ["sh", "-c", f"echo {REF}"]},
        {"command": ["/bin/bash", "-eu", "-o", "pipefail", "-c", f"echo {REF}"]},
        {"command": ["env", "-i", "A=1", "sh", "-c", f"echo {REF}"]},
        {"command": ["timeout", "5", "sh", "-c", f"{REF}"]},
        {"command": ["python3", "-c", f"print({REF})"]},
        {"command": ["python3", f"{REF}"]},
        {"command": ["perl", "-e", REF]},
        {"command": ["node", "--eval", REF]},
        {"command": [REF, "arg"]},
        {"command": ["sh"], "stdin": f"echo {REF}"},
        {"command": ["sh", "-s"], "stdin": REF},
        {"command": ["true"], "env": {"LD_PRELOAD": REF}},
        {"command": ["true"], "env": {"PATH": f"/x:{REF}"}},
        {"command": ["true"], "env": {"BASH_ENV": REF}},
    ],
)
def test_a_reference_in_a_code_position_is_refused(params: dict[str, Any]) -> None:
    assert where(params), params


@pytest.mark.parametrize(
    "params",
    [
        {"command": ["sh", "-c", 'printf "%s" "$1"', "sh", REF]},
        {"command": ["echo", REF, f"prefix-{REF}"]},
        {"command": 'printf "%s" "$DATE"', "env": {"DATE": REF}},
        {"command": ["cat"], "stdin": REF},
        {"command": ["python3", "-c", "import sys; print(sys.argv[1])", REF]},
        {"command": "echo $${HOME}"},
        {"command": ["true"], "env": {"DATE": f"day {REF}"}},
    ],
)
def test_a_reference_passed_as_data_is_accepted(params: dict[str, Any]) -> None:
    assert where(params) == []


def test_the_error_says_how_to_write_it_instead() -> None:
    [(path, message)] = check_script_params({"command": f"echo {REF}"})
    assert path == "command"
    assert REF in message
    assert 'env: {DATE: "${inputs.date}"}' in message and '"$DATE"' in message


def test_unknown_parameters_and_bad_static_values_are_refused() -> None:
    assert where({"command": ["true"], "comand": "x"}) == ["comand"]
    assert where({"command": ["true"], "env": {"A": ["not", "a", "string"]}}) == ["env"]
    assert where({"command": 5}) == ["command"]


def test_a_whole_value_reference_defers_its_type_check() -> None:
    assert where({"command": ["cat"], "stdin": REF, "env": {"N": "${inputs.n}"}}) == []


def test_code_args_follows_wrappers_and_shell_options() -> None:
    assert code_args(["nice", "-n", "5", "bash", "-x", "-c", "CODE", "a"]).indexes >= {6}
    assert code_args(["sh", "script.sh", "data"]).indexes == frozenset({0, 1})
    assert code_args(["sh"]).stdin_is_code
    assert not code_args(["cat"]).stdin_is_code
    assert code_args(["python3", "-"]).stdin_is_code
