"""Pure graph algorithms over step ids: deterministic topological order, cycles and ancestry."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence

from stellaorch.domain.errors import SpecInvalid

# Successor lists keyed by every node, each sorted and free of duplicates.
Adjacency = Mapping[str, Sequence[str]]


def adjacency(step_ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Sorted, de-duplicated successor lists; an edge to or from an unknown id is SpecInvalid."""
    successors: dict[str, set[str]] = {step_id: set() for step_id in step_ids}
    for source, target in edges:
        for end in (source, target):
            if end not in successors:
                raise SpecInvalid(
                    f"edge {source} -> {target} references unknown step {end!r}",
                    details={"errors": [{"path": "edges", "message": f"unknown step {end!r}"}]},
                )
        successors[source].add(target)
    return {node: sorted(targets) for node, targets in sorted(successors.items())}


def reverse(successors: Adjacency) -> dict[str, list[str]]:
    """Sorted predecessor lists for the same nodes."""
    predecessors: dict[str, list[str]] = {node: [] for node in successors}
    for node in sorted(successors):
        for target in successors[node]:
            predecessors[target].append(node)
    return predecessors


def kahn_order(successors: Adjacency) -> list[str]:
    """Topological order, smallest ready id first; nodes on or behind a cycle are left out."""
    indegree = dict.fromkeys(successors, 0)
    for targets in successors.values():
        for target in targets:
            indegree[target] += 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for target in successors[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, target)
    return order


def topological_order(step_ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Every distinct id in dependency order with lexical tie-break; SpecInvalid on a cycle."""
    successors = adjacency(step_ids, edges)
    order = kahn_order(successors)
    if len(order) < len(successors):
        cycles = find_cycles(successors)
        raise SpecInvalid(
            f"cycle: {' -> '.join(cycles[0])}",
            details={"errors": [{"path": "edges", "message": cycle_message(c)} for c in cycles]},
        )
    return order


def cycle_message(cycle: Sequence[str]) -> str:
    """The wording every cycle error shares, e.g. `cycle: a -> b -> a`."""
    return "cycle: " + " -> ".join(cycle)


def find_cycles(successors: Adjacency) -> list[list[str]]:
    """One shortest cycle per strongly connected knot, starting and ending at its smallest id."""
    cycles = []
    for component in strongly_connected(successors):
        start = min(component)
        if len(component) > 1 or start in successors[start]:
            cycles.append(_shortest_cycle(successors, start, set(component)))
    return sorted(cycles)


def _shortest_cycle(successors: Adjacency, start: str, members: set[str]) -> list[str]:
    """Breadth-first search back to `start`; sorted successors make the answer deterministic."""
    parent: dict[str, str] = {}
    frontier = deque([start])
    while frontier:
        node = frontier.popleft()
        for target in successors[node]:
            if target == start:
                return _unwind(parent, node, start)
            if target in members and target not in parent:
                parent[target] = node
                frontier.append(target)
    raise AssertionError(f"{start!r} is not on a cycle")  # callers only pass knotted nodes


def _unwind(parent: Mapping[str, str], last: str, start: str) -> list[str]:
    """Rebuild start -> ... -> last -> start from the BFS parent links."""
    path = [last]
    while path[-1] != start:
        path.append(parent[path[-1]])
    path.reverse()
    return [*path, start]


def strongly_connected(successors: Adjacency) -> list[list[str]]:
    """Tarjan's components, iteratively so 10,000-step chains do not hit the recursion limit."""
    index: dict[str, int] = {}
    components: list[list[str]] = []
    for root in successors:
        if root not in index:
            components.extend(_tarjan_from(root, successors, index))
    return components


def _tarjan_from(root: str, successors: Adjacency, index: dict[str, int]) -> list[list[str]]:
    """One depth-first tree of Tarjan's algorithm, with an explicit work stack."""
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(successors[node])))

    visit(root)
    while work:
        node, targets = work[-1]
        for target in targets:
            if target not in index:
                visit(target)
                break
            if target in on_stack:
                low[node] = min(low[node], index[target])
        else:
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                components.append(_pop_component(node, stack, on_stack))
    return components


def _pop_component(node: str, stack: list[str], on_stack: set[str]) -> list[str]:
    """Pop the finished component whose root is `node` off Tarjan's stack."""
    component: list[str] = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
            return component


class Ancestry:
    """Answers 'is a upstream of b' with one big-integer bitset of ancestors per node."""

    def __init__(self, successors: Adjacency) -> None:
        # Only the acyclic part (Kahn's output) gets exact ancestor sets; the rest is unknown.
        order = kahn_order(successors)
        self._bit = {node: 1 << i for i, node in enumerate(order)}
        self._mask = dict.fromkeys(order, 0)
        for node in order:
            inherited = self._mask[node] | self._bit[node]
            for target in successors[node]:
                if target in self._mask:
                    self._mask[target] |= inherited

    def knows(self, node: str) -> bool:
        """Whether `node` is outside every cycle, so its ancestry is exact."""
        return node in self._mask

    def is_upstream(self, ancestor: str, node: str) -> bool:
        """Whether a path of edges leads from `ancestor` to `node`."""
        return bool(self._mask.get(node, 0) & self._bit.get(ancestor, 0))
