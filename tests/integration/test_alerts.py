"""Alerts: rules per tenant fire signed webhook deliveries, retried with backoff, recorded in a
delivery log, and never across tenants. The receiver is a local server on an ephemeral port."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stellaorch.engine.alert_loop import AlertLoop

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
FAILING = spec(
    "etl", [{"id": "load", "plugin": "fail", "with": {"code": "LOADER_SCHEMA_MISMATCH"}}]
)
NOOP = spec("etl", [{"id": "load", "plugin": "noop"}])
KEY = "hook-signing-key-3b1f"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records each request, answers with `status`."""

    status: int = 200
    delay: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies received, in order."""
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on a fresh ephemeral port, shut down after the test."""
    yield from _serve(Receiver())


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    """A second receiver (another tenant's webhook)."""
    yield from _serve(Receiver())


def _serve(state: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append((dict(self.headers.items()), body))
            time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stella"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def put_alert(api: Api, rule_id: str, tenant: str = A, **body: Any) -> Any:
    """PUT /alerts/{rule_id} as the tenant's admin."""
    return await api.client.put(f"{BASE}/alerts/{rule_id}", json=body, headers=api.headers(tenant))


async def put_secret(api: Api, tenant: str = A, name: str = "hook-key") -> None:
    """Store the signing secret."""
    response = await api.client.put(
        f"{BASE}/secrets/{name}", json={"value": KEY}, headers=api.headers(tenant)
    )
    assert response.status_code == 200, response.text


async def failed_run(api: Api, tenant: str = A) -> str:
    """Start a run of the failing DAG and wait until it failed; its run id."""
    run = await api.start(tenant, "etl")
    assert await api.wait(tenant, run["runId"]) == "failed"
    return str(run["runId"])


async def deliveries(api: Api, tenant: str = A) -> list[dict[str, Any]]:
    """The tenant's delivery log, newest first."""
    return list((await api.get_json(tenant, "/alert-deliveries"))["items"])


async def rule_then_failed_run(api: Api, receiver: Receiver) -> AlertLoop:
    """An unsigned run.failed rule to `receiver`, one failed run, and a loop (not started)."""
    await api.publish(A, FAILING)
    await put_alert(api, "etl-failed", kind="run.failed", url=receiver.url)
    api.start_worker()
    await failed_run(api)
    return AlertLoop(api.orchestrator.env)


async def settle(loop: AlertLoop, api: Api, passes: int = 40) -> list[dict[str, Any]]:
    """Let the loop run passes until nothing of acme's is pending; the delivery log."""
    for _ in range(passes):
        await loop.step()
        log = await deliveries(api)
        if log and all(d["status"] != "pending" for d in log):
            return log
        await asyncio.sleep(0.05)
    return await deliveries(api)


async def test_a_failed_run_delivers_one_signed_payload(api: Api, receiver: Receiver) -> None:
    await api.publish(A, FAILING)
    await put_secret(api)
    set_rule = await put_alert(
        api, "etl-failed", kind="run.failed", url=receiver.url, secretRef="${secrets.hook-key}"
    )
    assert set_rule.status_code == 200, set_rule.text
    api.start_worker()
    run_id = await failed_run(api)
    loop = AlertLoop(api.orchestrator.env)

    log = await settle(loop, api)
    await loop.step()  # a second look finds nothing new
    await loop.close()

    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Stella-Signature"] == expected
    payload = json.loads(body)
    assert (payload["kind"], payload["tenant"], payload["runId"]) == ("run.failed", A, run_id)
    assert payload["error"]["code"] == "LOADER_SCHEMA_MISMATCH"
    assert [(d["status"], d["attempts"], d["responseStatus"]) for d in log] == [
        ("delivered", 1, 200)
    ]
    [rule] = (await api.get_json(A, "/alerts"))["items"]
    assert rule["lastDelivery"]["status"] == "delivered" and rule["signed"] is True
    assert KEY not in json.dumps(rule)


async def test_a_failing_receiver_is_retried_then_recorded_failed(
    make_api: MakeApi, receiver: Receiver
) -> None:
    api = await make_api(alert_max_attempts=3, alert_retry_initial_seconds=0.05)
    receiver.status = 500
    loop = await rule_then_failed_run(api, receiver)

    log = await settle(loop, api)
    await loop.close()

    assert len(receiver.requests) == 3
    assert len({body for _, body in receiver.requests}) == 1  # the same payload each time
    [delivery] = log
    assert (delivery["status"], delivery["attempts"], delivery["lastError"]) == (
        "failed",
        3,
        "HTTP 500",
    )


async def test_a_receiver_slower_than_the_timeout_is_an_attempt_that_failed(
    make_api: MakeApi, receiver: Receiver
) -> None:
    api = await make_api(alert_max_attempts=1, alert_timeout_seconds=0.3)
    receiver.delay = 2.0
    loop = await rule_then_failed_run(api, receiver)

    started = time.monotonic()
    log = await settle(loop, api)
    await loop.close()

    assert time.monotonic() - started < 2.0
    assert log[0]["status"] == "failed" and "Timeout" in log[0]["lastError"]


async def test_another_tenants_rules_never_fire_for_this_tenant(
    api: Api, receiver: Receiver, other_receiver: Receiver
) -> None:
    await api.publish(A, FAILING)
    await api.publish(B, NOOP)
    await put_alert(api, "failures", tenant=B, kind="run.failed", url=other_receiver.url)
    await put_alert(api, "backlog", tenant=B, kind="backlog", url=other_receiver.url, threshold=0)
    await put_alert(api, "failures", kind="run.failed", url=receiver.url)
    api.start_worker()
    await failed_run(api)
    loop = AlertLoop(api.orchestrator.env)

    await settle(loop, api)
    await loop.close()

    assert other_receiver.requests == []
    assert [b["tenant"] for b in receiver.bodies()] == [A]
    assert [r["url"] for r in (await api.get_json(A, "/alerts"))["items"]] == [receiver.url]
    assert await deliveries(api, B) == []


async def test_a_dag_filter_only_fires_for_that_dag(api: Api, receiver: Receiver) -> None:
    await api.publish(A, FAILING)
    await put_alert(api, "other", kind="run.failed", url=receiver.url, dagId="other-dag")
    api.start_worker()
    await failed_run(api)
    loop = AlertLoop(api.orchestrator.env)

    await loop.step()
    await loop.close()

    assert receiver.requests == [] and await deliveries(api) == []


async def test_a_backlog_over_threshold_alerts_once_per_window(
    api: Api, receiver: Receiver
) -> None:
    await api.publish(A, NOOP)
    await put_alert(api, "backlog", kind="backlog", url=receiver.url, threshold=2)
    loop = AlertLoop(api.orchestrator.env)
    await api.start(A, "etl")
    await api.start(A, "etl")
    await loop.step()
    assert receiver.requests == []  # 2 queued is not over 2

    await api.start(A, "etl")
    await loop.step()
    await loop.step()
    await loop.close()

    [body] = receiver.bodies()
    assert (body["kind"], body["queueDepth"], body["threshold"]) == ("backlog", 3, 2)


async def test_dead_letter_growth_over_threshold_alerts(api: Api, receiver: Receiver) -> None:
    await api.publish(A, FAILING)
    await put_alert(api, "dl", kind="deadletter.growth", url=receiver.url, threshold=1)
    api.start_worker()
    await failed_run(api)
    loop = AlertLoop(api.orchestrator.env)
    await loop.step()
    assert receiver.requests == []

    await failed_run(api)
    await settle(loop, api)
    await loop.close()

    [body] = receiver.bodies()
    assert (body["deadLetterCount"], body["windowSeconds"]) == (2, 3600)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "run.failed", "url": "ftp://127.0.0.1/x"}, "ALERT_RULE_INVALID"),
        ({"kind": "run.failed", "url": "http://user:pw@127.0.0.1/x"}, "ALERT_RULE_INVALID"),
        ({"kind": "run.failed", "url": "http://" + "a" * 2100}, "VALIDATION_FAILED"),
        ({"kind": "backlog", "url": "https://hooks.example/x"}, "ALERT_RULE_INVALID"),
        ({"kind": "run.failed", "url": "https://hooks.example/x", "secretRef": "nope"}, None),
    ],
)
async def test_bad_rules_are_refused_and_write_nothing(
    api: Api, body: dict[str, Any], code: str | None
) -> None:
    response = await put_alert(api, "bad", **body)

    error = assert_envelope(response)
    if code is None:
        assert (response.status_code, error["code"]) == (404, "SECRET_NOT_FOUND")
    else:
        assert (response.status_code, error["code"]) == (400, code)
    assert (await api.get_json(A, "/alerts"))["items"] == []


