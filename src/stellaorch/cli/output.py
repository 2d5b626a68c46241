"""What the CLI writes: results on stdout (JSON or lines), diagnostics on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def print_json(document: Any) -> None:
    """Pretty JSON on stdout, keys in the order the engine's views give them."""
    print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)


def say(line: str) -> None:
    """One line of human output on stdout, flushed so pipes and log collectors see it now."""
    print(line, flush=True)


def warn(line: str) -> None:
    """One line on stderr."""
    print(line, file=sys.stderr, flush=True)


def stderr_is_terminal() -> bool:
    """Whether a person is watching stderr (progress displays only make sense then)."""
    return sys.stderr.isatty()


def silence_stdout() -> None:
    """The reader of stdout went away (`| head`): point stdout at /dev/null so later writes
    and the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
