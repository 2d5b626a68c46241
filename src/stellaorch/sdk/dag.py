"""Author a DAG in Python: a typed builder whose document is the one a YAML spec parses to.

The builder only assembles the document; it does not validate it (the SDK imports nothing
of the server side). `stella orch dag render|publish --from module:attr` checks it exactly
as it checks a YAML file, so a Python DAG hashes, signs, versions and diffs like YAML.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel

from stellaorch.sdk.worker import TaskDef

__all__ = ["Backoff", "Dag", "Retry", "Step"]

Params = Mapping[str, Any] | BaseModel
After = Iterable["Step | str"]


@dataclass(frozen=True)
class Backoff:
    """Wait between attempts: initialMs * factor**n, capped at maxMs, with jitter (0..1)."""

    initial_ms: int | None = None
    factor: float | None = None
    max_ms: int | None = None
    jitter: float | None = None

    def document(self) -> dict[str, Any]:
        """The `backoff` mapping, with only the fields that were set."""
        return _set_fields(
            initialMs=self.initial_ms, factor=self.factor, maxMs=self.max_ms, jitter=self.jitter
        )


@dataclass(frozen=True)
class Retry:
    """How often a failing step is attempted, and the backoff in between."""

    max_attempts: int | None = None
    backoff: Backoff | None = None

    def document(self) -> dict[str, Any]:
        """The `retry` mapping, with only the fields that were set."""
        backoff = None if self.backoff is None else self.backoff.document()
        return _set_fields(maxAttempts=self.max_attempts, backoff=backoff)


@dataclass(frozen=True, eq=False)
class Step:
    """One declared step; `a >> b` (or `[a, b] >> c`) makes b run after a succeeded."""

    dag: Dag = field(repr=False, compare=False)
    id: str
    entry: Mapping[str, Any] = field(repr=False)

    @overload
    def __rshift__(self, other: Step) -> Step: ...

    @overload
    def __rshift__(self, other: list[Step]) -> list[Step]: ...

    def __rshift__(self, other: Step | list[Step]) -> Step | list[Step]:
        """`self >> other`: other (each of them, for a list) depends on self; returns other."""
        targets = [other] if isinstance(other, Step) else other
        for target in targets:
            self.dag.edge(self, target)
        return other

    def __rrshift__(self, other: Iterable[Step]) -> Step:
        """`[a, b] >> self`: self depends on each of them; returns self."""
        for source in other:
            self.dag.edge(source, self)
        return self


class Dag:
    """A DAG version under construction: steps in declaration order, edges deduplicated.

    ```python
    dag = Dag("resize", version=1)
    fetch = dag.step("fetch", plugin="http", with_={"url": "https://example.org/a.png"})
    dag.task("resize", resize_image, with_=ResizeParams(width=640), after=[fetch])
    ```
    """

    def __init__(
        self, dag_id: str, *, version: int | str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.dag_id = dag_id
        self.version = version
        self.metadata = dict(metadata) if metadata is not None else None
        self._steps: list[Step] = []
        self._edges: list[tuple[str, str]] = []

    def step(
        self,
        step_id: str,
        *,
        plugin: str,
        with_: Params | None = None,
        after: After = (),
        retry: Retry | None = None,
        timeout_seconds: float | None = None,
        concurrency: int | None = None,
        disabled: bool | None = None,
        network: Iterable[str] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> Step:
        """Declare a step running `plugin` with parameters `with_`, after the steps `after`."""
        values = {
            "id": step_id,
            "plugin": plugin,
            "with": None if with_ is None else _params(with_),
            "retry": None if retry is None else retry.document(),
            "timeoutSeconds": timeout_seconds,
            "concurrency": concurrency,
            "disabled": disabled,
            "network": None if network is None else list(network),
            "resources": None if resources is None else dict(resources),
        }
        # Keys in the README's order, so the rendered YAML reads like a hand-written spec.
        entry = _set_fields(**values)
        declared = Step(self, step_id, entry)
        self._steps.append(declared)
        for source in after:
            self.edge(source, declared)
        return declared

    def task(
        self,
        step_id: str,
        task: TaskDef | str,
        *,
        with_: Params | None = None,
        queue: str | None = None,
        after: After = (),
        retry: Retry | None = None,
        timeout_seconds: float | None = None,
        concurrency: int | None = None,
        disabled: bool | None = None,
    ) -> Step:
        """Declare a `queue` step handed to the SDK workers serving `task` (on `queue`)."""
        name = task.name if isinstance(task, TaskDef) else task
        queue_params = _set_fields(task=name, queue=queue)
        # The task name is the step's: a `task` key among the params cannot redirect it.
        params = {**(_params(with_) if with_ is not None else {}), **queue_params}
        return self.step(
            step_id,
            plugin="queue",
            with_=params,
            after=after,
            retry=retry,
            timeout_seconds=timeout_seconds,
            concurrency=concurrency,
            disabled=disabled,
        )

    def edge(self, source: Step | str, target: Step | str) -> None:
        """`target` runs only after `source` succeeded (a repeated edge is kept once)."""
        pair = (_step_id(source), _step_id(target))
        if pair not in self._edges:
            self._edges.append(pair)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps in declaration order."""
        return tuple(self._steps)

    def document(self) -> dict[str, Any]:
        """The spec document (the dict a YAML spec of this DAG parses to)."""
        document: dict[str, Any] = {
            "dagId": self.dag_id,
            "version": self.version,
            # Copies: a caller editing the document must not change the DAG's later renders.
            "steps": [copy.deepcopy(dict(step.entry)) for step in self._steps],
        }
        if self._edges:
            document["edges"] = [{"from": a, "to": b} for a, b in self._edges]
        if self.metadata is not None:
            document["metadata"] = _sorted(self.metadata)
        return document


def _set_fields(**values: Any) -> dict[str, Any]:
    """The keyword arguments that are not None, in order."""
    return {key: value for key, value in values.items() if value is not None}


def _params(value: Params) -> dict[str, Any]:
    """A step's `with`: a mapping, or a pydantic model (a task's typed params) as JSON."""
    params = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return {key: _sorted(params[key]) for key in sorted(params, key=str)}


def _sorted(value: Any) -> Any:
    """Mappings with sorted keys, all the way down: the render does not depend on dict order."""
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def _step_id(step: Step | str) -> str:
    """The id of a step or step reference."""
    return step.id if isinstance(step, Step) else step
