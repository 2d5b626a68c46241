"""The alert loop: decide which rules fire, then post their webhooks, off the hot path.

It runs beside the scheduler (`serve`, `scheduler`) and holds a leader lease of its own, so
one process delivers each alert. One pass: (1) in one transaction, evaluate every rule and
record each new event as a pending delivery — a delivery is unique per (rule, event), so a
repeat records nothing; (2) claim the due deliveries (held for longer than a pass takes, so
a process that took the lease over meanwhile does not post them too; a crash retries them
after the hold) and post them concurrently, each bounded by a timeout, signed with its rule's
secret; (3) record each attempt: delivered, retried later with a
doubling backoff, or failed after the last attempt. Runs, workers and requests never wait
for it: they only write rows the loop reads later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from stellaorch.domain.alerts import (
    MAX_PAYLOAD_BYTES,
    SIGNATURE_HEADER,
    AlertKind,
    DeliveryStatus,
    retry_at_us,
    signature,
)
from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import StellaError, StoreUnavailable
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.providers import format_utc, worker_identity
from stellaorch.domain.secrets import SecretNotFound
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.workers import WorkerRegistry
from stellaorch.store import Connection, controls, leases
from stellaorch.store import alerts as store
from stellaorch.store.alerts import AlertRuleRow, DeliveryRow, FailedRun

log = logging.getLogger("stellaorch.alerts")

LEASE_NAME = "alerts"
US = 1_000_000
RULES_PER_PASS = 10_000
FAILED_RUNS_PER_RULE = 100  # per pass; the cursor keeps the rest for the next one
DELIVERIES_PER_PASS = 50
CONCURRENT_POSTS = 8
# Claimed deliveries are held this many attempt timeouts: longer than any pass posts them.
PASS_HOLD_FACTOR = DELIVERIES_PER_PASS // CONCURRENT_POSTS + 2
MAX_ERROR_CHARS = 300
MAX_MESSAGE_CHARS = 1_000


@dataclass(frozen=True)
class Attempt:
    """How one POST ended: the receiver's status, or why there was none."""

    delivery: DeliveryRow
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Pass:
    """What one pass did."""

    leader: bool
    recorded: int = 0
    attempts: list[Attempt] | None = None


