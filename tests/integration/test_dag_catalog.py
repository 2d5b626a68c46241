"""Publishing DAG versions and choosing the version a new run uses (engine issue item 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.domain.errors import DagDisabled, DagNotFound, DagVersionConflict

if TYPE_CHECKING:
    from conftest import Harness


def hello(version: int | str = 1, message: str = "hi") -> dict[str, Any]:
    return {
        "dagId": "hello",
        "version": version,
        "steps": [{"id": "greet", "plugin": "noop", "with": {"outputs": {"msg": message}}}],
    }


async def test_publishing_the_same_content_twice_is_idempotent(harness: Harness) -> None:
    first = await harness.publish(hello())
    second = await harness.publish(hello())

    assert (first.created, second.created) == (True, False)
    assert second.version.spec_hash == first.version.spec_hash
    versions = await harness.orchestrator.catalog.list_versions(harness.tenant, "hello")
    assert [v.version for v in versions] == ["1"]


async def test_publishing_an_equivalent_document_is_idempotent(harness: Harness) -> None:
    await harness.publish(hello())
    spelled_out = hello(version="1")
    spelled_out["edges"] = []
    spelled_out["steps"][0]["retry"] = {"maxAttempts": 1}

    again = await harness.publish(spelled_out)

    assert again.created is False


async def test_same_version_with_other_content_is_a_conflict(harness: Harness) -> None:
    await harness.publish(hello(message="hi"))

    with pytest.raises(DagVersionConflict):
        await harness.publish(hello(message="changed"))

    view = await harness.run_to_end(hello(message="hi"))
    assert harness.step(view, "greet")["outputs"] == {"msg": "hi"}


async def test_run_of_an_unknown_dag_is_not_found(harness: Harness) -> None:
    with pytest.raises(DagNotFound):
        await harness.create("nope")


async def test_run_of_an_unknown_version_is_not_found(harness: Harness) -> None:
    await harness.publish(hello())

    with pytest.raises(DagNotFound):
        await harness.create("hello", version="2")


async def test_dag_of_another_tenant_is_not_found(harness: Harness) -> None:
    await harness.publish(hello(), tenant="other")

    with pytest.raises(DagNotFound):
        await harness.create("hello")


async def test_disabled_version_rejects_new_runs(harness: Harness) -> None:
    await harness.publish(hello())
    await harness.orchestrator.catalog.set_enabled(harness.tenant, "hello", "1", False)

    with pytest.raises(DagDisabled):
        await harness.create("hello", version="1")

    assert await harness.run_ids(harness.tenant) == []


async def test_no_version_picks_the_latest_enabled_one(harness: Harness) -> None:
    for version in (1, 2, 3):
        await harness.publish(hello(version=version, message=f"v{version}"))
    await harness.orchestrator.catalog.set_enabled(harness.tenant, "hello", "3", False)

    created = await harness.create("hello")

    assert created.run.dag_version == "2"


async def test_no_version_picks_the_latest_published_when_all_enabled(harness: Harness) -> None:
    await harness.publish(hello(version=1))
    await harness.publish(hello(version="1.1.0", message="patch"))

    created = await harness.create("hello")

    assert created.run.dag_version == "1.1.0"


async def test_reenabled_version_takes_runs_again(harness: Harness) -> None:
    await harness.publish(hello())
    catalog = harness.orchestrator.catalog
    await catalog.set_enabled(harness.tenant, "hello", "1", False)
    await catalog.set_enabled(harness.tenant, "hello", "1", True)

    created = await harness.create("hello", version="1")

    assert created.created
