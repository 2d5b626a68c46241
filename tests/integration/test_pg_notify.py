"""LISTEN/NOTIFY: work and events committed by one engine wake another engine at once.

Both engines poll only every 5 s here, so anything that happens within 1 s was woken by the
NOTIFY sent when engine 1's transaction committed (the engines share no in-process bus).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

import pytest

from stellaorch.engine.stream import StreamFilter, StreamHub
from stellaorch.store.notify import Topic

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

# LISTEN/NOTIFY exists on PostgreSQL only (the SQLite notifier is a no-op): no SQLite case.
pytestmark = pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
SLOW_POLL = {"poll_interval_seconds": 5.0}
SPEC = {
    "dagId": "notified",
    "version": 1,
    "steps": [{"id": "s", "plugin": "sleep", "with": {"seconds": 0.3}}],
    "edges": [],
}


async def two_slow_engines(make_harness: MakeHarness) -> tuple[Harness, Harness]:
    first = await make_harness(**SLOW_POLL)
    url = first.orchestrator.env.settings.database_url
    return first, await make_harness(url=url, **SLOW_POLL)


async def wait_listening(harness: Harness) -> None:
    """Until the engine's listen thread has LISTENed (it delivers one wake when it starts)."""
    notifier = harness.orchestrator.env.notifier

    async def listening() -> bool:
        return notifier.received > 0

    await harness.wait_until(listening, 5.0, "the notifier is listening")


async def test_notify_wakes_another_engines_worker_and_stream(
    make_harness: MakeHarness,
) -> None:
    one, two = await two_slow_engines(make_harness)
    await one.publish(SPEC)
    hub = StreamHub(two.orchestrator.env)
    subscription = await hub.subscribe(StreamFilter(one.tenant))
    two.start_worker()
    await wait_listening(two)
    await asyncio.sleep(0.2)  # the worker's first claim found nothing; it now waits 5 s

    started = time.monotonic()
    created = await one.create("notified")
    event = await asyncio.wait_for(subscription.next(), 1.0)
    streamed = time.monotonic() - started

    async def claimed() -> bool:
        view = await one.view(created.run.run_id)
        return one.step(view, "s")["status"] in ("running", "succeeded")

    await one.wait_until(claimed, 1.0, "engine 2's worker started the run")
    claim_latency = time.monotonic() - started
    print(f"notify latency: stream {streamed * 1000:.0f} ms, claim {claim_latency * 1000:.0f} ms")
    assert event["runId"] == created.run.run_id
    assert event["type"] == "run.updated"
    await one.wait_done(created.run.run_id, within=5.0)
    await hub.close()


async def test_an_engine_is_not_woken_by_its_own_notifications(
    make_harness: MakeHarness,
) -> None:
    """Its own commits reach its worker and streams through the in-process bus already."""
    one, two = await two_slow_engines(make_harness)
    await one.publish(SPEC)
    for harness in (one, two):
        harness.orchestrator.env.notifier.subscribe(Topic.EVENTS, lambda: None)
        await wait_listening(harness)
    own_before = one.orchestrator.env.notifier.received
    other_before = two.orchestrator.env.notifier.received

    for i in range(3):
        await one.create("notified", {"i": i})

    async def other_woken() -> bool:
        return two.orchestrator.env.notifier.received >= other_before + 1

    await two.wait_until(other_woken, 2.0, "engine 2 heard engine 1's commits")
    await asyncio.sleep(0.3)  # engine 1's own notifications would have arrived by now too
    assert one.orchestrator.env.notifier.received == own_before


async def work_notifications(harness: Harness) -> list[int]:
    """A counter of WORK notifications the harness's engine receives from now on."""
    heard = [0]

    def count() -> None:
        heard[0] += 1

    harness.orchestrator.env.notifier.subscribe(Topic.WORK, count)
    await wait_listening(harness)

    async def connect_wake_heard() -> bool:
        return heard[0] >= 1

    # Every subscriber is woken once when the listener connects; on a loaded machine that
    # wake can land after a fixed sleep and be counted as work, so wait for it instead.
    await harness.wait_until(connect_wake_heard, 5.0, "the listener's connect wake")
    heard[0] = 0
    return heard


async def test_other_workers_hear_only_of_work_the_completing_worker_left(
    make_harness: MakeHarness,
) -> None:
    one, two = await two_slow_engines(make_harness)
    ids = "abcdefghij"
    links = [a + b for a, b in itertools.pairwise(ids)]
    chain = one.spec("chain", [{"id": s, "plugin": "noop"} for s in ids], links)
    fan = one.spec("fan", [{"id": s, "plugin": "noop"} for s in "abcd"], ["ab", "ac", "ad"])
    await one.publish(chain)
    await one.publish(fan)
    heard = await work_notifications(two)

    one.start_worker(concurrency=2)
    await one.wait_done((await one.create("chain")).run.run_id)
    await asyncio.sleep(0.3)
    # The create announces step a; b to j are each leased by the transaction that queued them,
    # so announcing every successor would be 10 wakes. A loaded machine may add a stray one
    # (a wake that lands late, a slow claim), never one per step.
    assert 1 <= heard[0] <= 3, heard

    await one.wait_done((await one.create("fan")).run.run_id)
    await asyncio.sleep(0.3)
    # After a, three steps wait for two free slots: what may be left is announced.
    assert heard[0] >= 3
