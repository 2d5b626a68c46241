"""`stella orch dag …` on local files: check a spec the way publishing would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stellaorch.cli.output import print_json, say
from stellaorch.domain.spec import compile_dag, load_spec_file


def validate_file(path: Path) -> dict[str, Any]:
    """Parse and compile a spec file; SpecInvalid lists every problem with its path."""
    compiled = compile_dag(load_spec_file(path))
    return {
        "file": str(path),
        "dagId": compiled.spec.dag_id,
        "version": compiled.spec.version,
        "specHash": compiled.spec_hash,
        "steps": len(compiled.order),
        "order": list(compiled.order),
    }


async def validate(path: Path, *, as_json: bool) -> None:
    """Print what a valid spec would publish as: id, version, hash and execution order."""
    summary = validate_file(path)
    if as_json:
        print_json(summary)
        return
    say(f"valid: {summary['file']}")
    say(f"dagId:    {summary['dagId']}")
    say(f"version:  {summary['version']}")
    say(f"specHash: {summary['specHash']}")
    say(f"order:    {' -> '.join(summary['order'])}")
