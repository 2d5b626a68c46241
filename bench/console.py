"""The web console: a tenant's run list with many runs, and the detail of a 500-step DAG's run.

Usage: .venv/bin/python bench/console.py [--quick] [--runs 100000] [--steps 500]
    [--requests 50] [--no-browser]
Prints a table; never run as a test (tests/e2e/test_bench_sdk_console.py runs it at its
smallest). One orchestrator on a fresh SQLite file, in this process:
- seeding: a few runs are created and finished through the engine; the rest of the tenant's
  runs are copies of their `runs` rows written straight into the file in one transaction
  (fresh ids and tokens, creation times spread over a day), which is all the list reads.
- run list: GET /console/runs (the first page, as a signed-in session) through the ASGI app,
  `--requests` times after a warm-up; server time is the in-process request time (no network).
- run detail: a run of a `--steps`-step DAG (a binary tree of noop steps), finished by the
  engine; GET /console/runs/{id} the same way.
- Chromium (when /usr/bin/chromium and Playwright are there, never `playwright install`): a
  `stella orch serve` on the same file; time to interactive of the detail page is the
  navigation's `domInteractive`, and `loadEventEnd` is shown beside it (median of 5 loads).
Targets (issue 16, item 6): list page <= 150 ms server time, detail interactive <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import TENANT, Row, _free_port, _print  # type: ignore[import-not-found]

from stellaorch.api.app import create_app
from stellaorch.console.site import mount as mount_console
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token
from stellaorch.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
LIST_TARGET_MS = 150.0
INTERACTIVE_TARGET_MS = 1000.0
BASE_RUNS = 50  # runs made by the engine; the rest copy their rows


def _tree_spec(dag_id: str, n: int) -> dict[str, Any]:
    ids = [f"s{i:04d}" for i in range(n)]
    edges = [{"from": ids[(i - 1) // 2], "to": ids[i]} for i in range(1, n)]
    return {
        "dagId": dag_id,
        "version": 1,
        "steps": [{"id": s, "plugin": "noop"} for s in ids],
        "edges": edges,
    }


async def _finish(orch: Orchestrator, run_ids: list[str]) -> None:
    """Run the worker until every run has ended."""
    orch.start_worker()
    try:
        for run_id in run_ids:
            await asyncio.wait_for(orch.runs.wait(TENANT, run_id, poll_seconds=0.05), 600)
    finally:
        await orch.stop_worker()


def _copy_runs(db: Path, total: int) -> None:
    """Fill the tenant up to `total` runs by copying the engine-made rows with fresh ids."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        models = conn.execute(f"SELECT {', '.join(cols)} FROM runs WHERE tenant = ?", (TENANT,))
        rows = models.fetchall()
        have = len(rows)
        at = {c: i for i, c in enumerate(cols)}
        now_us = time.time_ns() // 1000
        fresh = []
        for k in range(total - have):
            row = list(rows[k % have])
            row[at["run_id"]] = str(uuid.uuid4())
            row[at["run_token"]] = f"seed-{k}"
            created = now_us - 86_400_000_000 + k * (86_400_000_000 // max(1, total))
            row[at["created_us"]] = created
            for col in ("started_us", "ended_us"):
                if row[at[col]] is not None:
                    row[at[col]] = created + 1000
            fresh.append(row)
        marks = ", ".join("?" for _ in cols)
        conn.executemany(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({marks})", fresh)
        conn.commit()


def _stats(name: str, ms: list[float], target: float | None) -> list[Row]:
    ordered = sorted(ms)
    p50, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    if target is None:
        return [
            Row(name, "server p50", p50, "ms", "(info)", True),
            Row(name, "server p95", p95, "ms", "(info)", True),
        ]
    return [
        Row(name, "server p50", p50, "ms", f"<= {target:g}", p50 <= target),
        Row(name, "server p95", p95, "ms", f"<= {target:g}", p95 <= target),
    ]


async def _timed_gets(client: httpx.AsyncClient, path: str, n: int, shows: str) -> list[float]:
    """Server times of `n` GETs of `path`, after a warm-up that checks the page shows `shows`."""
    for _ in range(3):  # warm-up: templates, caches
        page = await client.get(path)
        if page.status_code != 200 or shows not in page.text:
            raise RuntimeError(f"GET {path}: {page.status_code}, {shows!r} not on the page")
    out = []
    for _ in range(n):
        sent = time.perf_counter()
        response = await client.get(path)
        out.append((time.perf_counter() - sent) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code}")
    return out


def _token(keys: Path) -> str:
    return issue_token(
        keys,
        subject="bench",
        tenants=[TENANT],
        audience="stella-orchestrator",
        scopes=["orchestrator:admin"],
        ttl_seconds=3600,
    )


async def _in_process(workdir: Path, args: argparse.Namespace) -> tuple[list[Row], str, float]:
    """Seed, then time both pages through the ASGI app; (rows, detail run id, seed seconds)."""
    db = workdir / "bench.db"
    settings = Settings(
        database_url=f"sqlite:///{db}", keys_dir=workdir / "keys", bundles_dir=workdir / "bundles"
    )
    orch = Orchestrator.open(settings)
    try:
        seeding = time.perf_counter()
        await orch.catalog.publish(TENANT, parse_spec(_tree_spec("one", 1)))
        await orch.catalog.publish(TENANT, parse_spec(_tree_spec("tree", args.steps)))
        base = [
            await orch.runs.create(RunRequest(TENANT, "one", {"i": i}))
            for i in range(min(BASE_RUNS, args.runs - 1))
        ]
        tree = await orch.runs.create(RunRequest(TENANT, "tree", {}))
        ids = [c.run.run_id for c in [*base, tree]]
        await _finish(orch, ids)
        _copy_runs(db, args.runs)
        seed_s = time.perf_counter() - seeding
        last_step = _tree_spec("tree", args.steps)["steps"][-1]["id"]
        app = mount_console(create_app(orch))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            signed = await client.post(
                "/console/signin", data={"token": _token(settings.keys_dir), "tenant": TENANT}
            )
            if signed.status_code != 303:
                raise RuntimeError(f"sign-in: {signed.status_code}")
            listed = await _timed_gets(client, "/console/runs", args.requests, "/console/runs/")
            detail = await _timed_gets(
                client, f"/console/runs/{tree.run.run_id}", args.requests, last_step
            )
        rows = _stats(f"run list, {args.runs} runs", listed, LIST_TARGET_MS)
        rows += _stats(f"detail, {args.steps} steps", detail, None)
        return rows, tree.run.run_id, seed_s
    finally:
        await orch.close()


def _serve(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`stella orch serve` on the seeded file; its URL once it answers."""
    port = _free_port()
    env = {
        **os.environ,
        "STELLA_ORCH_KEYS_DIR": str(workdir / "keys"),
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{workdir}/bench.db",
    }
    cmd = [
        sys.executable,
        "-m",
        "stellaorch.cli.main",
        "orch",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/console/signin", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not start")


async def _browser(workdir: Path, run_id: str, steps: int) -> list[Row]:
    """Time to interactive of the detail page in Chromium (median of 5 loads)."""
    from playwright.async_api import async_playwright

    proc, url = _serve(workdir)
    try:
        async with async_playwright() as play:
            browser = await play.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(f"{url}/console/signin")
            await page.fill("#token", _token(workdir / "keys"))
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{url}/console/runs")
            interactive, loaded = [], []
            for _ in range(6):  # the first load warms the browser's and the server's caches
                await page.goto(f"{url}/console/runs/{run_id}", wait_until="load")
                timing = await page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.domInteractive, n.loadEventEnd]; })()"
                )
                interactive.append(float(timing[0]))
                loaded.append(float(timing[1]))
            await browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tti = sorted(interactive[1:])[2]
    load = sorted(loaded[1:])[2]
    name = f"detail, {steps} steps"
    return [
        Row(
            f"{name}, chromium",
            "time to interactive",
            tti,
            "ms",
            f"<= {INTERACTIVE_TARGET_MS:g}",
            tti <= INTERACTIVE_TARGET_MS,
        ),
        Row(f"{name}, chromium", "load event end", load, "ms", "(info)", True),
    ]


def _browser_available() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.exists()


async def main(args: argparse.Namespace) -> int:
    """Seed a fresh store, time the pages, print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generate_key(workdir / "keys")
        rows, run_id, seed_s = await _in_process(workdir, args)
        rows.append(Row(f"seed {args.runs} runs", "wall time", seed_s, "s", "(info)", True))
        if args.no_browser or not _browser_available():
            print("Chromium or Playwright missing (or --no-browser): no browser figure")
        else:
            rows += await _browser(workdir, run_id, args.steps)
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 20 requests")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--no-browser", action="store_true")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.runs, parsed.requests = min(parsed.runs, 10_000), min(parsed.requests, 20)
    if parsed.runs < 2 or parsed.steps < 1 or parsed.requests < 1:
        parser.error("--runs must be >= 2, --steps and --requests >= 1")
    sys.exit(asyncio.run(main(parsed)))
