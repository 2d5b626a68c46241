"""Service commands: `serve` (API, worker, scheduler in one), `api`, `worker`, `scheduler`.

The command publishes DAGs, starts sample runs and prints; the parts themselves (worker,
scheduler, API server) are wired by `stellaorch.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.cli.credentials import prepare_auth, prepare_dag_signing
from stellaorch.cli.errors import UsageInvalid, error_lines
from stellaorch.cli.inputs import read_inputs
from stellaorch.cli.output import say, warn
from stellaorch.domain.errors import StellaError
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.catalog import Published
from stellaorch.engine.health import display_url
from stellaorch.engine.requests import RunRequest
from stellaorch.observability.tracing import configure_tracing
from stellaorch.service.embedded import opened
from stellaorch.service.parts import Role as Role
from stellaorch.service.parts import ServiceParts, with_role_defaults
from stellaorch.settings import Settings

log = logging.getLogger("stellaorch.serve")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ServeOptions:
    """What a service process was asked to do besides serving."""

    dags_dir: Path | None = None
    run_samples: bool = False
    role: Role = Role.SERVE

    def check(self) -> None:
        """Refuse combinations that cannot work."""
        if self.run_samples and self.dags_dir is None:
            raise UsageInvalid("--run-samples needs --dags DIR to know which DAGs to run")


@dataclass(frozen=True)
class SampleRun:
    """One sample run to start: a loaded DAG version and its inputs."""

    dag_id: str
    version: str
    inputs: dict[str, Any]


async def serve(settings: Settings, options: ServeOptions) -> None:
    """Publish the DAGs, run the role's parts until SIGINT/SIGTERM, then stop gracefully."""
    options.check()
    role, tenant = options.role, settings.default_tenant
    settings = with_role_defaults(settings.for_role(role.value), role)
    if role.serves_api or settings.metrics_port is not None:
        prepare_auth(settings)
    signer = prepare_dag_signing(settings) if role is Role.SERVE else None
    if settings.trace_enabled or settings.otlp_endpoint:
        trace_file = settings.trace_file if settings.trace_enabled else None
        max_bytes = settings.trace_file_max_bytes
        service = f"stella-orch-{role.value}"
        provider = configure_tracing(service, trace_file, max_bytes, settings.otlp_endpoint)
        atexit_flush = provider.shutdown
    else:
        atexit_flush = _nothing
    # Signals are caught from the start, so a stop during startup still shuts down cleanly.
    with _stop_on_signals() as stop:
        async with opened(settings) as orchestrator:
            loaded = await _publish(orchestrator, options.dags_dir, tenant, signer)
            samples = _samples(options.dags_dir, loaded) if options.run_samples else []
            await _run_parts(orchestrator, options, len(loaded), samples, stop)
    log.info("orchestrator.stopped", extra={"tenant": tenant, "role": role.value})
    atexit_flush()  # the spans still batched reach the trace file before the process ends
    say("stopped")


async def _run_parts(
    orchestrator: Orchestrator,
    options: ServeOptions,
    dag_count: int,
    samples: list[SampleRun],
    stop: asyncio.Event,
) -> None:
    """Start the role's parts, wait for a stop or a crash, stop them: API first, worker last."""
    settings = orchestrator.env.settings
    parts = ServiceParts(orchestrator, options.role)
    background: set[asyncio.Task[None]] = set()
    try:
        api_url = await parts.start_api()
        _announce_ready(settings, options.role, dag_count, api_url)
        for sample in samples:
            background |= await _start_sample(orchestrator, settings.default_tenant, sample)
        await parts.watch(stop.wait())
    finally:
        await _cancel_all(background)
        await parts.stop()


def _announce_ready(settings: Settings, role: Role, dag_count: int, api_url: str | None) -> None:
    """The line operators and scripts wait for."""
    tenant, where = settings.default_tenant, display_url(settings.database_url)
    if role is Role.SERVE:
        what = f"{dag_count} DAG(s) for tenant {tenant} on {where}; API on {api_url}"
    elif role is Role.API:
        what = f"API on {api_url} for {where} (no worker here: run `stella orch worker`)"
    elif role is Role.WORKER:
        only = settings.worker_tenants
        served = f", tenants {','.join(only)}" if only else ""
        what = f"worker (concurrency {settings.worker_concurrency}{served}) on {where}"
    else:
        what = f"scheduler on {where} (fires triggers while it holds the leader lease)"
    if api_url is not None and not role.serves_api:
        what += f"; metrics on {api_url}/metrics"
    if api_url is not None and role.serves_api:
        say(f"console: {api_url}/console/ (sign in with a token or `stella orch console url`)")
    say(f"ready: {what}; Ctrl-C stops")
    log.info("orchestrator.ready", extra={"tenant": tenant, "role": role.value, "api": api_url})


async def _publish(
    orchestrator: Orchestrator,
    directory: Path | None,
    tenant: str,
    signer: Ed25519PrivateKey | None,
) -> list[Published]:
    """Publish (signed with `signer`) every spec file of `directory`; one line per version."""
    if directory is None:
        return []
    loaded = await orchestrator.load_dags(directory, tenant, signer)
    for item in loaded:
        row = item.version
        state = "published" if item.created else "already published"
        say(f"dag {row.dag_id} version {row.version}: {state} ({row.spec_hash})")
        log.info(
            "dag.loaded",
            extra={"tenant": tenant, "dag_id": row.dag_id, "version": row.version},
        )
    return loaded


def _samples(directory: Path | None, loaded: list[Published]) -> list[SampleRun]:
    """One run per loaded version, with inputs from `<dir>/inputs/<dagId>.json` if present."""
    assert directory is not None  # the command refuses --run-samples without --dags
    runs = []
    for item in loaded:
        path = directory / "inputs" / f"{item.version.dag_id}.json"
        inputs = read_inputs(path) if path.is_file() else {}
        runs.append(SampleRun(item.version.dag_id, item.version.version, inputs))
    return runs


async def _start_sample(
    orchestrator: Orchestrator, tenant: str, sample: SampleRun
) -> set[asyncio.Task[None]]:
    """Start a sample run and a task that prints its outcome; a refusal is only reported."""
    request = RunRequest(tenant, sample.dag_id, sample.inputs, version=sample.version)
    try:
        created = await orchestrator.runs.create(request)
    except StellaError as exc:
        # A sample is a demonstration: one that cannot start must not take the service down.
        warn(f"sample run of {sample.dag_id} not started: {error_lines(exc)[0]}")
        return set()
    run_id = created.run.run_id
    say(f"run {run_id} of {sample.dag_id} version {sample.version}: started")
    return {asyncio.create_task(_report_outcome(orchestrator, tenant, run_id))}


async def _report_outcome(orchestrator: Orchestrator, tenant: str, run_id: str) -> None:
    """Print the run's final status once it ends."""
    try:
        await orchestrator.runs.wait(tenant, run_id)
        view = await orchestrator.runs.get(tenant, run_id)
    except StellaError as exc:
        warn(f"run {run_id}: cannot follow: {error_lines(exc)[0]}")
        return
    error = view.get("error")
    cause = f" (step {error.get('stepId')}: {error.get('code')})" if error else ""
    duration = view.get("durationMs")
    say(f"run {run_id} of {view['dagId']}: {view['status']} in {duration} ms{cause}")


def _nothing() -> None:
    """Nothing to flush."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    try:
        yield stop
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("orchestrator.stopping", extra={"signal": sig.name})
    stop.set()


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until they are gone."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
