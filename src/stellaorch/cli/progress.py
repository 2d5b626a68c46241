"""A live "steps finished / total" display for one run, fed by committed ledger entries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.status import TERMINAL_STEP
from stellaorch.engine.events import EventBus


def _bar() -> Progress:
    """Spinner, description, bar, `finished/total` and elapsed time, drawn on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


class RunProgress:
    """Draws on stderr; listens to the bus from before the run exists so nothing is missed."""

    def __init__(self, bus: EventBus) -> None:
        self._progress = _bar()
        # Entries of every run are kept until `track` says which run is ours: the entries of
        # the creating transaction (steps skipped at once) arrive before its run id is known.
        self._finished: defaultdict[str, set[str]] = defaultdict(set)
        self._run_id: str | None = None
        self._task: TaskID | None = None
        self._label = ""
        self._unsubscribe = bus.subscribe(self._on_entry)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unsubscribe()
        self._progress.stop()

    def track(self, run_id: str, dag_id: str, total: int) -> None:
        """Show the run `run_id` of `dag_id`, which has `total` steps."""
        self._run_id, self._label = run_id, dag_id
        done = len(self._finished[run_id])
        self._task = self._progress.add_task(dag_id, total=total, completed=done)

    def _on_entry(self, entry: LedgerEntry) -> None:
        if entry.step_id is not None and entry.status in TERMINAL_STEP:
            self._finished[entry.run_id].add(entry.step_id)
        if entry.run_id != self._run_id or self._task is None:
            return
        self._progress.update(
            self._task,
            completed=len(self._finished[entry.run_id]),
            description=f"{self._label}: {_describe(entry)}",
        )


def _describe(entry: LedgerEntry) -> str:
    """`fetch-kev retrying (attempt 2)` / `run completed`: what just happened, briefly."""
    event = entry.entry_type.partition(".")[2]
    subject = entry.step_id or "run"
    attempt = f" (attempt {entry.attempt})" if entry.attempt and entry.attempt > 1 else ""
    return f"{subject} {event}{attempt}"


class _Shown:
    """A Rich display drawn while the `with` block runs."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()


class RemoteRunProgress(_Shown):
    """The same display for a run watched over the API: fed by run views and stream events."""

    def __init__(self, dag_id: str) -> None:
        self._progress = _bar()
        self._label = dag_id
        self._steps: dict[str, str] = {}
        self._task = self._progress.add_task(dag_id, total=None)

    def show(self, view: Mapping[str, Any]) -> None:
        """Take every step's status from a run view (GET /runs/{id})."""
        for step in view.get("steps") or []:
            self._steps[str(step["stepId"])] = str(step["status"])
        self._draw(f"run {view.get('status')}")

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Apply one stream event of the run."""
        step_id, status = event.get("stepId"), str(event.get("status"))
        if step_id is not None:
            self._steps[str(step_id)] = status
        self._draw(f"{step_id or 'run'} {status}")

    def _draw(self, latest: str) -> None:
        done = sum(1 for status in self._steps.values() if status in TERMINAL_STEP)
        self._progress.update(
            self._task,
            total=len(self._steps) or None,
            completed=done,
            description=f"{self._label}: {latest}",
        )


class StageProgress(_Shown):
    """A spinner with what a long command is doing now, and bytes moved when there are any."""

    def __init__(self, label: str) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._label = label
        self._task = self._progress.add_task(label, total=None)

    def stage(self, what: str) -> None:
        """Say what is being done now (`checking ledger.ndjson`)."""
        self._progress.update(self._task, description=f"{self._label}: {what}")

    def moved(self, size: int, total: int | None = None) -> None:
        """Count `size` more bytes (of `total`, when known)."""
        self._progress.update(self._task, advance=size, total=total)
