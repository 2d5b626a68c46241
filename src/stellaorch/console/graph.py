"""The DAG graph of a run page: a layered layout of steps and edges, drawn as inline SVG.

Column = the longest path (in edges) from a root; order within a column = the order the
steps were given in (the run's topological order), so the same input always draws the same
picture. Drawing is bounded: at most MAX_DRAWN_NODES nodes and MAX_DRAWN_EDGES edges (the
page's text list always has every step), labels are cut to LABEL_CHARS and every text or
attribute that came from a tenant is escaped. No style attribute and no script: colours come
from `dag-*` classes of console.css, so the console's CSP holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from stellaorch.domain.graph import kahn_order

# The step statuses of SPEC; any other value is drawn with the `other` class.
STEP_STATUSES = ("pending", "queued", "running", "succeeded", "failed", "cancelled", "skipped")
ICONS = {
    "pending": "◷",
    "queued": "◷",
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "⊘",
    "skipped": "↷",
}
# A 500-step DAG is drawn whole; beyond that the first steps in layer order are drawn.
MAX_DRAWN_NODES = 500
MAX_DRAWN_EDGES = 1500
LABEL_CHARS = 22
TITLE_CHARS = 128
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 44, 50, 12, 8


@dataclass(frozen=True)
class Node:
    """One drawn step: its id, status and place (column = layer, row within the column)."""

    step_id: str
    status: str
    column: int
    row: int


@dataclass(frozen=True)
class Layout:
    """The drawn part of a DAG: nodes, edges between drawn nodes, and what was left out."""

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    total_steps: int
    total_edges: int
    columns: int
    rows: int

    @property
    def truncated(self) -> bool:
        """Whether some steps or edges are not drawn (the text list still has them)."""
        return len(self.nodes) < self.total_steps or len(self.edges) < self.total_edges


def layers(step_ids: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Each step's longest distance from a root; steps on a cycle go in one last column."""
    known = dict.fromkeys(step_ids)
    successors: dict[str, set[str]] = {step_id: set() for step_id in known}
    for source, target in edges:
        if source in known and target in known:
            successors[source].add(target)
    adjacency = {node: sorted(targets) for node, targets in successors.items()}
    layer = dict.fromkeys(kahn_order(adjacency), 0)
    for node in list(layer):  # Kahn order: every predecessor is final before its successors
        for target in adjacency[node]:
            if target in layer:
                layer[target] = max(layer[target], layer[node] + 1)
    last = max(layer.values(), default=-1) + 1
    return {node: layer.get(node, last) for node in known}


def layout(
    step_ids: Sequence[str], edges: Iterable[tuple[str, str]], statuses: Mapping[str, str]
) -> Layout:
    """The bounded layered layout of a DAG with each step's status (absent means pending)."""
    pairs = list(dict.fromkeys((str(s), str(t)) for s, t in edges))
    column_of = layers(step_ids, pairs)
    position = {step_id: index for index, step_id in enumerate(column_of)}
    ranked = sorted(column_of, key=lambda node: (column_of[node], position[node]))
    drawn = ranked[:MAX_DRAWN_NODES]
    rows: dict[int, int] = {}
    nodes = []
    for step_id in drawn:
        column = column_of[step_id]
        rows[column] = rows.get(column, -1) + 1
        status = str(statuses.get(step_id) or "pending")
        nodes.append(Node(step_id, status, column, rows[column]))
    # Edges in drawing order of their ends, so the input's edge order never shows.
    rank = {step_id: index for index, step_id in enumerate(drawn)}
    kept = sorted(
        ((s, t) for s, t in pairs if s in rank and t in rank),
        key=lambda e: (rank[e[0]], rank[e[1]]),
    )
    return Layout(
        nodes=tuple(nodes),
        edges=tuple(kept[:MAX_DRAWN_EDGES]),
        total_steps=len(column_of),
        total_edges=sum(1 for s, t in pairs if s in column_of and t in column_of),
        columns=len(rows),
        rows=max(rows.values(), default=-1) + 1,
    )