class AlertLoop:
    """Evaluates rules and delivers webhooks while it holds the alerts lease."""

    def __init__(
        self,
        env: EngineEnv,
        *,
        holder: str | None = None,
        lease_ttl_seconds: float = 10.0,
        poll_seconds: float | None = None,
    ) -> None:
        self.env = env
        self.holder = holder or f"{worker_identity()}:alerts:{env.ids.lease_id()[:8]}"
        self.ttl_us = int(lease_ttl_seconds * US)
        self.poll_seconds = poll_seconds or env.settings.alert_poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def stop(self) -> None:
        """Ask the loop to end after the pass in progress."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Pass after pass until `stop()`; a failing pass is logged, never fatal."""
        unsubscribe = self.env.bus.subscribe(self._on_entry)
        try:
            while not self._stopping.is_set():
                await self._guarded_step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                self._wake.clear()
        finally:
            unsubscribe()
            await self.close()

    async def close(self) -> None:
        """Release the lease and the HTTP client."""
        with contextlib.suppress(StellaError):
            await self.env.db.transact(lambda c: leases.release(c, LEASE_NAME, self.holder))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _on_entry(self, entry: LedgerEntry) -> None:
        """A run failed in this process: look now rather than at the next poll."""
        if entry.step_id is None and entry.status == "failed":
            self._wake.set()

    async def _guarded_step(self) -> None:
        try:
            await self.step()
        except StoreUnavailable as exc:
            log.warning("alerts.store_unavailable", extra={"error": str(exc)})
        except Exception:  # a bug must not stop every alert: log it, try again later
            log.exception("alerts.pass_failed", extra={"holder": self.holder})

    # -- one pass -------------------------------------------------------------------------
    async def step(self) -> Pass:
        """Take or renew the lease; if leading, record new events and post what is due."""
        now = self.env.clock.now_us()
        if not await self.env.db.transact(
            lambda c: leases.acquire(c, LEASE_NAME, self.holder, now, self.ttl_us)
        ):
            return Pass(leader=False)
        recorded = await self.env.db.transact(lambda c: self._evaluate(c, now))
        hold = now + int(self.env.settings.alert_timeout_seconds * US) * PASS_HOLD_FACTOR
        due = await self.env.db.transact(
            lambda c: store.claim_due_deliveries(c, now, DELIVERIES_PER_PASS, hold)
        )
        attempts = await self._post_all(due)
        if attempts:
            await self.env.db.transact(lambda c: self._settle(c, attempts))
        return Pass(True, recorded, attempts)

    # -- (1) evaluate ---------------------------------------------------------------------
    def _evaluate(self, conn: Connection, now: int) -> int:
        """Record a pending delivery for every new event of every rule."""
        recorded = 0
        for rule in store.all_rules_for_evaluation(conn, RULES_PER_PASS):
            rows = list(self._events(conn, rule, now))
            recorded += store.add_deliveries(conn, [_delivery(rule, k, p, now) for k, p in rows])
        return recorded

    def _events(
        self, conn: Connection, rule: AlertRuleRow, now: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """(event key, payload) of each thing the rule fires for now."""
        if rule.kind == AlertKind.RUN_FAILED.value:
            found = store.failed_runs_after(
                conn, rule.tenant, rule.dag_id, rule.cursor_us, FAILED_RUNS_PER_RULE
            )
            if found:
                store.move_cursor(conn, rule.tenant, rule.rule_id, found[-1].ended_us)
            return [(f"run:{f.run_id}", _failed_payload(f)) for f in found]
        window_us = rule.window_seconds * US
        if rule.kind == AlertKind.DEADLETTER_GROWTH.value:
            value = store.failed_steps_since(conn, rule.tenant, now - window_us)
            figure = {"deadLetterCount": value, "windowSeconds": rule.window_seconds}
        else:
            ttl_us = WorkerRegistry(self.env).ttl_us  # only the depth is used here
            value = controls.queue_figures(conn, rule.tenant, now, ttl_us).depth
            figure = {"queueDepth": value}
        if rule.threshold is None or value <= rule.threshold:
            return []
        # At most one alert per window while the figure stays over the threshold.
        key = f"window:{rule.created_us}:{now // window_us}"
        return [(key, {**figure, "threshold": rule.threshold})]

    # -- (2) post -------------------------------------------------------------------------
    async def _post_all(self, due: list[DeliveryRow]) -> list[Attempt]:
        if not due:
            return []
        gate = asyncio.Semaphore(CONCURRENT_POSTS)

        async def one(delivery: DeliveryRow) -> Attempt:
            async with gate:
                return await self._post(delivery)

        return list(await asyncio.gather(*(one(d) for d in due)))

    async def _post(self, delivery: DeliveryRow) -> Attempt:
        """One POST of the delivery's body; never raises."""
        body = delivery.payload_json.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stella-orchestrator-alerts",
            "X-Stella-Alert-Delivery": str(delivery.id),
            "X-Stella-Alert-Kind": delivery.kind,
        }
        try:
            if delivery.secret_name is not None:
                headers[SIGNATURE_HEADER] = signature(body, await self._key(delivery))
            timeout = self.env.settings.alert_timeout_seconds
            async with asyncio.timeout(timeout):
                # Streamed and never read: a receiver cannot make us hold a large answer.
                async with self.client().stream(
                    "POST", delivery.url, content=body, headers=headers
                ) as response:
                    return Attempt(delivery, response.status_code, None)
        except StellaError as exc:
            return Attempt(delivery, None, f"{exc.code}: {exc.message}"[:MAX_ERROR_CHARS])
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return Attempt(delivery, None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])

    async def _key(self, delivery: DeliveryRow) -> str:
        """The current value of the rule's signing secret (SecretNotFound when gone)."""
        name = delivery.secret_name
        assert name is not None
        try:
            resolved = await self.env.db.read(
                lambda c: self.env.vault.resolve(c, delivery.tenant, [name])
            )
        except SecretNotFound as exc:
            raise SecretNotFound(f"the signing secret {name} no longer exists") from exc
        return resolved.values[name]

    def client(self) -> httpx.AsyncClient:
        """The loop's HTTP client: no proxies from the environment, no redirects followed."""
        if self._client is None:
            timeout = self.env.settings.alert_timeout_seconds
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
            )
        return self._client

    # -- (3) record -----------------------------------------------------------------------
    def _settle(self, conn: Connection, attempts: list[Attempt]) -> None:
        """Record every attempt: delivered, to be retried, or failed for good."""
        now = self.env.clock.now_us()
        limit = self.env.settings.alert_max_attempts
        initial_us = int(self.env.settings.alert_retry_initial_seconds * US)
        for attempt in attempts:
            delivery, tries = attempt.delivery, attempt.delivery.attempts + 1
            if attempt.ok:
                status = DeliveryStatus.DELIVERED
            else:
                status = DeliveryStatus.FAILED if tries >= limit else DeliveryStatus.PENDING
            error = attempt.error or (None if attempt.ok else f"HTTP {attempt.status}")
            store.settle_delivery(
                conn,
                delivery.id,
                status=status.value,
                attempts=tries,
                response_status=attempt.status,
                last_error=error,
                next_attempt_us=retry_at_us(now, tries, initial_us),
                updated_us=now,
            )
            _log_attempt(delivery, status, tries, error)


