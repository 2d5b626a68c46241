"""Verifying signed checkpoints against exported runs, offline (docs/ledger.md).

Run lines are fed first (their chains' entry hashes are kept, by run), then checkpoints in
seq order: each must be signed by a trusted key, be of the export's tenant, follow the one
before it, and every run head it signed must still be in the exported chain; a run it places
in the export's window must be in the export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from stellaorch.domain.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_TYPE,
    checkpoint_hash,
    head_problem,
    label,
    link_problem,
)
from stellaorch.domain.errors import SignatureInvalid
from stellaorch.domain.providers import parse_utc
from stellaorch.security import dsse


@dataclass(frozen=True)
class _Absent:
    """A run a checkpoint names that the export does not hold (fine unless in the window)."""

    line: int
    what: str
    run_id: str
    started: str


@dataclass
class CheckpointCheck:
    """The state of one export's checkpoint verification."""

    trusted: Mapping[str, Ed25519PublicKey] | None
    tenant: str | None = None
    count: int = 0
    signers: set[str] = field(default_factory=set)
    _runs: dict[str, list[str]] = field(default_factory=dict)
    _previous: tuple[dict[str, Any], str] | None = None
    _absent: list[_Absent] = field(default_factory=list)

    def add_run(self, run_id: str, events: list[Any]) -> None:
        """Remember an exported run's entry hashes by seq (its chain was verified already)."""
        self._runs[run_id] = [str(e.get("entryHash")) for e in events if isinstance(e, dict)]

    def feed(self, envelope: object, line: int) -> str | None:
        """Check one checkpoint envelope; the first problem, or None."""
        opened = self._open(envelope)
        if isinstance(opened, str):
            return opened
        document, digest = opened
        problem = self._place_problem(document) or self._heads_problem(document, line)
        self._previous = (document, digest)
        self.count += 1
        return problem

    def _open(self, envelope: object) -> tuple[dict[str, Any], str] | str:
        """The verified payload and its hash, or why it cannot be trusted."""
        where = f"checkpoint line {self.count + 1}"
        try:
            parsed = dsse.parse_envelope(envelope)
            document = json.loads(parsed.payload)
        except (SignatureInvalid, ValueError) as exc:
            return f"{where}: not a checkpoint envelope: {exc}"
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            return f"{where}: the payload is not a {CHECKPOINT_FORMAT} document"
        if self.trusted is None:
            return f"{label(document)}: no public key given to verify its signature"
        try:
            self.signers.add(dsse.verify(parsed, CHECKPOINT_TYPE, self.trusted))
        except SignatureInvalid as exc:
            return f"{label(document)}: signature does not verify: {exc.message}"
        return document, checkpoint_hash(parsed.payload)

    def _place_problem(self, document: dict[str, Any]) -> str | None:
        """Of the export's tenant, and the successor of the checkpoint before it."""
        tenant = document.get("tenant")
        if self.tenant not in (None, tenant):
            return f"{label(document)} is of tenant {tenant}, the export of tenant {self.tenant}"
        self.tenant = str(tenant)
        previous, prev_hash = self._previous or (None, "")
        return link_problem(previous, prev_hash, document)

    def _heads_problem(self, document: dict[str, Any], line: int) -> str | None:
        heads = document.get("runs")
        if not isinstance(heads, list):
            return f"{label(document)}: no runs list"
        for head in heads:
            if not isinstance(head, dict):
                return f"{label(document)}: a run head is not an object"
            run_id = str(head.get("runId"))
            hashes = self._runs.get(run_id)
            if hashes is not None:
                problem = head_problem(document, head, hashes)
                if problem is not None:
                    return problem
            elif isinstance(head.get("startedUtc"), str):
                self._absent.append(_Absent(line, label(document), run_id, head["startedUtc"]))
        return None

    def window_problem(self, window: tuple[object, object]) -> tuple[int, str] | None:
        """A run a checkpoint places in [from, to) that the export lacks: (line, problem)."""
        try:
            start, end = parse_utc(str(window[0])), parse_utc(str(window[1]))
        except ValueError:
            return None  # the manifest check reports a malformed window
        for absent in self._absent:
            if start <= parse_utc(absent.started) < end:
                problem = (
                    f"{absent.what} lists run {absent.run_id} started {absent.started}, in the "
                    "export's window, but the export does not hold it: a run was removed"
                )
                return absent.line, problem
        return None
