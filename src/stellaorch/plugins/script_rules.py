"""Publish-time check of `script` parameters: a value from a reference is data, never code.

A `${…}` reference names run inputs, upstream outputs or secrets, which whoever may start a
run controls. References may appear where the program receives them as data: an item of a
list `command` (one argv element), an `env` value, the `stdin` of a program that reads data.
They are refused where a shell or interpreter would run them as code: anywhere in a string
`command` (it is shell text for `/bin/sh -c`), the program or the code argument of a list
`command` (`sh -c CODE`, `python -c CODE`, a script path; see `codeargs`), the `stdin` of a
shell reading its commands, and `env` variables that make a program load or run something
(`LD_PRELOAD`, `BASH_ENV`, `PATH`, …). `$${` is a literal `${` and always allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from stellaorch.domain.templating import (
    Reference,
    find_references,
    lone_reference,
    with_placeholders,
)
from stellaorch.plugins.base import ParamProblem
from stellaorch.plugins.codeargs import code_args
from stellaorch.plugins.params import unknown_keys
from stellaorch.plugins.script import field_problems

SCRIPT_PARAMS = ("command", "env", "stdin", "cwd")
# Variables whose value a shell, the dynamic loader or an interpreter loads or runs as code.
_CODE_ENV = re.compile(
    r"LD_.*|DYLD_.*|BASH_.*|BASHOPTS|SHELLOPTS|ENV|PATH|IFS|PS4|PROMPT_COMMAND|CDPATH"
    r"|GLOBIGNORE|PYTHON.*|PERL.*|RUBY.*|NODE_.*|GCONV_PATH|HOSTALIASES|LOCPATH|NLSPATH"
)


def check_script_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Unknown keys, references in code positions, then the runtime checks of static fields."""
    command = params.get("command")
    problems = unknown_keys("script", params, SCRIPT_PARAMS)
    problems += _command_problems(command)
    problems += env_problems(params.get("env"))
    problems += _stdin_problems(command, params.get("stdin"))
    # A field that is one whole reference has its type only at run time.
    static = tuple(name for name in SCRIPT_PARAMS if lone_reference(params.get(name)) is None)
    return problems + field_problems(with_placeholders(dict(params)), static)


def _command_problems(command: object) -> list[ParamProblem]:
    """References in the shell text of a string command, or in code positions of a list."""
    whole = lone_reference(command)
    if whole is not None:
        return [("command", f"the command cannot be a reference ({whole.text}); {_AS_DATA}")]
    if isinstance(command, str):
        return _refused("command", command, _IN_SHELL_TEXT)
    if not _is_argv(command):
        return []  # the runtime check reports the shape
    argv = [str(item) for item in with_placeholders(command)]
    problems: list[ParamProblem] = []
    for index in sorted(code_args(argv).indexes):
        problems += _refused(f"command[{index}]", command[index], _IN_CODE_ARGUMENT)
    return problems


def env_problems(env: object) -> list[ParamProblem]:
    """References in variables that make a program load or run something."""
    if not isinstance(env, Mapping):
        return []
    problems: list[ParamProblem] = []
    for name in sorted(key for key in env if isinstance(key, str) and _CODE_ENV.fullmatch(key)):
        why = f"{name} makes programs load or run what it names; set it to a fixed value"
        problems += _refused(f"env.{name}", env[name], why)
    return problems


def _stdin_problems(command: object, stdin: object) -> list[ParamProblem]:
    """References in the stdin of a list command whose shell or interpreter reads code there."""
    if not _is_argv(command) or not code_args([str(a) for a in command]).stdin_is_code:
        return []
    why = "the command reads its code from stdin; pass values in env or as arguments"
    return _refused("stdin", stdin, why)


def _is_argv(command: object) -> TypeGuard[list[Any]]:
    """A non-empty list, the shape of a directly executed command."""
    return isinstance(command, list) and bool(command)


def _refused(where: str, value: object, why: str) -> list[ParamProblem]:
    """One problem naming the first reference in `value` (if any) and how to pass it."""
    references = find_references(value)
    if not references:
        return []
    first = references[0]
    more = f" (and {len(references) - 1} more)" if len(references) > 1 else ""
    return [(where, f"{first.text}{more}: {why}. {_suggestion(first)}")]


_AS_DATA = "name the program in the spec and pass values as arguments or in env"
_IN_SHELL_TEXT = "a string command is shell text, where a value could run as code"
_IN_CODE_ARGUMENT = (
    "this argument is run as code (the program, a shell's -c text, an interpreter's code or script)"
)


def _suggestion(reference: Reference) -> str:
    """How to write it instead: as an environment variable or a separate argument."""
    name = _env_name(reference)
    return (
        f'Pass it as data instead: env: {{{name}: "{reference.text}"}} and "${name}" (quoted) '
        f"in the shell text, or a list command with the value as its own item, e.g. "
        f'["sh", "-c", \'echo "$1"\', "sh", "{reference.text}"]'
    )


def _env_name(reference: Reference) -> str:
    """A variable name from the reference's last path segment (`${inputs.date}` -> DATE)."""
    name = re.sub(r"[^A-Za-z0-9]", "_", reference.path[-1]).upper()
    return name if name[:1].isalpha() else f"V_{name}"
