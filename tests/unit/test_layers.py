"""The layer rules of the architecture hold: the import-linter contracts in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    """Run every contract on the `stellaorch` package found under `source_root`."""
    assert LINT_IMPORTS.exists(), "lint-imports is missing: install the dev extras (.[dev])"
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(source_root)},
        cwd=source_root,
        timeout=120,
        check=False,
    )


def tree_with(tmp_path: Path, lines: dict[str, str]) -> Path:
    """A copy of the source tree with a line appended to some modules (paths under stellaorch/)."""
    root = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "stellaorch",
        root / "stellaorch",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for module, line in lines.items():
        path = root / "stellaorch" / module
        path.write_text(path.read_text() + f"\n{line}\n")
    return root


def test_every_layer_contract_is_kept() -> None:
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_bad_imports_break_the_contracts_they_name(tmp_path: Path) -> None:
    tree = tree_with(
        tmp_path,
        {
            "api/routers/ledger.py": "from stellaorch.store import runs",
            "cli/local.py": "from stellaorch.api import app",
            "engine/runs.py": "from sqlalchemy import select",
            "domain/spec.py": "import stellaorch.engine.views",
            "sdk/errors.py": "import stellaorch.settings",
        },
    )
    out = lint_imports(tree).stdout
    assert "stellaorch.api.routers.ledger -> stellaorch.store.runs" in out  # faces-no-store
    assert "stellaorch.cli.local -> stellaorch.api" in out  # cli-no-api
    assert "stellaorch.engine.runs -> sqlalchemy" in out  # sql-in-store
    assert "stellaorch.domain.spec -> stellaorch.engine.views" in out  # layers, domain
    assert "stellaorch.sdk.errors -> stellaorch.settings" in out  # sdk-standalone
    assert "Contracts: 3 kept, 7 broken." in out  # with acyclic: domain <-> engine
