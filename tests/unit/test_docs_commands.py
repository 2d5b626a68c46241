"""Every `stella orch …` command shown in the README and docs/ parses against the real CLI.

Example commands (operator guide, README, feature docs) must be copy-paste correct: the
command path exists, every option is known and the required ones are given. The synopsis
lines of docs/cli.md (with `[optional]` parts) are checked for names: each option they show
exists on that command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from stellaorch.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SYNOPSIS_DOC = ROOT / "docs" / "cli.md"
EXAMPLE_DOCS = sorted(
    p
    for p in [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("examples/**/*.md")]
    if p != SYNOPSIS_DOC
)
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_COMMAND = re.compile(r"(?:^|[\s(=])(?:\S*/)?(stella orch\s.*)")
_SHELL_SEPARATORS = re.compile(r"\|\||&&|;|\|")
_REDIRECT = re.compile(r"^\d?>|^<(?!.*>$)|^\)")  # `<runId>` is a placeholder, `< f` is not


def commands_in(path: Path) -> list[str]:
    """The `stella orch …` commands in the file's code blocks, one per shell pipeline part."""
    found: list[str] = []
    for block in _FENCE.findall(path.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            for piece in _SHELL_SEPARATORS.split(line):
                match = _COMMAND.search(piece.strip())
                if match:
                    found.append(match.group(1).strip())
    return found


def _words(command: str) -> list[str]:
    """The command's words after `stella orch`, cut at a redirection or a closing `)`."""
    words: list[str] = []
    for word in shlex.split(command, comments=True)[2:]:
        if _REDIRECT.match(word):
            break
        words.append(word.removesuffix(")"))
    return words


def _resolve(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The click command the words name, its path, and the words left for it."""
    command: Any = typer.main.get_command(app).commands["orch"]  # type: ignore[attr-defined]
    path = ["orch"]
    while hasattr(command, "commands") and words and words[0] in command.commands:
        path.append(words[0])
        command = command.commands[words.pop(0)]
    return command, path, words


def parse_problem(command: str) -> str | None:
    """Why the example would not parse, or None when the CLI accepts it."""
    try:
        words = _words(command)
    except ValueError as exc:
        return f"not shell syntax: {exc}"
    target, path, rest = _resolve(words)
    if hasattr(target, "commands") and not getattr(target, "invoke_without_command", False):
        return f"no such command: stella {' '.join(path)} {' '.join(rest[:1])}"
    try:
        target.make_context(" ".join(path), rest, resilient_parsing=False)
    except Exception as exc:
        if type(exc).__name__ == "Exit":
            return None
        if hasattr(exc, "format_message"):
            message = exc.format_message()
            # An example's files (dags/, kit.tgz) live on the operator's machine, not here.
            return None if message.endswith("does not exist.") else message
        raise
    return None


def synopsis_problem(command: str) -> str | None:
    """Why a synopsis line names an option (or command) the CLI does not have, or None."""
    text = command.replace("[", " ").replace("]", " ").replace("|", " ").replace("…", " ")
    try:
        words = _words(text)
    except ValueError as exc:
        return f"not shell syntax: {exc}"
    target, path, rest = _resolve(words)
    known = {name for param in target.params for name in (*param.opts, *param.secondary_opts)}
    unknown = [w.split("=")[0] for w in rest if w.startswith("-") and w.split("=")[0] not in known]
    unknown = [w for w in unknown if w not in ("-", "--", "--help")]
    if hasattr(target, "commands") and rest and not rest[0].startswith("-"):
        return f"no such command: stella {' '.join(path)} {rest[0]}"
    return f"unknown options {unknown} for stella {' '.join(path)}" if unknown else None


EXAMPLES = [(p.relative_to(ROOT).as_posix(), c) for p in EXAMPLE_DOCS for c in commands_in(p)]
SYNOPSES = commands_in(SYNOPSIS_DOC)


def test_the_docs_show_commands_to_check() -> None:
    files = {f for f, _ in EXAMPLES}
    assert {"README.md", "docs/operator-guide.md"} <= files
    assert len(SYNOPSES) > 50


@pytest.mark.parametrize(("doc", "command"), EXAMPLES)
def test_every_example_command_parses(doc: str, command: str) -> None:
    assert parse_problem(command) is None, f"{doc}: {command}"


@pytest.mark.parametrize("command", SYNOPSES)
def test_every_synopsis_line_names_real_options(command: str) -> None:
    assert synopsis_problem(command) is None, command


@pytest.mark.parametrize(
    "command",
    [
        "stella orch run logs --bogus",
        "stella orch run logs",
        "stella orch nothere x",
        "stella orch run show --run-id R extra",
    ],
)
def test_the_checker_catches_a_wrong_example(command: str) -> None:
    assert parse_problem(command) is not None


def test_the_synopsis_checker_catches_an_unknown_option() -> None:
    assert synopsis_problem("stella orch run logs --run-id ID [--no-such-flag]") is not None
    assert synopsis_problem("stella orch run logs --run-id ID [--step-id STEP]") is None
