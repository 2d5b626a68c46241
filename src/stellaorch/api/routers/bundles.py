"""Plugin bundles: import a signed archive, list, show, verify them all (docs/bundles.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from stellaorch.api.auth import AdminCaller, AdminReader, ReadCaller
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator
from stellaorch.domain.errors import BundleTooLarge
from stellaorch.domain.providers import format_utc
from stellaorch.engine.bundles import BundleRow

router = APIRouter(tags=["bundles"])
IMPORT_PATH = "/bundles"
NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION = r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$"
_ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def bundle_view(row: BundleRow) -> dict[str, Any]:
    """An imported bundle as JSON."""
    manifest = json.loads(row.manifest_json)
    return {
        "name": row.name,
        "version": row.version,
        "digest": row.digest,
        "rootHash": row.root_hash,
        "signedBy": row.signed_by,
        "sizeBytes": row.size_bytes,
        "plugin": manifest.get("plugin"),
        "entries": len(manifest.get("entries", [])),
        "importedUtc": format_utc(row.created_us),
    }


async def _archive(request: Request, limit: int) -> bytes:
    """The request body, counted while it arrives (the middleware bounds it too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BundleTooLarge(f"the bundle is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(IMPORT_PATH, status_code=201, openapi_extra=_ARCHIVE_BODY)
async def import_bundle(request: Request, caller: AdminCaller) -> Response:
    """Import a signed bundle archive (the body): 201, or 200 when it was already imported."""
    orch = orchestrator(request)
    data = await _archive(request, orch.env.settings.bundle_max_bytes)
    imported = await orch.bundles.import_bundle(caller.tenant, data, caller.operator)
    return JSONResponse(bundle_view(imported.bundle), status_code=201 if imported.created else 200)


@router.get("/bundles")
async def list_bundles(
    request: Request, caller: ReadCaller, page_size: PageSize = 50, page_token: PageToken = None
) -> dict[str, Any]:
    """The tenant's bundles by name, then version."""
    rows = await orchestrator(request).bundles.list_bundles(caller.tenant)
    position = decode_position(page_token, (str, str))
    if position:
        rows = [r for r in rows if (r.name, r.version) > position]
    page = rows[:page_size]
    more = len(rows) > page_size
    token = encode_token([page[-1].name, page[-1].version]) if more and page else None
    return {"items": [bundle_view(r) for r in page], "nextPageToken": token}


@router.post("/bundles:verify")
async def verify_bundles(request: Request, caller: AdminReader) -> dict[str, Any]:
    """Re-verify every bundle of the tenant from disk (digest, entries, rootHash, signature)."""
    checks = await orchestrator(request).bundles.verify_all(caller.tenant, fresh=True)
    failures = [c for c in checks if not c.ok]
    return {
        "count": len(checks),
        "verified": len(checks) - len(failures),
        "failures": len(failures),
        "items": [c.as_json() for c in checks],
    }


@router.get("/bundles/{name}/{version}")
async def get_bundle(
    name: Annotated[str, Path(pattern=NAME)],
    version: Annotated[str, Path(pattern=VERSION)],
    request: Request,
    caller: ReadCaller,
) -> dict[str, Any]:
    """One imported bundle of the tenant, with its manifest."""
    row = await orchestrator(request).bundles.get(caller.tenant, name, version)
    return {**bundle_view(row), "manifest": json.loads(row.manifest_json)}
