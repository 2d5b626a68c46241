"""Bundle benchmarks: build, verify, verify + unpack a 50 MB bundle; cached loads.

Usage: .venv/bin/python bench/bundles.py [--mb 50] [--repeat 5]
Prints a table of median wall times; never run as a test. Target (issue 11): verify and
unpack 50 MB in at most 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.audit import Operator
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.bundle_format import Descriptor, build_bundle
from stellaorch.engine.bundle_reader import BundleLimits, read_bundle, sign_archive
from stellaorch.security.trust import TrustStore, key_id
from stellaorch.settings import Settings

DESCRIPTOR = Descriptor("bench", "1.0.0", "script", "run.sh")
FILE_MB = 1


def write_source(directory: Path, megabytes: int) -> None:
    """`megabytes` files of 1 MiB: half random bytes, half repetitive text (like code)."""
    rng = random.Random(7)
    directory.mkdir(parents=True)
    (directory / "run.sh").write_text("#!/bin/sh\necho bench\n")
    (directory / "run.sh").chmod(0o755)
    text = b"".join(b"line %d of a generated module\n" % i for i in range(40_000))
    for i in range(megabytes):
        data = rng.randbytes(2**20) if i % 2 else text[: 2**20].ljust(2**20, b"#")
        path = directory / f"lib/part-{i:03d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)


def timed(work: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` runs of `work`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unpack_once(data: bytes, limits: BundleLimits, trust: dict[str, object], root: Path) -> None:
    """Verify and unpack into a fresh directory, then remove it."""
    target = Path(tempfile.mkdtemp(dir=root))
    read_bundle(data, limits, trust, unpack_to=target)  # type: ignore[arg-type]
    shutil.rmtree(target)


async def store_loads(data: bytes, key: Ed25519PrivateKey, work: Path) -> tuple[float, float]:
    """BundleStore.load: the first load (verify + unpack) and a cached one, in seconds."""
    settings = Settings(database_url=f"sqlite:///{work}/bench.db", keys_dir=work / "keys",
                        bundles_dir=work / "bundles", bundle_max_bytes=2**30)  # fmt: skip
    TrustStore(settings.trust_directory).add_public(key.public_key())
    orch = Orchestrator.open(settings)
    try:
        await orch.bundles.import_bundle("bench", data, Operator("bench", "bench"))
        start = time.perf_counter()
        await orch.bundles.load("bench", "bench", "1.0.0")
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(1000):
            await orch.bundles.load("bench", "bench", "1.0.0")
        return first, (time.perf_counter() - start) / 1000
    finally:
        await orch.close()


def main() -> None:
    """Build the bundle, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_source(work / "src", args.mb)
        key = Ed25519PrivateKey.generate()
        trust = {key_id(key.public_key()): key.public_key()}
        limits = BundleLimits()
        build_s = timed(lambda: build_bundle(work / "src", DESCRIPTOR), 1)
        data = sign_archive(build_bundle(work / "src", DESCRIPTOR), key, limits)
        verify_s = timed(lambda: read_bundle(data, limits, trust), args.repeat)  # type: ignore[arg-type]
        (work / "cache").mkdir()
        unpack_s = timed(lambda: unpack_once(data, limits, trust, work / "cache"), args.repeat)
        first_s, cached_s = asyncio.run(store_loads(data, key, work))
    rows = [
        ("build (unsigned)", f"{build_s * 1000:.0f} ms", "-"),
        ("verify (entries, rootHash, signature)", f"{verify_s * 1000:.0f} ms", "-"),
        ("verify + unpack", f"{unpack_s * 1000:.0f} ms", "<= 1000 ms"),
        ("BundleStore.load, first (digest + verify + unpack)", f"{first_s * 1000:.0f} ms",
         "<= 1000 ms"),
        ("BundleStore.load, cached (trust re-check)", f"{cached_s * 1e6:.0f} us", "<= 2 ms"),
    ]  # fmt: skip
    print(f"bundle: {args.mb} MiB of files, archive {len(data) / 2**20:.1f} MiB, "
          f"cpus {os.cpu_count()}, median of {args.repeat}")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'time':>9}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>9}  {target}")
    missed = unpack_s > 1.0 or first_s > 1.0 or cached_s > 0.002
    if missed:
        print("target missed")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
