"""`stella orch ledger export|verify`: download a window of the ledger, check it offline."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import ApiUnreachable, LedgerBroken
from stellaorch.cli.render import Printer


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


async def verify(printer: Printer, path: Path) -> None:
    """Recompute the manifest and every run's hash chain; name the first problem if broken."""
    from stellaorch.engine.export import verify_file  # the engine, only for this command

    report = verify_file(path)
    printer.one(
        "verify",
        {
            "file": str(path),
            "ok": report.ok,
            "count": report.count,
            "line": report.line,
            "problem": report.problem,
        },
    )
    if not report.ok:
        where = f"{path}: line {report.line}" if report.line else str(path)
        raise LedgerBroken(f"{where}: {report.problem}")