def _cut(text: str, keep: int) -> str:
    """Text cut to `keep` characters with an ellipsis."""
    return text if len(text) <= keep else text[: keep - 1] + "…"


def _status_class(status: str) -> str:
    """The CSS class suffix of a status; unknown values never reach an attribute."""
    return status if status in STEP_STATUSES else "other"


def _x(column: int) -> int:
    return PAD + column * (NODE_W + GAP_X)


def _y(row: int) -> int:
    return PAD + row * (NODE_H + GAP_Y)


def _node_svg(node: Node) -> str:
    """One step: a box in its status's colours, the id (cut) and the status with its icon."""
    x, y = _x(node.column), _y(node.row)
    label = escape(_cut(node.step_id, LABEL_CHARS))
    status = escape(_cut(node.status, 16))
    title = escape(f"{_cut(node.step_id, TITLE_CHARS)}: {_cut(node.status, 16)}")
    icon = ICONS.get(node.status, "•")
    return (
        f'<g class="dag-node dag-{_status_class(node.status)}"><title>{title}</title>'
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
        f'<text x="{x + 8}" y="{y + 18}" class="dag-id">{label}</text>'
        f'<text x="{x + 8}" y="{y + 36}" class="dag-status">{icon} {status}</text></g>'
    )


def _edge_svg(source: Node, target: Node) -> str:
    """A curve from the right side of `source` to the left side of `target`."""
    x1, y1 = _x(source.column) + NODE_W, _y(source.row) + NODE_H // 2
    x2, y2 = _x(target.column) - 4, _y(target.row) + NODE_H // 2
    bend = max((x2 - x1) // 2, 20)
    return (
        f'<path class="dag-edge" d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"'
        ' marker-end="url(#dag-arrow)"/>'
    )


def summary(drawn: Layout) -> str:
    """The graph's accessible name: size and how many steps are in each status."""
    counts: dict[str, int] = {}
    for node in drawn.nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    parts = ", ".join(f"{counts[s]} {_cut(s, 16)}" for s in sorted(counts))
    text = f"DAG graph of {drawn.total_steps} steps in {drawn.columns} layers"
    if len(drawn.nodes) < drawn.total_steps:
        text += f" (first {len(drawn.nodes)} steps drawn)"
    elif drawn.truncated:
        text += f" (first {len(drawn.edges)} of {drawn.total_edges} edges drawn)"
    return f"{text}: {parts}" if parts else text


def render_svg(drawn: Layout) -> str:
    """The inline SVG document of a layout (role img, titled; every text escaped)."""
    by_id = {node.step_id: node for node in drawn.nodes}
    width = _x(drawn.columns) - GAP_X + PAD if drawn.columns else 2 * PAD
    height = _y(drawn.rows) - GAP_Y + PAD if drawn.rows else 2 * PAD
    name = escape(summary(drawn))
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag-graph" role="img"'
        f' aria-label="{name}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}"><title>{name}</title>'
        '<defs><marker id="dag-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="8"'
        ' markerHeight="8" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="dag-arrow"/>'
        "</marker></defs>"
    )
    edges = "".join(_edge_svg(by_id[s], by_id[t]) for s, t in drawn.edges)
    nodes = "".join(_node_svg(node) for node in drawn.nodes)
    return f"{head}{edges}{nodes}</svg>"


def run_graph(run: Mapping[str, object], spec: Mapping[str, object]) -> str:
    """The SVG of a run's DAG: the spec's steps and edges, each step in its run status."""
    steps = [s for s in _items(run.get("steps")) if isinstance(s.get("stepId"), str)]
    statuses = {str(s["stepId"]): str(s.get("status") or "pending") for s in steps}
    # The run's own (topological) order first, then steps it has not scheduled yet.
    order = list(statuses)
    order += [str(s["id"]) for s in _items(spec.get("steps")) if str(s.get("id")) not in statuses]
    pairs = [(str(e.get("from")), str(e.get("to"))) for e in _items(spec.get("edges"))]
    return render_svg(layout(order, pairs, statuses))


def _items(value: object) -> list[Mapping[str, object]]:
    """The mappings of a JSON list (anything else is skipped)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
