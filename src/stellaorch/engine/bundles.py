"""The bundle store: import verified bundles for a tenant, and load them for workers.

Archives live under `<bundles_dir>/archives/` named by their digest; rows in the store say
which tenant imported which `name@version`. `BundleStore` is the engine's `BundleSource`:
`load` re-checks the archive's digest, every entry, the rootHash and the signature against
the trust store the first time this process meets a digest, unpacking into a fresh directory
of this process's cache that is renamed into place only once everything matched; later loads
reuse it after re-checking only that the signer is still trusted (revocation is immediate).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import (
    BundleConflict,
    BundleInvalid,
    BundleNotFound,
    BundleTooLarge,
    SignerNotTrusted,
    StellaError,
)
from stellaorch.domain.providers import Clock
from stellaorch.engine.bundle_format import MANIFEST_TYPE
from stellaorch.engine.bundle_reader import (
    BundleLimits,
    CheckedBundle,
    archive_digest,
    read_bundle,
)
from stellaorch.engine.records import record_audit
from stellaorch.plugins.bundle_source import (
    BUNDLE_NOT_FOUND,
    BUNDLE_REVOKED,
    BUNDLE_UNVERIFIED,
    LoadedBundle,
    PluginIdentity,
    bundle_error,
)
from stellaorch.security import dsse
from stellaorch.security.trust import TrustStore
from stellaorch.settings import Settings
from stellaorch.store import Connection
from stellaorch.store import bundles as rows
from stellaorch.store.bundles import BundleRow as BundleRow
from stellaorch.store.database import Database


@dataclass(frozen=True)
class Imported:
    """Outcome of an import: the stored bundle and whether this call added it."""

    bundle: BundleRow
    created: bool


@dataclass(frozen=True)
class BundleCheck:
    """One bundle's verification: ok, or the code and message of the first problem."""

    bundle: BundleRow
    ok: bool
    code: str | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The check as the API shows it."""
        view: dict[str, Any] = {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "digest": self.bundle.digest,
            "verified": self.ok,
        }
        if not self.ok:
            view["error"] = {"code": self.code, "message": self.message}
        return view


def limits_of(settings: Settings) -> BundleLimits:
    """The unpack bounds of the settings."""
    return BundleLimits(settings.bundle_max_entry_bytes, settings.bundle_max_unpacked_bytes)


class BundleStore:
    """Imported bundles of every tenant; implements `plugins.bundle_source.BundleSource`."""

    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.trust = TrustStore(settings.trust_directory)
        self.limits = limits_of(settings)
        self.max_bytes = settings.bundle_max_bytes
        self.archives = settings.bundles_dir / "archives"
        self._cache_root = settings.bundle_cache_dir
        self._cache: Path | None = None
        # digest -> what this process unpacked and verified (reused per digest)
        self._loaded: dict[str, tuple[LoadedBundle, dsse.Envelope]] = {}
        self._loaded_rows: dict[str, BundleRow] = {}  # a row each loaded digest came from
        self._locks: dict[str, asyncio.Lock] = {}

    # -- import ------------------------------------------------------------------------------
    async def import_bundle(
        self, tenant: str, data: bytes, operator: Operator | None = None
    ) -> Imported:
        """Verify an archive fully, keep it under its digest and record it for the tenant."""
        if len(data) > self.max_bytes:
            raise BundleTooLarge(f"the bundle is larger than {self.max_bytes} bytes")
        checked = await asyncio.to_thread(read_bundle, data, self.limits, self.trust.keys())
        await asyncio.to_thread(self._keep_archive, checked.digest, data)
        row = BundleRow(
            tenant,
            checked.digest,
            checked.name,
            checked.version,
            checked.root_hash,
            str(checked.signed_by),
            len(data),
            checked.manifest_raw.decode("utf-8"),
            self._clock.now_us(),
        )

        def work(conn: Connection) -> Imported:
            rows.lock_name(conn, tenant, row.name, row.version)
            existing = rows.get_by_name(conn, tenant, row.name, row.version)
            if existing is not None:
                if existing.digest != row.digest:
                    raise BundleConflict(
                        f"bundle {row.name}@{row.version} was imported with other content "
                        f"({existing.digest}); import a new version instead"
                    )
                return Imported(existing, created=False)
            rows.insert_bundle(conn, row)
            if operator is not None:
                entry = operator.entry(
                    tenant,
                    "bundle.import",
                    f"{row.name}@{row.version}",
                    {"digest": row.digest, "signedBy": row.signed_by},
                )
                record_audit(conn, entry, self._clock.now_us())
            return Imported(row, created=True)

        return await self._db.transact(work)

    def _archive_path(self, digest: str) -> Path:
        return self.archives / (digest.removeprefix("sha256:") + ".stella.bundle.tgz")

    def _keep_archive(self, digest: str, data: bytes) -> None:
        target = self._archive_path(digest)
        if target.exists():
            return
        self.archives.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.archives, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)

    async def list_bundles(self, tenant: str) -> list[BundleRow]:
        """The tenant's bundles by name, then version."""
        return await self._db.read(lambda conn: rows.list_bundles(conn, tenant))

    async def get(self, tenant: str, name: str, version: str) -> BundleRow:
        """The tenant's bundle `name@version` (BundleNotFound otherwise)."""
        row = await self._db.read(lambda conn: rows.get_by_name(conn, tenant, name, version))
        if row is None:
            raise BundleNotFound(f"bundle {name}@{version} is not imported for tenant {tenant}")
        return row

    # -- BundleSource ----------------------------------------------------------------------
    def find(self, tenant: str, name: str, version: str) -> PluginIdentity | None:
        """The tenant's imported `name@version` whose signer is still trusted, or None."""
        return self._db.read_sync(lambda conn: self.find_in(conn, tenant, name, version))

    def find_in(
        self, conn: Connection, tenant: str, name: str, version: str
    ) -> PluginIdentity | None:
        """`find` inside the caller's transaction (e.g. a publish's `check_params`)."""
        row = rows.get_by_name(conn, tenant, name, version)
        if row is None or row.signed_by not in self.trust.keys():  # noqa: SIM118
            return None
        return PluginIdentity(row.name, row.version, row.digest)

    async def load(self, tenant: str, name: str, version: str) -> LoadedBundle:
        """The verified, unpacked bundle; `bundle_error` when missing, tampered or revoked."""
        row = await self._db.read(lambda conn: rows.get_by_name(conn, tenant, name, version))
        if row is None:
            raise bundle_error(BUNDLE_NOT_FOUND, f"bundle {name}@{version} is not imported")
        lock = self._locks.setdefault(row.digest, asyncio.Lock())
        async with lock:
            try:
                return await self._load_row(row)
            except StellaError as exc:
                code = BUNDLE_REVOKED if isinstance(exc, SignerNotTrusted) else BUNDLE_UNVERIFIED
                raise bundle_error(code, f"bundle {name}@{version}: {exc.message}") from exc

    async def _load_row(self, row: BundleRow) -> LoadedBundle:
        trusted = self.trust.keys()
        hit = self._loaded.get(row.digest)
        if hit is not None:
            dsse.verify(hit[1], MANIFEST_TYPE, trusted)  # still trusted? (cheap)
            return hit[0]
        loaded, envelope = await asyncio.to_thread(self._unpack, row, trusted)
        self._loaded[row.digest] = (loaded, envelope)
        self._loaded_rows[row.digest] = row
        return loaded

    async def warm(self, tenants: list[str] | None) -> dict[str, Any]:
        """`admin warm`: re-verify bundles from disk now, so no attempt waits or trusts stale.

        With tenants: every bundle they imported (unpacking those not yet loaded). Without
        (another process asked): the bundles this process has loaded. A loaded bundle's
        unpacked directory is kept (running steps read it); only its archive is re-checked,
        and one that no longer verifies is dropped, so its next load fails as it should.
        """
        if tenants is None:
            targets = list(self._loaded_rows.values())
        else:
            targets = []
            for tenant in tenants:
                targets += await self.list_bundles(tenant)
        failed = 0
        for row in targets:
            if not await self._still_verifies(row):
                failed += 1
        return {"bundles": len(targets), "verified": len(targets) - failed, "failed": failed}

    async def _still_verifies(self, row: BundleRow) -> bool:
        """Whether the bundle verifies afresh (and is loaded afterwards)."""
        if row.digest in self._loaded:
            try:
                data = await asyncio.to_thread(self._read_archive, row)
                checked = await asyncio.to_thread(read_bundle, data, self.limits, self.trust.keys())
                _check_row(row, checked)
                return True
            except StellaError:
                self._loaded.pop(row.digest, None)
                self._loaded_rows.pop(row.digest, None)
                return False
        return (await self.check(row, fresh=False)).ok

    def _unpack(
        self, row: BundleRow, trusted: Mapping[str, Ed25519PublicKey]
    ) -> tuple[LoadedBundle, dsse.Envelope]:
        """Check the archive on disk and unpack it into this process's cache, atomically."""
        data = self._read_archive(row)
        cache = self._cache_dir()
        target = cache / row.digest.removeprefix("sha256:")
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
        try:
            checked = read_bundle(data, self.limits, trusted, unpack_to=staging)
            _check_row(row, checked)
            if target.exists():  # left by an earlier failed attempt of this process
                shutil.rmtree(target)
            # mkdtemp made it 0700: the step sandbox's unprivileged uid must read the bundle.
            staging.chmod(0o755)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        assert checked.envelope is not None and checked.signed_by is not None
        loaded = LoadedBundle(
            row.name,
            row.version,
            row.digest,
            row.root_hash,
            target,
            checked.signed_by,
            checked.manifest,
        )
        return loaded, checked.envelope

    def _read_archive(self, row: BundleRow) -> bytes:
        try:
            data = self._archive_path(row.digest).read_bytes()
        except OSError as exc:
            raise BundleNotFound(
                f"the archive of {row.digest} is missing: {exc.strerror}"
            ) from None
        if archive_digest(data) != row.digest:
            raise BundleInvalid(f"the archive on disk no longer has digest {row.digest}")
        return data

    def _cache_dir(self) -> Path:
        """This process's own cache directory (made on first use, removed by `close`)."""
        if self._cache is None:
            root = self._cache_root
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
                root.chmod(0o711)
            prefix = f"stella-bundles-{os.getpid()}-"
            cache = Path(tempfile.mkdtemp(dir=root, prefix=prefix))
            # Enterable, not listable, by the step sandbox's uid: it reads bundles in here.
            cache.chmod(0o711)
            self._cache = cache
        return self._cache

    def close(self) -> None:
        """Remove this process's unpacked cache."""
        if self._cache is not None:
            shutil.rmtree(self._cache, ignore_errors=True)
            self._cache = None
            self._loaded.clear()
            self._loaded_rows.clear()

    # -- verification for operators ----------------------------------------------------------
    async def check(self, row: BundleRow, *, fresh: bool) -> BundleCheck:
        """Verify one bundle: fully from disk when `fresh`, else as far as this process knows."""
        if fresh:
            self._loaded.pop(row.digest, None)
            self._loaded_rows.pop(row.digest, None)
        try:
            await self.load(row.tenant, row.name, row.version)
        except StellaError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, StellaError) else exc
            return BundleCheck(row, False, cause.code, cause.message)
        return BundleCheck(row, True)

    async def verify_all(self, tenant: str, *, fresh: bool = True) -> list[BundleCheck]:
        """Every bundle of the tenant, verified (re-read from disk when `fresh`)."""
        return [await self.check(row, fresh=fresh) for row in await self.list_bundles(tenant)]

    async def status(self, tenant: str) -> dict[str, Any]:
        """Health's view: count, verified, failures (a digest is fully checked once)."""
        checks = await self.verify_all(tenant, fresh=False)
        failures = [c.as_json() for c in checks if not c.ok]
        return {"count": len(checks), "verified": len(checks) - len(failures), "failures": failures}


def _check_row(row: BundleRow, checked: CheckedBundle) -> None:
    """The archive is the one the row recorded (name, version, rootHash)."""
    recorded = json.loads(row.manifest_json)
    if checked.manifest != recorded or checked.root_hash != row.root_hash:
        raise BundleInvalid(f"the archive of {row.digest} differs from what was imported")
