"""DAG versions: publish (immutable), enable/disable, resolve, and a cache of compiled DAGs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.audit import Operator
from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import (
    DagDisabled,
    DagNotFound,
    DagVersionConflict,
    SignerNotTrusted,
    SpecInvalid,
    StellaError,
)
from stellaorch.domain.providers import Clock
from stellaorch.domain.spec import (
    CompiledDag,
    DagSpec,
    compile_dag,
    load_spec_file,
    parse_spec,
    spec_invalid,
)
from stellaorch.domain.spec_rules import join_path, problem
from stellaorch.engine.dag_signing import sign_spec, verify_spec
from stellaorch.engine.records import record_audit
from stellaorch.plugins.base import PluginNotFound, PluginRegistry
from stellaorch.plugins.builtin import builtin_registry
from stellaorch.security.trust import TrustStore
from stellaorch.settings import Settings
from stellaorch.store import Connection, dags
from stellaorch.store.dags import DagVersionRow as DagVersionRow
from stellaorch.store.database import Database

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Published:
    """Outcome of a publish: the stored version and whether this call created it."""

    version: DagVersionRow
    created: bool


def load_directory(directory: Path) -> list[DagSpec]:
    """Parse every spec file directly inside `directory`, sorted by file name."""
    files = sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES)
    return [_load_named(p) for p in files]


def _load_named(path: Path) -> DagSpec:
    """One spec file; a refusal names the file it came from."""
    try:
        return load_spec_file(path)
    except SpecInvalid as exc:
        exc.message = f"{path}: {exc.message}"
        raise


def plugin_problems(
    spec: DagSpec, registry: PluginRegistry, tenant: str | None = None
) -> list[dict[str, str]]:
    """Steps whose plugin is unknown (to `tenant`), or whose static parameters it refuses."""
    problems = []
    for i, step in enumerate(spec.steps):
        try:
            found = registry.check_params(step.plugin, step.params, tenant)
        except PluginNotFound as exc:
            problems.append(problem(f"steps[{i}].plugin", exc.message))
            continue
        base = f"steps[{i}].with"
        problems += [problem(join_path(base, where), message) for where, message in found]
    return problems


def check_plugins(
    spec: DagSpec, registry: PluginRegistry | None = None, tenant: str | None = None
) -> None:
    """Refuse (SpecInvalid) a spec with plugin problems; default: the built-in plugins."""
    problems = plugin_problems(spec, registry or builtin_registry(), tenant)
    if problems:
        raise spec_invalid(problems)


class DagCatalog:
    """The tenant's DAG versions; compiled specs are cached since versions never change."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        plugins: PluginRegistry,
        trust: TrustStore | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._plugins = plugins
        self.trust = trust
        self.require_signatures = bool(settings and settings.require_dag_signatures)
        self._compiled: dict[tuple[str, str, str], CompiledDag] = {}
        self._signers: dict[tuple[str, str, str], str | None] = {}

    def compiled(self, conn: Connection, tenant: str, dag_id: str, version: str) -> CompiledDag:
        """The compiled DAG of a stored version (cached)."""
        key = (tenant, dag_id, version)
        hit = self._compiled.get(key)
        if hit is None:
            row = dags.get_version(conn, tenant, dag_id, version)
            if row is None:
                raise DagNotFound(f"DAG {dag_id} version {version} not found")
            hit = compile_dag(parse_spec(json.loads(row.spec_json)))
            self._compiled[key] = hit
            self._signers[key] = row.signed_by
        return hit

    def signer_problem(
        self, conn: Connection, tenant: str, dag_id: str, version: str
    ) -> StellaError | None:
        """Why a stored version may not run now: the key that signed it was revoked since.

        Checked when a run is created and when each attempt starts, so revoking a key stops
        what it signed from loading, as it does for bundles. An unsigned version (published
        where signatures were not required) is judged at publish only.
        """
        key = (tenant, dag_id, version)
        if key not in self._signers:
            self.compiled(conn, tenant, dag_id, version)
        signer = self._signers[key]
        if signer is None or self.trust is None or signer in self.trust.trusted_ids():
            return None
        return SignerNotTrusted(
            f"DAG {dag_id} version {version} was signed by key {signer}, which the trust "
            "store no longer holds (revoked): trust the key again, or publish and run a "
            "version signed by a trusted key"
        )

    def resolve(
        self, conn: Connection, tenant: str, dag_id: str, version: str | None
    ) -> CompiledDag:
        """The version a new run should use: the one named, or the latest enabled one."""
        if version is None:
            row = dags.latest_enabled(conn, tenant, dag_id)
            if row is None:
                raise DagNotFound(f"DAG {dag_id} has no enabled version")
        else:
            row = dags.get_version(conn, tenant, dag_id, str(version))
            if row is None:
                raise DagNotFound(f"DAG {dag_id} version {version} not found")
            if not row.enabled:
                raise DagDisabled(f"DAG {dag_id} version {version} is disabled")
        compiled = self.compiled(conn, tenant, dag_id, row.version)
        problem = self.signer_problem(conn, tenant, dag_id, row.version)
        if problem is not None:
            raise problem
        return compiled

    def signer_of(self, spec: DagSpec, signature: object) -> str | None:
        """The trusted key id whose DSSE `signature` covers `spec` (None: unsigned, allowed)."""
        trusted = self.trust.keys() if self.trust is not None else {}
        return verify_spec(spec, signature, trusted, required=self.require_signatures)

    def publish_tx(
        self, conn: Connection, tenant: str, spec: DagSpec, signed_by: str | None = None
    ) -> Published:
        """Store a version; the same content again is a no-op, other content is a conflict."""
        compiled = compile_dag(spec)
        check_plugins(spec, self._plugins, tenant)
        existing = dags.get_version(conn, tenant, spec.dag_id, spec.version)
        if existing is not None:
            if existing.spec_hash != compiled.spec_hash:
                raise DagVersionConflict(
                    f"DAG {spec.dag_id} version {spec.version} already exists with other "
                    "content; publish a new version instead"
                )
            return Published(existing, created=False)
        row = dags.insert_version(
            conn,
            tenant,
            spec.dag_id,
            spec.version,
            canonical_json(spec.to_document()),
            compiled.spec_hash,
            self._clock.now_us(),
            signed_by,
        )
        self._compiled[(tenant, spec.dag_id, spec.version)] = compiled
        self._signers[(tenant, spec.dag_id, spec.version)] = signed_by
        return Published(row, created=True)

    async def publish(
        self,
        tenant: str,
        spec: DagSpec,
        operator: Operator | None = None,
        signature: object = None,
    ) -> Published:
        """Publish one version in its own transaction; an operator's publication is audited.

        `signature` (a DSSE envelope) is verified against the trust store first; without
        one the version is refused when the catalog requires signatures.
        """
        compile_dag(spec)  # an invalid spec is reported before its signature
        signed_by = self.signer_of(spec, signature)

        def work(conn: Connection) -> Published:
            published = self.publish_tx(conn, tenant, spec, signed_by)
            if operator is not None and published.created:
                target = f"{spec.dag_id}@{spec.version}"
                entry = operator.entry(tenant, "dag.publish", target, {})
                record_audit(conn, entry, self._clock.now_us())
            return published

        return await self._db.transact(work)

    async def publish_directory(
        self, tenant: str, directory: Path, key: Ed25519PrivateKey | None = None
    ) -> list[Published]:
        """Publish every spec file of a directory (sorted by name) in one transaction.

        With `key`, each version is signed with it and verified like any other signature.
        """
        specs = load_directory(directory)
        signers = [self.signer_of(s, sign_spec(s, key) if key else None) for s in specs]
        return await self._db.transact(
            lambda conn: [
                self.publish_tx(conn, tenant, s, k) for s, k in zip(specs, signers, strict=True)
            ]
        )

    async def set_enabled(
        self,
        tenant: str,
        dag_id: str,
        version: str,
        enabled: bool,
        operator: Operator | None = None,
        before: Callable[[Connection, int], object] | None = None,
    ) -> DagVersionRow:
        """Enable or disable a version (never edits it); returns the version as it is now.

        An operator's change is audited as `dag.enable` or `dag.disable` of `dagId@version`.
        `before` runs first in the same transaction when the version exists.
        """

        def work(conn: Connection) -> DagVersionRow:
            if before is not None and dags.get_version(conn, tenant, dag_id, version) is not None:
                before(conn, self._clock.now_us())
            if not dags.set_enabled(conn, tenant, dag_id, version, enabled):
                raise DagNotFound(f"DAG {dag_id} version {version} not found")
            if operator is not None:
                action = "dag.enable" if enabled else "dag.disable"
                entry = operator.entry(tenant, action, f"{dag_id}@{version}", {})
                record_audit(conn, entry, self._clock.now_us())
            row = dags.get_version(conn, tenant, dag_id, version)
            assert row is not None
            return row

        return await self._db.transact(work)

    async def get_version(self, tenant: str, dag_id: str, version: str) -> DagVersionRow:
        """One stored version of the tenant."""
        row = await self._db.read(lambda c: dags.get_version(c, tenant, dag_id, version))
        if row is None:
            raise DagNotFound(f"DAG {dag_id} version {version} not found")
        return row

    async def list_versions(self, tenant: str, dag_id: str | None = None) -> list[DagVersionRow]:
        """Versions of the tenant's DAGs."""
        return await self._db.read(lambda conn: dags.list_versions(conn, tenant, dag_id))
