"""What a plugin needs of the bundle store: an imported, verified bundle unpacked on disk.

The engine implements `BundleSource` (it reads the store and the trust store); plugins only
consume it, so the sandboxed `script` and `cli` plugins never learn where bundles are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stellaorch.domain.errors import StepFailed

# Codes an attempt fails with when its bundle cannot be loaded; none is worth a retry.
BUNDLE_NOT_FOUND = "BUNDLE_NOT_FOUND"
BUNDLE_UNVERIFIED = "BUNDLE_UNVERIFIED"
BUNDLE_REVOKED = "BUNDLE_REVOKED"


@dataclass(frozen=True)
class PluginIdentity:
    """Which code ran an attempt: a bundle (name, version, digest) or a built-in (version)."""

    name: str
    version: str
    # "sha256:<hex>" of the bundle archive; None for a built-in plugin.
    digest: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The identity as it is recorded on the attempt, in the ledger and in exports."""
        kind = "builtin" if self.digest is None else "bundle"
        return {"kind": kind, "name": self.name, "version": self.version, "digest": self.digest}


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle unpacked into this worker's cache (read-only, reused per digest)."""

    name: str
    version: str
    digest: str
    root_hash: str
    root: Path
    signed_by: str
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> PluginIdentity:
        """The identity an attempt that ran from this bundle records."""
        return PluginIdentity(self.name, self.version, self.digest)


class BundleSource(Protocol):
    """Finds and loads a tenant's imported bundles; nothing unverified is ever returned."""

    def find(self, tenant: str, name: str, version: str) -> PluginIdentity | None:
        """The imported bundle `name@version` of `tenant`, or None (a publish-time check)."""
        ...

    async def load(self, tenant: str, name: str, version: str) -> LoadedBundle:
        """Verify (once per digest) and unpack the bundle; raise `bundle_error` otherwise."""
        ...


def bundle_error(code: str, message: str) -> StepFailed:
    """The attempt's error when its bundle is missing, tampered with or its key revoked."""
    return StepFailed(code, message, retryable=False)