def _log_attempt(
    delivery: DeliveryRow, status: DeliveryStatus, tries: int, error: str | None
) -> None:
    """One event per attempt (no URL: it may carry a token the receiver expects)."""
    fields = {
        "tenant": delivery.tenant,
        "rule_id": delivery.rule_id,
        "delivery": delivery.id,
        "attempts": tries,
    }
    if status is DeliveryStatus.DELIVERED:
        log.info("alert.delivered", extra=fields)
    elif status is DeliveryStatus.FAILED:
        log.warning("alert.failed", extra=fields)
    else:
        log.info("alert.retry", extra=fields)
    if error:
        log.debug("alert.error", extra={"delivery": delivery.id, "error": error})


def _failed_payload(run: FailedRun) -> dict[str, Any]:
    """What a run.failed alert says about the run (its error bounded)."""
    error: Any = None
    if run.error_json:
        try:
            error = json.loads(run.error_json)
        except ValueError:
            error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error = {**error, "message": error["message"][:MAX_MESSAGE_CHARS]}
    return {
        "runId": run.run_id,
        "dagId": run.dag_id,
        "dagVersion": run.dag_version,
        "traceId": run.trace_id,
        "endedUtc": format_utc(run.ended_us),
        "error": error if isinstance(error, dict) else None,
    }


def _delivery(rule: AlertRuleRow, key: str, detail: dict[str, Any], now: int) -> dict[str, Any]:
    """A pending delivery row of one event, with its body fixed (and signed) as it fires."""
    payload = {
        "kind": rule.kind,
        "tenant": rule.tenant,
        "ruleId": rule.rule_id,
        "eventKey": key,
        "firedUtc": format_utc(now),
        **detail,
    }
    body = canonical_json(payload)
    if len(body.encode()) > MAX_PAYLOAD_BYTES:  # only an error can be long: drop it
        body = canonical_json({**payload, "error": None})
    return {
        "tenant": rule.tenant,
        "rule_id": rule.rule_id,
        "event_key": key,
        "kind": rule.kind,
        "url": rule.url,
        "secret_name": rule.secret_name,
        "payload_json": body,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_us": now,
        "response_status": None,
        "last_error": None,
        "created_us": now,
        "updated_us": now,
    }
