"""WebSocket /runs/stream: ordered live events, tenant isolation, filters, resume, backpressure."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stellaorch.api.app import create_app
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.engine.stream import CarriedEntries, StreamFilter, StreamHub
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

BASE = "/api/v1/orchestrator"
READ, WRITE = ["orchestrator:read"], ["orchestrator:write"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Api:
    """An app on a real store, with tokens from a local key."""

    harness: Harness
    app: FastAPI
    keys: Path

    @property
    def hub(self) -> StreamHub:
        hub: StreamHub = self.app.state.stream_hub
        return hub

    def headers(self, tenant: str = "acme", scopes: list[str] = READ) -> dict[str, str]:
        token = issue_token(
            self.keys, subject="t", tenants=[tenant], scopes=scopes, audience="stella-orchestrator"
        )
        return {"Authorization": f"Bearer {token}", "X-Stella-Tenant": tenant}

    async def start_run(self, dag_id: str, tenant: str = "acme") -> dict[str, Any]:
        """POST /runs over HTTP."""
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://t{BASE}") as http:
            response = await http.post(
                "/runs", json={"dagId": dag_id}, headers=self.headers(tenant, WRITE)
            )
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def make_api(make_harness: MakeHarness, tmp_path: Path) -> Callable[..., Awaitable[Api]]:
    keys = tmp_path / "keys"
    generate_key(keys)

    async def make(**settings: Any) -> Api:
        harness = await make_harness(keys_dir=keys, **settings)
        for tenant in ("acme", "globex"):
            for dag_id, steps in (("pipe", "ab"), ("one", "x"), ("two", "y")):
                spec = harness.spec(
                    dag_id,
                    [{"id": s, "plugin": "noop"} for s in steps],
                    list(pairwise(steps)),
                )
                await harness.publish(spec, tenant)
        return Api(harness, create_app(harness.orchestrator), keys)

    return make


@asynccontextmanager
async def serving(app: FastAPI, send_buffer: int | None = None) -> AsyncIterator[str]:
    """Serve the app with uvicorn on a free local port; yields the API's ws:// base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:  # accepted connections inherit it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_ping_interval=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}{BASE}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def receive_until(
    ws: ClientConnection, last: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> list[dict[str, Any]]:
    """Events until (and including) the first one `last` accepts."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            events.append(json.loads(await ws.recv()))
            if last(events[-1]):
                return events


async def receive(ws: ClientConnection, count: int, within: float = 10.0) -> list[dict[str, Any]]:
    """The next `count` events."""
    async with asyncio.timeout(within):
        return [json.loads(await ws.recv()) for _ in range(count)]


def completed(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "run.completed" and e["runId"] == run_id


async def wait_for(probe: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll `probe` until true; fail naming `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def ledger_ids(harness: Harness, tenant: str, after: int = 0) -> list[int]:
    rows = await harness.sql(
        "SELECT id FROM ledger_entries WHERE tenant = :t AND id > :a ORDER BY id", t=tenant, a=after
    )
    return [r["id"] for r in rows]


# -- live events --------------------------------------------------------------------------
async def test_stream_delivers_every_event_of_a_run_in_order(make_api: Any) -> None:
    api: Api = await make_api()
    async with (
        serving(api.app) as url,
        connect(f"{url}/runs/stream", additional_headers=api.headers()) as ws,
    ):
        api.harness.start_worker()
        run = await api.start_run("pipe")
        events = await receive_until(ws, completed(run["runId"]))

    assert [(e["type"], e["status"], e.get("stepId")) for e in events] == [
        ("run.updated", "queued", None),
        ("step.updated", "queued", "a"),
        ("run.started", "running", None),
        ("step.updated", "running", "a"),
        ("step.updated", "succeeded", "a"),
        ("step.updated", "queued", "b"),
        ("step.updated", "running", "b"),
        ("step.updated", "succeeded", "b"),
        ("run.completed", "completed", None),
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) == await ledger_ids(api.harness, "acme")
    for event in events:
        assert (event["tenant"], event["dagId"], event["runId"]) == ("acme", "pipe", run["runId"])
        assert event["traceId"] == run["traceId"]
        assert TIMESTAMP.match(event["timestamp"])
        assert isinstance(event["data"], dict)
        assert ("attempt" in event) == ("stepId" in event)
    assert events[4]["attempt"] == 1
    assert events[0]["data"]["dagVersion"] == "1"


async def test_closing_the_socket_removes_the_subscriber(make_api: Any) -> None:
    api: Api = await make_api()
    async with serving(api.app) as url:
        async with connect(f"{url}/runs/stream", additional_headers=api.headers()):
            await wait_for(lambda: api.hub.subscriber_count == 1, "subscribed")
            assert api.hub.tailing

        await wait_for(lambda: api.hub.subscriber_count == 0, "unsubscribed")
        assert not api.hub.tailing


async def test_a_tenant_never_sees_another_tenants_events(make_api: Any) -> None:
    api: Api = await make_api()
    async with (
        serving(api.app) as url,
        connect(f"{url}/runs/stream", additional_headers=api.headers("acme")) as acme,
        connect(f"{url}/runs/stream", additional_headers=api.headers("globex")) as globex,
    ):
        api.harness.start_worker()
        acme_run = await api.start_run("pipe", "acme")
        await receive_until(acme, completed(acme_run["runId"]))
        globex_run = await api.start_run("pipe", "globex")
        seen = await receive_until(globex, completed(globex_run["runId"]))

    # acme's run came first: had any of its events leaked, they would lead globex's stream.
    assert {(e["tenant"], e["runId"]) for e in seen} == {("globex", globex_run["runId"])}
    assert seen[0]["type"] == "run.updated"


# -- filters ------------------------------------------------------------------------------
async def test_filters_narrow_the_stream_by_dag_status_and_run(make_api: Any) -> None:
    api: Api = await make_api()
    h = api.harness
    first = (await h.create("one")).run.run_id
    stream = "/runs/stream?"
    async with (
        serving(api.app) as url,
        connect(f"{url}{stream}dagId=two", additional_headers=api.headers()) as by_dag,
        connect(f"{url}{stream}status=completed", additional_headers=api.headers()) as by_status,
        connect(f"{url}{stream}runId={first}", additional_headers=api.headers()) as by_run,
    ):
        h.start_worker()
        await h.wait_done(first)
        second = (await h.create("two")).run.run_id
        await h.wait_done(second)
        dag_events = await receive_until(by_dag, completed(second))
        status_events = await receive(by_status, 2)
        run_events = await receive_until(by_run, completed(first))

    assert {(e["dagId"], e["runId"]) for e in dag_events} == {("two", second)}
    assert [(e["type"], e["runId"]) for e in status_events] == [
        ("run.completed", first),
        ("run.completed", second),
    ]
    assert {e["runId"] for e in run_events} == {first}
    assert [e["status"] for e in run_events] == ["running", "running", "succeeded", "completed"]


# -- resume -------------------------------------------------------------------------------
async def test_resume_after_a_seq_replays_exactly_the_missed_events_then_goes_live(
    make_api: Any,
) -> None:
    api: Api = await make_api()
    h = api.harness
    async with serving(api.app) as url:
        async with connect(f"{url}/runs/stream", additional_headers=api.headers()) as ws:
            h.start_worker()
            first = await api.start_run("pipe")
            seen = await receive_until(ws, completed(first["runId"]))
        cut = seen[3]["seq"]
        missed = await api.start_run("pipe")  # while no one listens
        await h.wait_done(missed["runId"])
        expected = await ledger_ids(h, "acme", after=cut)

        async with connect(
            f"{url}/runs/stream?after={cut}", additional_headers=api.headers()
        ) as ws:
            replayed = await receive(ws, len(expected))
            live = await api.start_run("pipe")
            after_replay = await receive_until(ws, completed(live["runId"]))

    assert [e["seq"] for e in replayed] == expected
    assert replayed[0]["runId"] == first["runId"] and replayed[-1]["runId"] == missed["runId"]
    assert [e["seq"] for e in after_replay] == await ledger_ids(h, "acme", after=expected[-1])
    assert {e["runId"] for e in after_replay} == {live["runId"]}


async def test_handover_drops_live_events_the_replay_already_sent(harness: Harness) -> None:
    await harness.publish(harness.spec("one", [{"id": "x", "plugin": "noop"}]))
    hub = StreamHub(harness.orchestrator.env)
    start = (await ledger_ids(harness, "acme") or [0])[-1]
    subscription = await hub.subscribe(StreamFilter("acme"))
    try:
        await harness.create("one")  # buffered live and also found by the replay below
        await wait_for(lambda: subscription.pending == 2, "both entries buffered")
        replayed = [e["seq"] async for e in hub.replay(subscription, start)]
        later = (await harness.create("one")).run.run_id
        following = await asyncio.wait_for(subscription.next(), 5)
    finally:
        await hub.close()

    assert replayed == (await ledger_ids(harness, "acme", after=start))[:2]
    assert following["runId"] == later and following["type"] == "run.updated"
    assert following["seq"] == replayed[-1] + 1


# -- the tail ----------------------------------------------------------------------------
async def test_entries_of_another_engine_are_streamed_between_ours_in_store_order(
    make_harness: MakeHarness,
) -> None:
    ours = await make_harness(poll_interval_seconds=0.05)
    theirs = await make_harness(url=ours.orchestrator.env.settings.database_url)
    await ours.publish(ours.spec("one", [{"id": "x", "plugin": "noop"}]))
    start = (await ledger_ids(ours, "acme") or [0])[-1]
    hub = StreamHub(ours.orchestrator.env, poll_seconds=0.05)
    subscription = await hub.subscribe(StreamFilter("acme"))
    try:
        for _ in range(3):  # ours come on our bus, theirs only from the store
            await ours.create("one")
            await theirs.create("one")
        expected = await ledger_ids(ours, "acme", after=start)
        live = [await asyncio.wait_for(subscription.next(), 5) for _ in expected]
        stored = [e async for e in hub.replay(subscription, start)]
    finally:
        await hub.close()

    assert [e["seq"] for e in live] == expected
    assert live == stored  # an event made from the bus is the one made from its stored row


async def test_every_subscriber_is_sent_the_same_serialised_event(harness: Harness) -> None:
    await harness.publish(harness.spec("one", [{"id": "x", "plugin": "noop"}]))
    hub = StreamHub(harness.orchestrator.env)
    first = await hub.subscribe(StreamFilter("acme"))
    second = await hub.subscribe(StreamFilter("acme", dag_id="one"))
    try:
        await harness.create("one")
        a, b = await asyncio.gather(first.next_event(), second.next_event())
    finally:
        await hub.close()

    assert a.message is b.message
    assert json.loads(a.message) == a.fields and a.fields["type"] == "run.updated"


def test_carried_entries_keep_only_the_newest_up_to_their_limit() -> None:
    carried = CarriedEntries(limit=2)
    for seq in (1, 2, 3):
        carried.add(_entry("r1", seq))

    taken = carried.take([("r1", 1), ("r1", 2), ("r1", 3)])

    assert sorted(taken) == [("r1", 2), ("r1", 3)] and len(carried) == 0


def _entry(run_id: str, seq: int) -> LedgerEntry:
    return LedgerEntry(
        run_id, seq, "acme", "d", "t", "step.queued", "queued", 0, "", "", "{}", step_id="x"
    )


# -- backpressure -------------------------------------------------------------------------
async def test_a_consumer_that_stops_reading_is_disconnected_as_slow(make_api: Any) -> None:
    api: Api = await make_api(stream_queue_limit=10)
    wide = api.harness.spec("wide", [{"id": f"s{i:02d}", "plugin": "noop"} for i in range(50)])
    await api.harness.publish(wide)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with serving(api.app, send_buffer=4096) as url:
        port = int(url.split(":")[2].split("/")[0])
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
        ws = await connect(
            f"{url}/runs/stream",
            additional_headers=api.headers(),
            sock=client,
            max_queue=1,  # the client library stops reading from the socket at once
            compression=None,  # similar events compress so well that buffers never fill
        )
        await wait_for(lambda: api.hub.subscriber_count == 1, "subscribed")
        for _ in range(40):  # about 2,000 events, far more than the socket buffers hold
            await api.harness.create("wide")

        await wait_for(lambda: api.hub.subscriber_count == 0, "slow consumer dropped")
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)

    assert (ws.close_code, ws.close_reason) == (1013, "slow consumer")
    assert not api.hub.tailing


# -- auth ---------------------------------------------------------------------------------
async def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[str, int | None]:
    """The error code of the single message and the close code of a refused stream."""
    async with connect(url, additional_headers=headers or {}) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    return message["error"]["code"], ws.close_code


async def test_auth_failures_close_with_policy_violation(make_api: Any) -> None:
    api: Api = await make_api()
    good = api.headers()
    async with serving(api.app) as url:
        stream = f"{url}/runs/stream"
        assert await refusal(stream, {"X-Stella-Tenant": "acme"}) == ("UNAUTHENTICATED", 1008)
        bad_token = {**good, "Authorization": "Bearer not-a-jwt"}
        assert await refusal(stream, bad_token) == ("UNAUTHENTICATED", 1008)
        other = {**good, "X-Stella-Tenant": "globex"}
        assert await refusal(stream, other) == ("TENANT_FORBIDDEN", 1008)
        no_tenant = {"Authorization": good["Authorization"]}
        assert await refusal(stream, no_tenant) == ("TENANT_REQUIRED", 1008)
        assert await refusal(f"{stream}?after=-1", good) == ("VALIDATION_FAILED", 1008)
        assert await refusal(f"{stream}?status=nope", good) == ("VALIDATION_FAILED", 1008)
    assert api.hub.subscriber_count == 0


BAD_CURSORS = {
    "400-digits": "9" * 400,
    "19-digits": "9" * 19,
    "superscript-two": "\u00b2",
    "arabic-indic-one": "\u0661",
    "exponent": "1e3",
    "plus-sign": "+1",
    "leading-space": " 1",
    "empty": "",
}


@pytest.mark.parametrize("after", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_a_malformed_or_oversized_resume_cursor_is_refused_with_a_frame(
    make_api: Any, after: str
) -> None:
    api: Api = await make_api()
    async with serving(api.app) as url:
        query = httpx.QueryParams({"after": after})
        refused = await refusal(f"{url}/runs/stream?{query}", api.headers())
    assert refused == ("VALIDATION_FAILED", 1008)
    assert api.hub.subscriber_count == 0


async def test_the_largest_resume_cursor_is_accepted(make_api: Any) -> None:
    api: Api = await make_api()
    async with serving(api.app) as url:
        stream = f"{url}/runs/stream?after={'9' * 18}"
        async with connect(stream, additional_headers=api.headers()) as ws:
            # past every seq there will ever be: subscribed, kept open, silent
            await wait_for(lambda: api.hub.subscriber_count == 1, "the subscription")
            await asyncio.wait_for(await ws.ping(), 5)
    await wait_for(lambda: api.hub.subscriber_count == 0, "the unsubscription")


async def test_browsers_pass_token_and_tenant_as_query_parameters(make_api: Any) -> None:
    api: Api = await make_api()
    token = api.headers()["Authorization"].removeprefix("Bearer ")
    async with serving(api.app) as url:
        query = f"access_token={token}&tenant=acme"
        async with connect(f"{url}/runs/stream?{query}") as ws:
            api.harness.start_worker()
            run = await api.start_run("one")
            events = await receive_until(ws, completed(run["runId"]))
    assert events[0]["runId"] == run["runId"]
