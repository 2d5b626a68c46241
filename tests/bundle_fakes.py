"""A `BundleSource` test double: bundles are directories written by the test, per tenant.

It stands where the engine's real source (verified, imported bundles) will be; it hands out
the same `LoadedBundle` and raises the same `bundle_error` codes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from stellaorch.plugins.bundle_source import (
    BUNDLE_NOT_FOUND,
    LoadedBundle,
    PluginIdentity,
    bundle_error,
)

Key = tuple[str, str, str]


class FakeBundles:
    """Bundles by (tenant, name, version); `broken` makes a load fail with a code."""

    def __init__(self) -> None:
        self.bundles: dict[Key, LoadedBundle] = {}
        self.broken: dict[Key, str] = {}
        self.loads = 0
        # Not under pytest's 0700 tmp_path: the sandbox's unprivileged uid must read it.
        self.base = tempfile.mkdtemp(prefix="stella-test-bundles-")
        os.chmod(self.base, 0o755)

    def add(
        self,
        tenant: str,
        name: str,
        version: str,
        files: dict[str, tuple[str, int]],
        *,
        kind: str = "script",
        entrypoint: str = "run",
    ) -> LoadedBundle:
        """Write `files` (path -> (text, mode)) as the unpacked bundle `name@version`."""
        root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        os.chmod(root, 0o755)
        digest = hashlib.sha256()
        for path, (text, mode) in sorted(files.items()):
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(target.parent, 0o755)
            target.write_text(text)
            os.chmod(target, mode)
            digest.update(f"{path}\0{text}\0".encode())
        bundle = LoadedBundle(
            name=name,
            version=version,
            digest=f"sha256:{digest.hexdigest()}",
            root_hash=f"sha256:{digest.hexdigest()}",
            root=root,
            signed_by="test-key",
            manifest={"plugin": {"type": kind, "entrypoint": entrypoint}},
        )
        self.bundles[(tenant, name, version)] = bundle
        return bundle

    def find(self, tenant: str, name: str, version: str) -> PluginIdentity | None:
        """The identity of an added bundle (a broken one is still imported)."""
        bundle = self.bundles.get((tenant, name, version))
        return None if bundle is None else bundle.identity

    async def load(self, tenant: str, name: str, version: str) -> LoadedBundle:
        """The added bundle, or the error a real source raises."""
        self.loads += 1
        key = (tenant, name, version)
        if key in self.broken:
            raise bundle_error(self.broken[key], f"bundle {name}@{version}: {self.broken[key]}")
        bundle = self.bundles.get(key)
        if bundle is None:
            raise bundle_error(BUNDLE_NOT_FOUND, f"tenant {tenant} has no bundle {name}@{version}")
        return bundle

    def close(self) -> None:
        """Remove every directory written."""
        shutil.rmtree(self.base, ignore_errors=True)
