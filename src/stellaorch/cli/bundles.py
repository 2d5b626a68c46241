"""`stella orch bundle …` and `keys trust …`: build, sign, verify locally; import over the API."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from stellaorch.cli.client import ApiClient
from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.listing import Paging, print_pages
from stellaorch.cli.output import print_json, say
from stellaorch.cli.render import Printer
from stellaorch.domain.errors import NotFound, StellaError, ValidationError
from stellaorch.engine.bundle_format import build_bundle, read_descriptor
from stellaorch.engine.bundle_reader import CheckedBundle, read_bundle, sign_archive
from stellaorch.engine.bundles import limits_of
from stellaorch.security.trust import TrustStore, load_private_key
from stellaorch.settings import Settings

ARCHIVE_TYPE = "application/octet-stream"


class BundlesUnverified(StellaError):
    """`bundle verify --all`: at least one imported bundle failed verification."""

    code = "BUNDLES_UNVERIFIED"


def _read(path: Path, limit: int) -> bytes:
    """A bundle file, refused when missing or larger than the import bound."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ValidationError(f"{path} is {size} bytes, over the bound of {limit}")
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no bundle file {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write the whole file next to its place, then rename it there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _summary(path: Path, checked: CheckedBundle) -> dict[str, Any]:
    return {
        "file": str(path),
        "name": checked.name,
        "version": checked.version,
        "digest": checked.digest,
        "rootHash": checked.root_hash,
        "entries": len(checked.manifest["entries"]),
        "signedBy": checked.signed_by,
    }


async def build(
    settings: Settings, directory: Path, out: Path | None, overrides: dict[str, str | None]
) -> None:
    """Build the (unsigned) archive of a directory; print its summary as JSON."""
    descriptor = read_descriptor(directory, overrides)
    data = build_bundle(directory, descriptor)
    target = out or Path(descriptor.file_name)
    _write_atomically(target, data)
    print_json(_summary(target, read_bundle(data, limits_of(settings), None)))


async def sign(settings: Settings, path: Path, key_path: Path) -> None:
    """Sign a bundle's manifest with an Ed25519 key (the file is rewritten in place)."""
    key = load_private_key(key_path)
    limits = limits_of(settings)
    signed = sign_archive(_read(path, settings.bundle_max_bytes), key, limits)
    _write_atomically(path, signed)
    checked = read_bundle(signed, limits, None)
    summary = _summary(path, checked)
    summary["signedBy"] = checked.envelope.signatures[0][0] if checked.envelope else None
    print_json(summary)


async def verify_file(settings: Settings, path: Path) -> None:
    """Check every entry, the rootHash and the signature against the local trust store."""
    data = _read(path, settings.bundle_max_bytes)
    trusted = TrustStore(settings.trust_directory).keys()
    checked = read_bundle(data, limits_of(settings), trusted)
    print_json({**_summary(path, checked), "verified": True})


# --- over the API ---------------------------------------------------------------------------
async def import_file(
    client: ApiClient, printer: Printer, settings: Settings, path: Path, note: OperatorNote
) -> None:
    """Send a signed bundle to the server, which verifies it and stores it for the tenant."""
    data = _read(path, settings.bundle_max_bytes)
    printer.one("bundle", await client.post_bytes("/bundles", data, ARCHIVE_TYPE, note.headers()))


async def list_bundles(client: ApiClient, printer: Printer, paging: Paging) -> None:
    """The tenant's imported bundles."""
    await print_pages(client, printer, "bundle", "/bundles", {}, paging)


async def verify_all(client: ApiClient, printer: Printer) -> None:
    """Have the server re-verify every bundle of the tenant; exit 1 when any fails."""
    report = await client.post("/bundles:verify")
    printer.listing("bundle-check", report)
    if report["failures"]:
        first = next(i for i in report["items"] if not i["verified"])
        raise BundlesUnverified(
            f"{report['failures']} of {report['count']} bundles failed verification; first: "
            f"{first['name']}@{first['version']}: {first['error']['code']}"
        )


# --- the trust store ------------------------------------------------------------------------
async def trust_add(settings: Settings, path: Path) -> None:
    """Trust the Ed25519 key of a PEM file (public, or a private key's public half)."""
    say(TrustStore(settings.trust_directory).add_file(path).key_id)


async def trust_list(settings: Settings, printer: Printer) -> None:
    """The trusted keys, by key id."""
    store = TrustStore(settings.trust_directory)
    items = [
        {"keyId": k.key_id, "file": str(store.directory / f"{k.key_id}.pem")} for k in store.list()
    ]
    printer.listing("trusted-key", {"items": items})


async def trust_remove(settings: Settings, kid: str) -> None:
    """Revoke a key: what it signed no longer verifies, at import or at load."""
    TrustStore(settings.trust_directory).remove(kid)
    say(f"removed {kid}")
