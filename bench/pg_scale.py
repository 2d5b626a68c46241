"""PostgreSQL scale benchmark: real `stella orch worker` processes, no-op steps, loopback.

Usage:
    .venv/bin/python bench/pg_scale.py [--quick] [--fast-fsync] [--concurrency N]
                                       [--workers 1,2,4]

Scenarios, each on a fresh database, with the workers started as separate processes and
idle before the clock starts (runs are created from this process, which runs no worker):

1. a chain of 500 no-op steps, 2 workers, after one warm-up run of it: wall time per step and
   the median per-step cycle (ledger: one step.running to the next), target <= 5 ms each;
2. 2,000 runs of 10 independent no-op steps, 2 workers: steps/s from the first create until
   every run ended (the last runs.ended_us), target >= 2,500;
3. 300 single-step runs created one at a time with a pause between (workers idle each time):
   first step.running - runs.created_us, p50 and p99, target p99 <= 30 ms;
4. scenario 2 with 1, 2 and 4 workers (its 2-worker figure is scenario 2), each with the CPU
   seconds of the PostgreSQL server processes, the workers and this process over the window,
   the machine's busy share (/proc/stat), and pg_stat_activity sampled 5 times a second
   (lock waiters, active backends, idle-in-transaction backends, top wait events).

Without STELLA_TEST_PG_URL the script re-runs itself under `scripts/pg.sh run` (a throwaway
cluster on loopback), durable (fsync and synchronous_commit on, as a real deployment) unless
--fast-fsync; the header shows the server's actual settings. Prints a results table, a
bottleneck table and a conclusion; exits 1 if a target is missed. A benchmark, not a test.
STELLA_BENCH_PROFILE_DIR=DIR runs every worker under cProfile (one .prof file each in DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from run import (
    PG_URL_ENV,
    TENANT,
    Row,
    _chain_spec,
    _count_completed,
    _fan_spec,
    _fresh_store,
    _print,
    _step_gaps_ms,
    _table,
    _under_throwaway_cluster,
)
from sqlalchemy import func, select, text

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.settings import Settings
from stellaorch.store.notify import libpq_url
from stellaorch.store.schema import ledger_entries, runs

PROFILE_ENV = "STELLA_BENCH_PROFILE_DIR"
WORKER_MODULE = "stellaorch.cli.main"  # what `python -m` runs as `stella`
# Room for two claim batches (claim_batch 256): the claim loop and the completions each lease
# a full batch per transaction. Measured with 2 workers, no-op steps: 3,558 steps/s at the
# product default of 64, 4,364 at 512 (see docs/decisions/0002-postgresql.md).
DEFAULT_CONCURRENCY = 512
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
READY_TIMEOUT_S = 60.0
SETTLE_S = 1.0  # after "ready:": the LISTEN thread connects and the first (empty) claim ends
SAMPLE_PERIOD_S = 0.2
CHAIN_TARGET_MS = 5.0
THROUGHPUT_TARGET = 2500.0
LATENCY_P99_TARGET_MS = 30.0


@dataclass(frozen=True)
class Sizes:
    """Scenario sizes: full or --quick."""

    chain: int
    runs: int
    steps_per_run: int
    latency_runs: int
    pause_s: float


FULL = Sizes(chain=500, runs=2000, steps_per_run=10, latency_runs=300, pause_s=0.05)
QUICK = Sizes(chain=100, runs=200, steps_per_run=10, latency_runs=60, pause_s=0.05)


# -- worker processes -----------------------------------------------------------------------
@contextlib.contextmanager
def _workers(
    url: str, count: int, concurrency: int, logdir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` ready `stella orch worker` processes on `url`; stopped and reaped afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLA_")}
    env["STELLA_ORCH_DATABASE_URL"] = url
    profile_dir = os.environ.get(PROFILE_ENV)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[tuple[Path, Path]] = []
    try:
        for i in range(count):
            cmd = [sys.executable]
            if profile_dir:
                prof = Path(profile_dir) / f"worker-{count}w-{i}-{time.time_ns()}.prof"
                cmd += ["-m", "cProfile", "-o", str(prof)]
            cmd += ["-m", WORKER_MODULE, "orch", "worker"]
            cmd += ["--concurrency", str(concurrency)]
            out, err = logdir / f"worker-{i}.out", logdir / f"worker-{i}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                procs.append(subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr))
            logs.append((out, err))
        for proc, (out, err) in zip(procs, logs, strict=True):
            _wait_ready(proc, out, err)
        yield procs
    finally:
        _stop(procs)


def _wait_ready(proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
    """Wait for the worker's "ready:" line; raise with its stderr if it exits or hangs."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if "ready:" in out.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = err.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"worker {proc.pid} not ready (exit {proc.poll()}):\n{tail}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker (a graceful stop), kill one that lingers, and reap them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- CPU accounting from /proc ----------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, so field n is at index n - 3; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_s(pid: int, *, reaped: bool = False) -> float:
    """utime + stime of a process (all threads), plus its reaped children's if `reaped`."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if reaped else 0)
    return ticks / CLK_TCK


def _postgres_cpu_s(postmaster: int) -> float:
    """CPU of the postmaster, its live children and (via cutime) the children that ended."""
    total = _cpu_s(postmaster, reaped=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f is not None and int(f[1]) == postmaster:
                total += (int(f[11]) + int(f[12])) / CLK_TCK
    return total


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU counters at one instant."""

    at: float
    postgres: float
    workers: float
    bench: float
    busy: int
    total: int

    @classmethod
    def take(cls, postmaster: int, workers: list[int]) -> CpuSnapshot:
        """Read every counter now."""
        busy, total = _machine_jiffies()
        return cls(
            at=time.monotonic(),
            postgres=_postgres_cpu_s(postmaster),
            workers=sum(_cpu_s(p) for p in workers),
            bench=_cpu_s(os.getpid()),
            busy=busy,
            total=total,
        )


