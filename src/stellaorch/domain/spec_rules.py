"""Graph-level rules of a DAG spec: unique ids, sound edges, no cycles, upstream references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.graph import Ancestry, cycle_message, find_cycles
from stellaorch.domain.templating import ReferenceSyntaxError, locate_references


def problem(path: str, message: str) -> dict[str, str]:
    """One entry of SpecInvalid's `details['errors']`."""
    return {"path": path, "message": message}


@dataclass(frozen=True)
class SpecOutline:
    """What the graph rules need, read leniently so they run even when fields are invalid."""

    step_ids: tuple[str | None, ...]
    params: tuple[Any, ...]
    edges: tuple[tuple[Any, Any], ...]

    @classmethod
    def of_document(cls, document: Mapping[str, Any]) -> SpecOutline:
        """The outline of a raw document; anything malformed is left for pydantic to report."""
        steps = _mappings(document.get("steps"))
        edges = _mappings(document.get("edges"))
        return cls(
            step_ids=tuple(_text(step.get("id")) for step in steps),
            params=tuple(step.get("with", step.get("params")) for step in steps),
            edges=tuple(
                (edge.get("from", edge.get("source")), edge.get("to", edge.get("target")))
                for edge in edges
            ),
        )


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    """The items of a list, with non-mapping items replaced by empty mappings (keeps indexes)."""
    items = value if isinstance(value, list) else []
    return [item if isinstance(item, Mapping) else {} for item in items]


def _text(value: Any) -> str | None:
    """`value` if it is a string, else None."""
    return value if isinstance(value, str) else None


def graph_problems(outline: SpecOutline) -> list[dict[str, str]]:
    """Duplicate ids, bad edges, cycles and bad references, in that order."""
    problems = _duplicate_ids(outline.step_ids)
    known = {step_id for step_id in outline.step_ids if step_id is not None}
    successors: dict[str, set[str]] = {step_id: set() for step_id in sorted(known)}
    for i, (source, target) in enumerate(outline.edges):
        problems += _edge_problems(i, source, target, successors)
    graph = {node: sorted(targets) for node, targets in successors.items()}
    problems += [problem("edges", cycle_message(cycle)) for cycle in find_cycles(graph)]
    return problems + _reference_problems(outline, graph)


def _duplicate_ids(step_ids: Iterable[str | None]) -> list[dict[str, str]]:
    """One problem per repeated step id, at the repeat."""
    first_seen: dict[str, int] = {}
    problems = []
    for i, step_id in enumerate(step_ids):
        if step_id is not None and step_id in first_seen:
            where = f"steps[{first_seen[step_id]}]"
            problems.append(problem(f"steps[{i}].id", f"duplicate step id {step_id!r} ({where})"))
        elif step_id is not None:
            first_seen[step_id] = i
    return problems


def _edge_problems(
    i: int, source: Any, target: Any, successors: dict[str, set[str]]
) -> list[dict[str, str]]:
    """Check edge `i`; a sound edge is added to `successors` (duplicates are reported)."""
    if not isinstance(source, str) or not isinstance(target, str):
        return []  # a missing or non-string end is a field error pydantic already reported
    unknown = [
        problem(f"edges[{i}].{end}", f"unknown step {step_id!r}")
        for end, step_id in (("from", source), ("to", target))
        if step_id not in successors
    ]
    if unknown:
        return unknown
    if source == target:
        return [problem(f"edges[{i}]", f"self-edge on step {source!r}")]
    if target in successors[source]:
        return [problem(f"edges[{i}]", f"duplicate edge {source} -> {target}")]
    successors[source].add(target)
    return []


def _reference_problems(
    outline: SpecOutline, graph: Mapping[str, list[str]]
) -> list[dict[str, str]]:
    """Malformed references, and step references that are unknown, self or not upstream."""
    ancestry = Ancestry(graph)
    problems = []
    for i, (step_id, params) in enumerate(zip(outline.step_ids, outline.params, strict=True)):
        base = f"steps[{i}].with"
        try:
            located = locate_references(params)
        except ReferenceSyntaxError as error:
            problems.append(problem(join_path(base, error.details.get("path", "")), error.message))
            continue
        for where, reference in located:
            message = _step_reference_problem(step_id, reference.step_id, ancestry, graph)
            if message is not None:
                problems.append(problem(join_path(base, where), f"{reference.text}: {message}"))
    return problems


def _step_reference_problem(
    step_id: str | None, target: str | None, ancestry: Ancestry, graph: Mapping[str, Any]
) -> str | None:
    """Why referencing `target`'s outputs from `step_id` is wrong, or None if it is fine."""
    if target is None or step_id is None:
        return None  # not a step reference, or the referencing step's id is itself invalid
    if target not in graph:
        return f"unknown step {target!r}"
    if target == step_id:
        return "a step cannot reference its own outputs"
    # Inside a cycle ancestry is undefined; the cycle itself is already reported.
    if ancestry.knows(step_id) and not ancestry.is_upstream(target, step_id):
        return f"step {target!r} is not upstream of {step_id!r}; add an edge path from it"
    return None


def join_path(base: str, where: str) -> str:
    """Append a sub-path (`url`, `[0]`) to a path."""
    if not where:
        return base
    return base + where if where.startswith("[") else f"{base}.{where}"
