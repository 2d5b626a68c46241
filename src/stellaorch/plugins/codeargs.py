"""Which parts of an argv list a program runs as code: `sh -c CODE`, `python -c CODE`, a script.

Used at publish to keep references out of those positions. The analysis follows the
program through common wrappers (`env`, `nice`, `timeout`, `busybox`, …) and knows the
shells and the usual interpreters; where it is unsure it calls a position code, so a doubt
costs a refused publish, never an injection. Programs that interpret their arguments in
other ways (awk, sed, find -exec) are outside it: see README, "script".
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

_WRAPPERS = frozenset(
    {"env", "nice", "nohup", "timeout", "stdbuf", "setsid", "busybox", "exec", "command",
     "sudo", "doas", "ionice", "chrt", "taskset", "xargs", "time", "unbuffer"}
)  # fmt: skip
_WRAPPER_ARG = re.compile(r"[-+].*|[A-Za-z_][A-Za-z0-9_]*=.*|[0-9][0-9.,a-z]*")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "rbash"})
_SHELL_ARG_OPTIONS = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
# Interpreter name pattern -> short option letters and long options whose argument is code.
_INTERPRETERS: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...] = (
    (re.compile(r"python[0-9.]*|pypy[0-9.]*"), "cm", frozenset()),
    (re.compile(r"perl[0-9.]*"), "eEM", frozenset()),
    (re.compile(r"ruby[0-9.]*"), "er", frozenset()),
    (re.compile(r"node(js)?|deno|bun"), "ep", frozenset({"--eval", "--print", "--require"})),
    (re.compile(r"php[0-9.]*"), "rB", frozenset()),
)


@dataclass(frozen=True)
class CodeArgs:
    """Indexes into argv that are run as code, and whether stdin is read as code."""

    indexes: frozenset[int]
    stdin_is_code: bool


def code_args(argv: Sequence[str]) -> CodeArgs:
    """Where `argv` holds code; the program itself (after any wrappers) always counts."""
    start = _program_index(argv)
    if start >= len(argv):
        return CodeArgs(frozenset(range(len(argv))), False)
    name = posixpath.basename(argv[start])
    found = CodeArgs(frozenset(), False)
    if name in _SHELLS:
        found = _shell(argv, start)
    for pattern, short, long in _INTERPRETERS:
        if pattern.fullmatch(name):
            found = _interpreter(argv, start, short, long)
    # Wrappers and the program choose what runs: they are code too.
    return CodeArgs(found.indexes | frozenset(range(start + 1)), found.stdin_is_code)


def _is_interpreter(arg: str) -> bool:
    """A shell or a known interpreter."""
    name = posixpath.basename(arg)
    return name in _SHELLS or any(pattern.fullmatch(name) for pattern, _, _ in _INTERPRETERS)


def _program_index(argv: Sequence[str]) -> int:
    """The index of the program a chain of wrappers finally runs.

    Wrapper options may take arguments (`env -u NAME`), so a shell or interpreter anywhere
    after a wrapper is taken as the program; otherwise options, NAME=VALUE and numbers are
    skipped.
    """
    if not argv or posixpath.basename(argv[0]) not in _WRAPPERS:
        return 0
    found = next((i for i in range(1, len(argv)) if _is_interpreter(argv[i])), None)
    if found is not None:
        return found
    i = 0
    while i < len(argv) and posixpath.basename(argv[i]) in _WRAPPERS:
        i += 1
        while i < len(argv) and _WRAPPER_ARG.fullmatch(argv[i]):
            i += 1
    return i


def _shell(argv: Sequence[str], start: int) -> CodeArgs:
    """`sh [options] [-c] OPERAND args…`: the first operand is the code or the script file to
    run; with no operand (or `-s`) the shell reads its commands from stdin."""
    i, from_stdin = start + 1, False
    while i < len(argv) and argv[i][:1] in "-+" and argv[i] not in ("-", "+"):
        option = argv[i]
        i += 1
        if option == "--":
            break
        if option in _SHELL_ARG_OPTIONS:
            i += 1  # `-o pipefail`: the option's argument is not an operand
        elif not option.startswith("--"):
            from_stdin |= "s" in option
    if i >= len(argv) or from_stdin:
        return CodeArgs(frozenset(), True)
    return CodeArgs(frozenset({i}), False)


def _interpreter(argv: Sequence[str], start: int, short: str, long: frozenset[str]) -> CodeArgs:
    """Arguments of the interpreter's code options; else its script operand, or stdin.

    Every argument is scanned, even after the script: a false `-c` costs a refused publish.
    """
    code: set[int] = set()
    operand: int | None = None
    for i in range(start + 1, len(argv)):
        arg = argv[i]
        name, equals, _ = arg.partition("=")
        if name in long:
            code.add(i if equals else i + 1)
        elif arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            hit = next((k for k, letter in enumerate(arg[1:], 1) if letter in short), None)
            if hit is not None:
                code.add(i if arg[hit + 1 :] else i + 1)
        elif operand is None:
            operand = i
    if code:
        return CodeArgs(frozenset(code), False)
    if operand is None or argv[operand] == "-":
        return CodeArgs(frozenset(), True)
    return CodeArgs(frozenset({operand}), False)
