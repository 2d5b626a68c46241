"""`stella orch dag publish --from module:attr` against a served API: a Python DAG publishes
as the same version its YAML form does."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("served_api")
from served_api import TENANT, Served, served  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-worker"


async def stella(api: Served, keys: Path, *args: str, tenant: str = TENANT) -> tuple[int, str]:
    """`stella orch ARGS` in a subprocess run from the example's directory: (exit, output)."""
    env = {
        **os.environ,
        "STELLA_API_URL": api.url,
        "STELLA_TOKEN": api.token(),
        "STELLA_TENANT": tenant,
        "STELLA_ORCH_KEYS_DIR": str(keys),  # empty: nothing to sign with
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [sys.executable, "-m", "stellaorch.cli.main", "orch", *args, "-o", "json"]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=EXAMPLE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, (out or err).decode()


async def test_publish_from_python_is_the_version_the_yaml_publishes(tmp_path: Path) -> None:
    keys = tmp_path / "client-keys"
    keys.mkdir()
    publish = ("dag", "publish", "--reason", "python dag")
    async with served(tmp_path, require_dag_signatures=False) as api:
        code, out = await stella(api, keys, *publish, "--from", "pipeline:dag")
        assert code == 0, out
        from_python = json.loads(out)
        code, out = await stella(api, keys, *publish, "--file", "dags/resize.yaml")
        assert code == 0, out  # the same content again: the same version, no conflict
        assert json.loads(out)["specHash"] == from_python["specHash"]
        assert (from_python["dagId"], from_python["version"]) == ("resize", "1")
        # Another tenant's name on the same token is refused, not published there.
        code, out = await stella(api, keys, *publish, "--from", "pipeline:dag", tenant="other")
        assert code == 3, out