# -- pg_stat_activity sampling ----------------------------------------------------------------
_ACTIVITY = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
"""


@dataclass
class WaitSampler:
    """Samples the store's backends a few times a second on a thread of its own."""

    url: str
    period_s: float = SAMPLE_PERIOD_S
    lock_waits: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    idle_in_tx: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> WaitSampler:
        """Start sampling."""
        self._thread = threading.Thread(target=self._run, name="bench-waits", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        """Sample until stopped."""
        with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(_ACTIVITY).fetchall()
                self.lock_waits.append(sum(1 for _, t, _ in rows if t == "Lock"))
                self.active.append(sum(1 for s, _, _ in rows if s == "active"))
                self.idle_in_tx.append(sum(1 for s, _, _ in rows if s == "idle in transaction"))
                self.events.update(f"{t}:{e}" if t else "CPU" for s, t, e in rows if s == "active")
                self._stop.wait(self.period_s)

    def top_events(self, n: int = 2) -> str:
        """The most frequent states of active backends, as average backends per sample."""
        samples = max(1, len(self.active))
        return ", ".join(f"{e} {c / samples:.1f}" for e, c in self.events.most_common(n)) or "-"


# -- helpers on the store ---------------------------------------------------------------------
def _now_us() -> int:
    """Wall-clock microseconds, the clock the ledger and the runs table use."""
    return time.time_ns() // 1000


def _open(url: str) -> Orchestrator:
    """The bench's in-process engine on `url` (migrated); it never starts a worker."""
    return Orchestrator.open(Settings(database_url=url))


async def _scalar(orch: Orchestrator, query: Any) -> Any:
    """One value from the store."""
    return await orch.env.db.transact(lambda conn: conn.execute(query).scalar())


async def _postmaster_pid(orch: Orchestrator) -> int:
    """The PostgreSQL postmaster: the parent of our backend."""
    backend = int(await _scalar(orch, text("SELECT pg_backend_pid()")))
    fields = _stat_fields(backend)
    if fields is None:
        raise RuntimeError("the PostgreSQL server is not on this machine: no CPU accounting")
    return int(fields[1])


async def _server_info(orch: Orchestrator) -> str:
    """The server's version and durability settings, for the header."""
    version = await _scalar(orch, text("SHOW server_version"))
    fsync = await _scalar(orch, text("SHOW fsync"))
    sync = await _scalar(orch, text("SHOW synchronous_commit"))
    kind = "durable" if fsync == "on" and sync == "on" else "NOT durable"
    return f"PostgreSQL {version}; fsync={fsync}, synchronous_commit={sync} ({kind})"


# -- scenarios --------------------------------------------------------------------------------
async def bench_chain(url: str, n: int, concurrency: int, logdir: Path) -> list[Row]:
    """Scenario 1: one chain of n no-op steps on 2 worker processes."""
    orch = _open(url)
    try:
        await orch.catalog.publish(TENANT, parse_spec(_chain_spec(n)))
        with _workers(url, 2, concurrency, logdir):
            await asyncio.sleep(SETTLE_S)
            # One warm-up run first: connections, prepared statements and the DAG cache of
            # fresh processes are not what a long-running deployment pays per step.
            warm_up = await orch.runs.create(RunRequest(TENANT, "chain", {"warmUp": True}))
            await orch.runs.wait(TENANT, warm_up.run.run_id, poll_seconds=0.02)
            start_us = _now_us()
            created = await orch.runs.create(RunRequest(TENANT, "chain", {}))
            run_id = created.run.run_id
            status = await orch.runs.wait(TENANT, run_id, poll_seconds=0.02)
        ended_us = await _scalar(orch, select(runs.c.ended_us).where(runs.c.run_id == run_id))
        gaps = await _step_gaps_ms(orch, run_id)
    finally:
        await orch.close()
    per_step = (ended_us - start_us) / n / 1000
    gap = statistics.median(gaps)
    name, limit = f"1: chain of {n}, 2 workers", f"<= {CHAIN_TARGET_MS:g} ms"
    done = status == "completed"
    return [
        Row(
            name, "wall time per step", per_step, "ms", limit, done and per_step <= CHAIN_TARGET_MS
        ),
        Row(name, "median per-step cycle", gap, "ms", limit, done and gap <= CHAIN_TARGET_MS),
    ]


async def bench_latency(url: str, sizes: Sizes, concurrency: int, logdir: Path) -> list[Row]:
    """Scenario 3: run created -> first step running, with idle workers each time."""
    orch = _open(url)
    try:
        await orch.catalog.publish(TENANT, parse_spec(_fan_spec(1)))
        with _workers(url, 2, concurrency, logdir):
            await asyncio.sleep(SETTLE_S)
            for i in range(sizes.latency_runs):
                await orch.runs.create(RunRequest(TENANT, "fan1", {"i": i}))
                await asyncio.sleep(sizes.pause_s)
            done = await _count_completed(orch, timeout_s=60)
        first_running = (
            select(runs.c.created_us, func.min(ledger_entries.c.ts_us))
            .join(ledger_entries, ledger_entries.c.run_id == runs.c.run_id)
            .where(ledger_entries.c.entry_type == "step.running")
            .group_by(runs.c.run_id, runs.c.created_us)
        )
        pairs = await orch.env.db.transact(lambda c: c.execute(first_running).all())
    finally:
        await orch.close()
    latencies = sorted((running - created) / 1000 for created, running in pairs)
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    name = f"3: {sizes.latency_runs} runs, idle workers"
    ok = done == sizes.latency_runs == len(latencies)
    return [
        Row(name, "create->running p50", p50, "ms", "(info)", ok),
        Row(
            name,
            "create->running p99",
            p99,
            "ms",
            f"<= {LATENCY_P99_TARGET_MS:g} ms",
            ok and p99 <= LATENCY_P99_TARGET_MS,
        ),
        Row(name, "create->running max", latencies[-1], "ms", "(info)", ok),
    ]


@dataclass(frozen=True)
class Throughput:
    """One scenario-2 measurement and what the machine did meanwhile."""

    workers: int
    concurrency: int
    steps: int
    completed: bool
    rate: float
    window_s: float
    postgres_s: float
    workers_s: float
    bench_s: float
    busy: float  # share of all cores' time
    lock_avg: float
    lock_max: int
    active_avg: float
    idle_in_tx_avg: float
    top_waits: str

    def share(self, cpu_s: float) -> float:
        """CPU seconds as a share of the machine's capacity over the window."""
        return cpu_s / (self.window_s * CORES)

    @property
    def ours_s(self) -> float:
        """CPU seconds of postgres, the workers and the bench together."""
        return self.postgres_s + self.workers_s + self.bench_s

    @property
    def other(self) -> float:
        """Share of the machine busy with processes outside this benchmark (noise)."""
        return max(0.0, self.busy - self.share(self.ours_s))

    def per_step_us(self, cpu_s: float) -> float:
        """CPU microseconds per step."""
        return cpu_s / self.steps * 1e6

    @property
    def ceiling(self) -> float:
        """Steps/s if this CPU cost per step had every core to itself."""
        return CORES * self.steps / self.ours_s if self.ours_s else float("inf")


async def bench_throughput(
    url: str, workers: int, sizes: Sizes, concurrency: int, logdir: Path
) -> Throughput:
    """Scenario 2/4: many runs of independent steps on `workers` idle worker processes."""
    orch = _open(url)
    try:
        dag = f"fan{sizes.steps_per_run}"
        await orch.catalog.publish(TENANT, parse_spec(_fan_spec(sizes.steps_per_run)))
        postmaster = await _postmaster_pid(orch)
        with _workers(url, workers, concurrency, logdir) as procs:
            pids = [p.pid for p in procs]
            await asyncio.sleep(SETTLE_S)
            before = CpuSnapshot.take(postmaster, pids)
            with WaitSampler(url) as waits:
                start_us = _now_us()
                await asyncio.gather(
                    *(
                        orch.runs.create(RunRequest(TENANT, dag, {"i": i}))
                        for i in range(sizes.runs)
                    )
                )
                done = await _count_completed(orch, timeout_s=600)
            after = CpuSnapshot.take(postmaster, pids)
        last_us = await _scalar(orch, select(func.max(runs.c.ended_us)))
    finally:
        await orch.close()
    steps = sizes.runs * sizes.steps_per_run
    return Throughput(
        workers=workers,
        concurrency=concurrency,
        steps=steps,
        completed=done == sizes.runs,
        rate=steps / ((last_us - start_us) / 1e6),
        window_s=after.at - before.at,
        postgres_s=after.postgres - before.postgres,
        workers_s=after.workers - before.workers,
        bench_s=after.bench - before.bench,
        busy=(after.busy - before.busy) / max(1, after.total - before.total),
        lock_avg=statistics.fmean(waits.lock_waits or [0]),
        lock_max=max(waits.lock_waits or [0]),
        active_avg=statistics.fmean(waits.active or [0]),
        idle_in_tx_avg=statistics.fmean(waits.idle_in_tx or [0]),
        top_waits=waits.top_events(),
    )


# -- reporting --------------------------------------------------------------------------------
def _throughput_rows(results: list[Throughput], sizes: Sizes) -> list[Row]:
    """Scenario 2 (the 2-worker figure, with its target) and scenario 4 (every count)."""
    steps = sizes.runs * sizes.steps_per_run
    rows = []
    for t in results:
        if t.workers == 2:
            rows.append(
                Row(
                    f"2: {steps} steps / {sizes.runs} runs",
                    "throughput, 2 workers",
                    t.rate,
                    "steps/s",
                    f">= {THROUGHPUT_TARGET:g}",
                    t.completed and t.rate >= THROUGHPUT_TARGET,
                )
            )
    for t in results:
        plural = "s" if t.workers > 1 else ""
        rows.append(
            Row(
                "4: scaling",
                f"throughput, {t.workers} worker{plural}",
                t.rate,
                "steps/s",
                "(info)",
                t.completed,
            )
        )
    return rows


def _print_bottleneck(results: list[Throughput]) -> None:
    """The second table: where the CPU went and what the backends waited on."""

    def pct(x: float) -> str:
        return f"{x * 100:.0f}%"

    header = [
        "workers",
        "steps/s",
        "window s",
        "postgres CPU s",
        "workers CPU s",
        "bench CPU s",
        "CPU us/step pg+wk+bench",
        "machine busy",
        "other procs",
        "lock waits avg/max",
        "active avg",
        "idle in tx avg",
        "top waits (active backends)",
    ]
    cells = [
        [
            str(t.workers),
            f"{t.rate:.0f}",
            f"{t.window_s:.2f}",
            f"{t.postgres_s:.2f} ({pct(t.share(t.postgres_s))})",
            f"{t.workers_s:.2f} ({pct(t.share(t.workers_s))})",
            f"{t.bench_s:.2f} ({pct(t.share(t.bench_s))})",
            f"{t.per_step_us(t.postgres_s):.0f}+{t.per_step_us(t.workers_s):.0f}"
            f"+{t.per_step_us(t.bench_s):.0f}",
            pct(t.busy),
            pct(t.other),
            f"{t.lock_avg:.2f}/{t.lock_max}",
            f"{t.active_avg:.1f}",
            f"{t.idle_in_tx_avg:.1f}",
            t.top_waits,
        ]
        for t in results
    ]
    _table(header, cells, right=set(range(1, 12)))
    print(
        f"(CPU s: over the window; %: share of {CORES} cores x window; other procs: busy share "
        "not used by postgres, workers or bench, i.e. noise from other processes)"
    )


def _conclusion(results: list[Throughput]) -> str:
    """One line derived from the numbers: scaling, and what limited the fastest setup."""
    by = {t.workers: t for t in results}
    counts = sorted(by)
    steps = [
        f"{b} workers {by[b].rate / by[a].rate:.2f}x of {a}" for a, b in itertools.pairwise(counts)
    ]
    top = max(results, key=lambda t: t.rate)
    shares = {
        "postgres": top.share(top.postgres_s),
        "workers": top.share(top.workers_s),
        "bench": top.share(top.bench_s),
    }
    biggest = max(shares, key=lambda k: shares[k])
    used = ", ".join(f"{k} {v * 100:.0f}%" for k, v in shares.items())
    ceiling = (
        f"CPU cost {top.ours_s / top.steps * 1e6:.0f} us/step: ceiling ~{top.ceiling:.0f} steps/s"
    )
    waiting = (
        f"{top.lock_avg:.2f} backends waiting on row locks, "
        f"{top.idle_in_tx_avg:.1f} idle in transaction (waiting on Python)"
    )
    if top.busy >= 0.9:
        verdict = (
            f"CPU-bound, cores saturated ({top.busy * 100:.0f}% busy: {used}, other processes "
            f"{top.other * 100:.0f}%); biggest user: {biggest}; {ceiling} on {CORES} cores"
        )
    elif top.busy >= 0.75:
        verdict = (
            f"mostly CPU-bound ({top.busy * 100:.0f}% busy: {used}, other processes "
            f"{top.other * 100:.0f}%; biggest user: {biggest}); the rest is waiting: {waiting}; "
            f"{ceiling} on {CORES} cores"
        )
    elif top.lock_avg >= 1:
        verdict = f"lock-bound ({waiting}; {used})"
    else:
        verdict = (
            f"neither CPU ({top.busy * 100:.0f}% busy: {used}) nor locks saturated: "
            f"latency/round-trip bound ({waiting}; top waits: {top.top_waits}); {ceiling}"
        )
    return "conclusion: " + "; ".join([*steps, f"fastest at {top.workers} workers: {verdict}"])


async def main(args: argparse.Namespace) -> int:
    """Run every scenario, print both tables and the conclusion; 1 if a target is missed."""
    sizes = QUICK if args.quick else FULL
    counts = sorted(set(args.workers) | {2})
    rows: list[Row] = []
    results: list[Throughput] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with _fresh_store("postgresql", work) as url:
            orch = _open(url)
            try:
                info = await _server_info(orch)
            finally:
                await orch.close()
        load = os.getloadavg()[0]
        print(f"== {info}; {CORES} cores; load average at start {load:.2f}")
        print(
            f"== worker processes: `stella orch worker --concurrency {args.concurrency}`; "
            f"sizes: {'--quick' if args.quick else 'full'}"
        )
        with _fresh_store("postgresql", work) as url:
            rows += await bench_chain(url, sizes.chain, args.concurrency, work)
        for n in counts:
            with _fresh_store("postgresql", work) as url:
                results.append(await bench_throughput(url, n, sizes, args.concurrency, work))
        with _fresh_store("postgresql", work) as url:
            rows += await bench_latency(url, sizes, args.concurrency, work)
    rows += _throughput_rows(results, sizes)
    rows.sort(key=lambda r: r.scenario.split(":")[0])  # stable: scenarios in numeric order
    print()
    _print(rows)
    print()
    _print_bottleneck(results)
    print(_conclusion(results))
    return 0 if all(r.ok for r in rows) else 1


def _parse() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument(
        "--fast-fsync",
        action="store_true",
        help="throwaway cluster with fsync and synchronous_commit off (default: durable)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"--concurrency of each worker process (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4],
        help="worker process counts for scenario 4 (2 is always measured: scenario 2)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _parse()
    if not os.environ.get(PG_URL_ENV):
        os.environ["STELLA_PG_DURABLE"] = "0" if arguments.fast_fsync else "1"
        _under_throwaway_cluster()
    sys.exit(asyncio.run(main(arguments)))
