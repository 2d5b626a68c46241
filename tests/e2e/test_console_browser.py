"""The web console in a real Chromium against a real `stella orch serve`.

One server and one browser for the module: sign in, start a run and watch it complete,
cancel one with a rationale and find it in the audit view, keyboard shortcuts, an axe-core
scan of every view (no serious or critical violation) and a phone-width layout. Each view's
screenshot lands in test-artifacts/console/ (git-ignored) for a reviewer.

Debian's chromium is used as is (never `playwright install`). Without it the module is
skipped with the reason, unless STELLA_TEST_BROWSER_REQUIRED=1 (CI), where that fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token
from stellaorch.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "console"
TENANT = "acme"
BASE = "/api/v1/orchestrator"
VIEWS = ("runs", "dags", "queues", "schedules", "deadletter", "audit")

if not CHROMIUM.exists():
    if os.environ.get("STELLA_TEST_BROWSER_REQUIRED") == "1":
        pytest.fail(f"{CHROMIUM} is missing and STELLA_TEST_BROWSER_REQUIRED=1", pytrace=False)
    reason = f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
    print(f"skipping console browser tests: {reason}")
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@dataclass(frozen=True)
class Server:
    """A running `serve` and an admin token of its tenant."""

    url: str
    token: str

    def api(self, method: str, path: str, body: Any = None, reason: str = "e2e") -> Any:
        """Call the REST API as the tenant's admin."""
        headers = {
            "Authorization": f"Bearer {self.token}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": reason,
        }
        response = httpx.request(
            method, f"{self.url}{BASE}{path}", json=body, headers=headers, timeout=10
        )
        assert response.status_code < 300, response.text
        return response.json()


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait until `check()` is true."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`stella orch serve` on a fresh SQLite store and a free port, with one DAG published."""
    tmp = tmp_path_factory.mktemp("console")
    keys = tmp / "keys"
    generate_key(keys)
    token = issue_token(
        keys,
        subject="e2e-operator",
        tenants=[TENANT],
        scopes=["orchestrator:admin"],
        audience=Settings().audience,
        ttl_seconds=3600,
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLA_")}
    env |= {
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{tmp / 'orchestrator.db'}",
        "STELLA_ORCH_KEYS_DIR": str(keys),
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
        "STELLA_ORCH_REQUIRE_DAG_SIGNATURES": "false",  # the test publishes unsigned
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp / "serve.log"
    argv = [sys.executable, "-m", "stellaorch.cli.main", "orch", "serve", "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, cwd=ROOT)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            return "ready: " in log.read_text(errors="replace")

        poll(ready, 30, "serve is ready")
        started = Server(f"http://127.0.0.1:{port}", token)
        steps = [{"id": "greet", "plugin": "noop"}, {"id": "finish", "plugin": "noop"}]
        dag = {
            "dagId": "hello",
            "version": 1,
            "steps": steps,
            "edges": [{"from": "greet", "to": "finish"}],
        }
        started.api("POST", "/dags", dag)
        yield started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    with sync_playwright() as play:
        launched = play.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A signed-in page at 1280x800 (signing in is the first flow)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.goto(f"{server.url}/console/")
    expect(opened).to_have_url(f"{server.url}/console/signin")
    opened.screenshot(path=str(SHOTS / "signin.png"))
    opened.fill("#token", server.token)
    opened.get_by_role("button", name="Sign in").click()
    expect(opened).to_have_url(f"{server.url}/console/runs")
    yield opened
    context.close()


def test_start_a_run_and_watch_it_complete(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/console/runs")
    page.keyboard.press("s")  # the start-run form opens with the DAG field focused
    expect(page.locator("#start-dag")).to_be_focused()
    page.keyboard.type("hello")
    page.fill("#start-inputs", json.dumps({"day": "2026-12-08"}))
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("h1")).to_contain_text("Run")
    expect(page.locator("h1 .badge")).to_have_text("✓ completed", timeout=15_000)
    expect(page.locator(".steps .step")).to_have_count(2)
    expect(page.locator(".steps .step").first).to_contain_text("greet")
    page.get_by_role("link", name="Verify the ledger chain").click()
    expect(page.get_by_role("status")).to_contain_text("Chain verified")
    page.screenshot(path=str(SHOTS / "run.png"), full_page=True)


def test_a_run_started_after_the_list_opened_appears_without_a_reload(
    page: Page, server: Server
) -> None:
    page.goto(f"{server.url}/console/runs")
    page.evaluate("window.__notReloaded = true")  # a full reload would drop this mark
    run = server.api("POST", "/runs", {"dagId": "hello"})
    expect(page.locator("#runs-live")).to_contain_text(run["runId"], timeout=8_000)
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded"


def test_cancel_with_a_rationale_shows_in_the_audit_view(page: Page, server: Server) -> None:
    server.api("POST", f"/queues/{TENANT}:pause")  # the run waits in the queue to be cancelled
    try:
        run = server.api("POST", "/runs", {"dagId": "hello"})
        page.goto(f"{server.url}/console/runs/{run['runId']}")
        page.fill("#rationale", "started with the wrong day")
        page.get_by_label("I confirm cancelling this run").check()
        page.get_by_role("button", name="Cancel run").click()
        expect(page.locator("h1 .badge")).to_have_text("⊘ cancelled")
    finally:
        server.api("POST", f"/queues/{TENANT}:resume")
    page.goto(f"{server.url}/console/audit")
    row = page.locator("tr", has_text="run.cancel")
    expect(row).to_contain_text("started with the wrong day")
    expect(row).to_contain_text(run["runId"])


def test_keyboard_shortcuts_focus_the_filter_and_open_help(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/console/runs")
    page.keyboard.press("f")
    expect(page.locator("input[data-filter]")).to_be_focused()
    page.keyboard.press("Escape")
    page.locator("body").focus()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()


def test_every_view_passes_axe_and_fits_a_phone(page: Page, server: Server) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    runs = server.api("GET", "/runs")["items"]
    first, last = runs[0]["runId"], runs[-1]["runId"]
    run_pages = [f"/console/runs/{first}", f"/console/runs/{first}/diff/{last}"]
    targets = [*(f"/console/{v}" for v in VIEWS), *run_pages]
    problems: list[str] = []
    for target in targets:
        page.goto(f"{server.url}{target}")
        found = axe.run(page).response["violations"]
        bad = [v for v in found if v.get("impact") in ("serious", "critical")]
        problems += [f"{target}: {v['id']} ({v['impact']}): {v['help']}" for v in bad]
        names = {run_pages[0]: "console-run-detail", run_pages[1]: "console-run-diff"}
        name = names.get(target) or target.strip("/").replace("/", "-")
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert not problems, "\n".join(problems)
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for target in ("/console/runs", "/console/dags", *run_pages):
            page.goto(f"{server.url}{target}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{target} scrolls sideways on a phone ({width}px)"
        page.screenshot(path=str(SHOTS / "runs-phone.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})