async def test_rules_are_admin_only_audited_and_deleted(api: Api, receiver: Receiver) -> None:
    reader = await api.client.get(
        f"{BASE}/alerts", headers=api.headers(A, scopes=("orchestrator:read",))
    )
    assert assert_envelope(reader)["code"] == "SCOPE_REQUIRED"
    await put_alert(api, "dl", kind="deadletter.growth", url=receiver.url, threshold=5)

    deleted = await api.client.delete(f"{BASE}/alerts/dl", headers=api.headers(A))
    again = await api.client.delete(f"{BASE}/alerts/dl", headers=api.headers(A))

    assert deleted.status_code == 204
    assert assert_envelope(again)["code"] == "ALERT_RULE_NOT_FOUND"
    actions = await api.sql("SELECT action FROM audit_log WHERE action LIKE 'alert.%' ORDER BY id")
    assert [a["action"] for a in actions] == ["alert.set", "alert.delete"]


async def test_changing_what_a_rule_watches_starts_from_now(api: Api, receiver: Receiver) -> None:
    await api.publish(A, FAILING)
    await put_alert(api, "watch", kind="backlog", url=receiver.url, threshold=100)
    api.start_worker()
    await failed_run(api)  # before the rule watched failed runs

    await put_alert(api, "watch", kind="run.failed", url=receiver.url)
    loop = AlertLoop(api.orchestrator.env)
    await loop.step()
    await loop.close()

    assert receiver.requests == []


async def test_a_signing_secret_deleted_after_the_rule_fails_the_delivery(
    make_api: MakeApi, receiver: Receiver
) -> None:
    api = await make_api(alert_max_attempts=1)
    await api.publish(A, FAILING)
    await put_secret(api)
    await put_alert(api, "etl-failed", kind="run.failed", url=receiver.url, secretRef="hook-key")
    gone = await api.client.delete(f"{BASE}/secrets/hook-key", headers=api.headers(A))
    assert gone.status_code == 204, gone.text
    api.start_worker()
    await failed_run(api)
    loop = AlertLoop(api.orchestrator.env)

    [delivery] = await settle(loop, api)
    await loop.close()

    assert receiver.requests == []  # never sent unsigned
    assert delivery["status"] == "failed"
    assert delivery["lastError"].startswith("SECRET_NOT_FOUND: the signing secret hook-key")


async def test_only_the_loop_holding_the_lease_delivers(api: Api, receiver: Receiver) -> None:
    leader = await rule_then_failed_run(api, receiver)
    standby = AlertLoop(api.orchestrator.env, holder="standby")
    assert (await leader.step()).leader

    passed = await standby.step()
    await standby.close()
    await leader.close()

    assert not passed.leader
    assert len(receiver.requests) == 1
