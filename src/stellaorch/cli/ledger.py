"""`stella orch ledger export|verify`: download a window of the ledger, check it offline."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stellaorch.cli.client import ApiClient
from stellaorch.cli.config import build_settings
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.errors import ApiUnreachable, LedgerBroken
from stellaorch.cli.render import Printer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class LastLine:
    """Remembers the last complete line of a byte stream fed in chunks."""

    def __init__(self) -> None:
        self._pending = b""
        self.line = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk; only the bytes since the last newline are kept."""
        data = self._pending + chunk
        head, newline, tail = data.rpartition(b"\n")
        if newline:
            self.line = head.rpartition(b"\n")[2]
        self._pending = tail

    def finish(self) -> bytes:
        """The last line, whether or not the stream ended with a newline."""
        return self._pending if self._pending.strip() else self.line


async def export(client: ApiClient, printer: Printer, window: tuple[str, str], out: Path) -> None:
    """Stream the export into `out` chunk by chunk, then print its manifest."""
    partial = out.with_name(out.name + ".partial")
    last = LastLine()
    params = {"from": window[0], "to": window[1]}
    try:
        async with client.download("/ledger/export", params) as response:
            with partial.open("wb") as sink:
                # The CLI's loop runs only this download: a blocking write stalls nothing else.
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
                    last.feed(chunk)
        manifest = _manifest(last.finish())
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()  # no half export may look complete
        raise
    partial.replace(out)
    printer.one("manifest", {**manifest, "file": str(out)})


def _manifest(line: bytes) -> dict[str, Any]:
    """The trailing `{"manifest": {...}}` line; its absence means the export was cut short."""
    try:
        manifest = json.loads(line).get("manifest")
    except (ValueError, AttributeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise ApiUnreachable("the export ended without its manifest line (connection cut short?)")
    return manifest


async def checkpoint(client: ApiClient, printer: Printer, note: OperatorNote) -> None:
    """POST /ledger/checkpoints and print the tenant's newest checkpoint."""
    printer.one("checkpoint", await client.post("/ledger/checkpoints", None, note.headers()))


def trusted_keys(files: list[Path], trust_dir: Path | None) -> dict[str, Ed25519PublicKey]:
    """The keys checkpoints may be signed by: the given PEM files, else the trust store."""
    from stellaorch.security.trust import (  # the crypto stack, only for verification
        MAX_KEY_FILE_BYTES,
        TrustStore,
        key_id,
        public_key_from_pem,
    )

    if files:
        found = {}
        for path in files:
            public = public_key_from_pem(path.read_bytes()[:MAX_KEY_FILE_BYTES], str(path))
            found[key_id(public)] = public
        return found
    return TrustStore(trust_dir or build_settings().trust_directory).keys()


async def verify(printer: Printer, path: Path, keys: list[Path], trust_dir: Path | None) -> None:
    """Recompute the manifest, every hash chain and checkpoint; name the first problem."""
    from stellaorch.engine.export import verify_file  # the engine, only for this command

    report = verify_file(path, trusted_keys(keys, trust_dir))
    printer.one(
        "verify",
        {
            "file": str(path),
            "ok": report.ok,
            "count": report.count,
            "checkpoints": report.checkpoints,
            "line": report.line,
            "problem": report.problem,
        },
    )
    if not report.ok:
        where = f"{path}: line {report.line}" if report.line else str(path)
        raise LedgerBroken(f"{where}: {report.problem}")
