"""A worker started with a tenant filter (`--tenants`) leases only those tenants' steps."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import MakeHarness

SPEC_STEPS = [{"id": s, "plugin": "noop"} for s in ("a", "b")]


async def test_a_filtered_worker_leaves_other_tenants_queued_for_their_worker(
    make_harness: MakeHarness,
) -> None:
    only_acme = await make_harness(worker_tenants=["acme"])
    url = only_acme.orchestrator.env.settings.database_url
    spec = only_acme.spec("pair", SPEC_STEPS, [("a", "b")])
    for tenant in ("acme", "beta"):
        await only_acme.publish(spec, tenant=tenant)
    acme = [(await only_acme.create("pair", {"i": i}, tenant="acme")).run.run_id for i in range(3)]
    beta = [(await only_acme.create("pair", {"i": i}, tenant="beta")).run.run_id for i in range(3)]

    only_acme.start_worker()
    for run_id in acme:
        assert (await only_acme.wait_done(run_id, tenant="acme"))["status"] == "completed"
    await asyncio.sleep(0.3)  # several polls: the filtered worker had every chance to lease
    for run_id in beta:
        view = await only_acme.view(run_id, tenant="beta")
        assert view["status"] == "queued", view
        assert all(not s["attempts"] for s in view["steps"]), view

    # A second engine on the same store, serving beta only, picks them up.
    only_beta = await make_harness(url, worker_tenants=["beta"])
    only_beta.start_worker()
    for run_id in beta:
        assert (await only_beta.wait_done(run_id, tenant="beta"))["status"] == "completed"
