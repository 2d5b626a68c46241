"""Which steps a resumed replay keeps from the run it replays: the "unchanged" rule.

A step of the target version is **unchanged** from the original run's version when it has
the same step id, the same `plugin` reference (name and pinned version, as written) and the
same `with` parameters (equal as canonical JSON), and the same set of predecessors. A step is
**kept** (reused, not executed again) when it succeeded in the original run, is unchanged,
is not disabled in the target version, and every predecessor of it is kept too: a step whose
upstream runs again may see other `${steps.…}` values, so it runs again as well. The run's
inputs are the original's, so what a kept step was given is what it would be given now.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.spec import CompiledDag, StepSpec


@dataclass(frozen=True)
class ReusedStep:
    """A succeeded step of an earlier run that a new run keeps instead of executing it."""

    step_id: str
    outputs_json: str
    outputs_hash: str
    from_run: str


def step_unchanged(before: StepSpec, after: StepSpec) -> bool:
    """Same plugin reference and the same `with` parameters (canonical JSON)."""
    return before.plugin == after.plugin and canonical_json(before.params) == canonical_json(
        after.params
    )


def kept_steps(original: CompiledDag, target: CompiledDag, succeeded: Collection[str]) -> list[str]:
    """The steps of `target` a resumed replay keeps, in the target's order (see the module)."""
    kept: dict[str, None] = {}  # ordered, with set lookups
    for step_id in target.order:
        after, before = target.steps[step_id], original.steps.get(step_id)
        preds = target.predecessors[step_id]
        if (
            before is None
            or step_id not in succeeded
            or after.disabled
            or not step_unchanged(before, after)
            or set(preds) != set(original.predecessors[step_id])
            or any(p not in kept for p in preds)
        ):
            continue
        kept[step_id] = None
    return list(kept)
