"""`stella orch export`: download the signed offline kit of a window; verify one offline."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import ExportBroken, UsageInvalid
from stellaorch.cli.ledger import trusted_keys
from stellaorch.cli.output import stderr_is_terminal
from stellaorch.cli.progress import StageProgress
from stellaorch.cli.render import Printer

ARCHIVE_SUFFIXES = (".tgz", ".tar.gz")


def is_archive(out: Path) -> bool:
    """`--out` names a .tgz file (else a directory to write the files into)."""
    return out.name.endswith(ARCHIVE_SUFFIXES)


def check_target(out: Path) -> None:
    """A directory target must be new or empty: a verifier refuses files that are not the kit's."""
    if not is_archive(out) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageInvalid(f"{out} exists and is not an empty directory (or name a .tgz file)")


@contextlib.contextmanager
def _progress(label: str) -> Iterator[StageProgress | None]:
    """A progress display on a terminal, nothing otherwise (pipes and logs stay clean)."""
    if not stderr_is_terminal():
        yield None
        return
    with StageProgress(label) as shown:
        yield shown


async def export(client: ApiClient, printer: Printer, window: tuple[str, str], out: Path) -> None:
    """Download the kit to `out` (a .tgz, or a new directory of its files); print a summary."""
    check_target(out)
    partial = out.with_name(out.name + ".partial.tgz")
    try:
        with _progress("export") as shown:
            await _download(client, window, partial, shown)
            summary = _place(partial, out)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()  # no half kit may look complete
    printer.one("export", summary)


async def _download(
    client: ApiClient, window: tuple[str, str], sink_path: Path, shown: StageProgress | None
) -> None:
    params = {"from": window[0], "to": window[1]}
    async with client.download("/export", params) as response:
        total = int(response.headers.get("content-length") or 0) or None
        if shown:
            shown.stage("downloading")
        with sink_path.open("wb") as sink:
            # The CLI's loop runs only this download: a blocking write stalls nothing else.
            async for chunk in response.aiter_bytes():
                sink.write(chunk)
                if shown:
                    shown.moved(len(chunk), total)


def _place(partial: Path, out: Path) -> dict[str, Any]:
    """Rename the archive into place, or unpack its (checked) files into the directory."""
    from stellaorch.engine.kit_verify import KitProblem, read_kit  # the engine, only here

    try:
        files = read_kit(partial)
    except KitProblem as problem:
        raise ExportBroken(f"the server sent no offline kit: {problem}") from None
    if is_archive(out):
        partial.replace(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_bytes(content)
    manifest = json.loads(files["manifest.json"])
    counts = {item["path"].removesuffix(".ndjson"): item["count"] for item in manifest["files"]}
    return {"out": str(out), "rootHash": manifest["rootHash"], **counts}


async def verify(printer: Printer, path: Path, keys: list[Path], trust_dir: Path | None) -> None:
    """Check a kit offline; print the report and name the first problem (exit 1)."""
    from stellaorch.engine.kit_verify import verify_kit_path  # the engine, only here

    trusted = trusted_keys(keys, trust_dir)
    with _progress("verify") as shown:
        stage = (lambda name: shown.stage(f"checking {name}")) if shown else None
        report = verify_kit_path(path, trusted, stage)
    counts = {name.removesuffix(".ndjson"): n for name, n in report.counts.items()}
    printer.one(
        "kitverify",
        {"path": str(path), "ok": report.ok, "signedBy": report.signed_by, **counts,
         "problem": report.problem},
    )  # fmt: skip
    if not report.ok:
        raise ExportBroken(f"{path}: {report.problem}")
