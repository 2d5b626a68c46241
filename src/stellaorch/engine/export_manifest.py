"""The ledger export's manifest line: counts and hashes over the lines before it.

See docs/ledger-export.md: `count` and `rootHash` cover the run lines, `checkpoints` counts the
checkpoint lines, `sha256` covers every byte before the manifest line, and `from`/`to` say
which window the export claims to hold (so a run a checkpoint places in it must be there).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.canonical import canonical_json, sha256_hex


@dataclass(frozen=True)
class Manifest:
    """What the trailing line promises about the lines before it."""

    count: int
    sha256: str
    root_hash: str
    checkpoints: int
    window: tuple[str, str]

    def document(self) -> dict[str, Any]:
        """The manifest as JSON (`?manifest=1`)."""
        return {
            "count": self.count,
            "sha256": self.sha256,
            "rootHash": self.root_hash,
            "checkpoints": self.checkpoints,
            "from": self.window[0],
            "to": self.window[1],
        }

    def line(self) -> bytes:
        """The trailing NDJSON line."""
        return canonical_json({"manifest": self.document()}).encode("utf-8") + b"\n"


class ManifestBuilder:
    """Hashes lines as they pass, in constant memory."""

    def __init__(self, window: tuple[str, str] = ("", "")) -> None:
        self.count = 0
        self.checkpoints = 0
        self.window = window
        self._all = hashlib.sha256()
        self._root = hashlib.sha256()

    def add(self, line: bytes) -> None:
        """Account for one run line (with its trailing newline)."""
        self._all.update(line)
        # rootHash covers the per-line digests joined by "\n" (see docs/ledger-export.md).
        separator = b"\n" if self.count else b""
        self._root.update(separator + sha256_hex(line.removesuffix(b"\n")).encode("ascii"))
        self.count += 1

    def add_checkpoint(self, line: bytes) -> None:
        """Account for one checkpoint line (only `sha256` and `checkpoints` cover it)."""
        self._all.update(line)
        self.checkpoints += 1

    def manifest(self) -> Manifest:
        """The manifest of the lines added so far."""
        return Manifest(
            self.count,
            self._all.hexdigest(),
            "sha256:" + self._root.hexdigest(),
            self.checkpoints,
            self.window,
        )
