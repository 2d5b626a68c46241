"""The SDK's Python DAG builder: its document is the one the equivalent YAML parses to."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.spec import parse_spec, spec_hash
from stellaorch.sdk import Backoff, Dag, Retry, TaskContext, task

YAML = """\
dagId: thumbnails
version: "1.2.0"
steps:
  - id: fetch
    plugin: http
    with: {url: "https://example.org/a.png", method: GET}
    retry: {maxAttempts: 3, backoff: {initialMs: 100, factor: 2.0}}
    timeoutSeconds: 30
    network: ["example.org:443"]
  - id: resize
    plugin: queue
    with: {task: resize-image, queue: images, width: 640}
    concurrency: 4
  - id: publish
    plugin: noop
    disabled: true
edges:
  - {from: fetch, to: resize}
  - {from: resize, to: publish}
metadata: {owner: media}
"""


class ResizeParams(BaseModel):
    """The task's typed params."""

    width: int


@task("resize-image")
async def resize_image(ctx: TaskContext, params: ResizeParams) -> dict[str, Any]:
    """A handler the DAG's queue step is served by."""
    return {"width": params.width}


def thumbnails() -> Dag:
    """The builder's form of YAML above."""
    dag = Dag("thumbnails", version="1.2.0", metadata={"owner": "media"})
    fetch = dag.step(
        "fetch",
        plugin="http",
        with_={"url": "https://example.org/a.png", "method": "GET"},
        retry=Retry(max_attempts=3, backoff=Backoff(initial_ms=100, factor=2.0)),
        timeout_seconds=30,
        network=["example.org:443"],
    )
    resize = dag.task(
        "resize", resize_image, with_=ResizeParams(width=640), queue="images", concurrency=4
    )
    fetch >> resize >> dag.step("publish", plugin="noop", disabled=True)
    return dag


def test_document_equals_the_parsed_yaml() -> None:
    assert thumbnails().document() == yaml.safe_load(YAML)


def test_spec_hash_equals_the_yaml_specs() -> None:
    assert spec_hash(parse_spec(thumbnails().document())) == spec_hash(parse_spec(YAML))


def test_after_and_list_shifts_declare_the_same_edges() -> None:
    dag = Dag("fan", version=1)
    a = dag.step("a", plugin="noop")
    b, c = dag.step("b", plugin="noop", after=[a]), dag.step("c", plugin="noop")
    a >> [b, c]
    [b, c] >> dag.step("d", plugin="noop", after=["b"])
    edges = [(e["from"], e["to"]) for e in dag.document()["edges"]]
    assert edges == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]


def test_a_task_key_among_the_params_cannot_redirect_the_step() -> None:
    dag = Dag("d", version=1)
    dag.task("s", resize_image, with_={"task": "other-task", "width": 1})
    assert dag.document()["steps"][0]["with"] == {"task": "resize-image", "width": 1}


def test_params_render_in_sorted_order_whatever_the_dict_order() -> None:
    one, two = Dag("d", version=1), Dag("d", version=1)
    one.step("s", plugin="noop", with_={"b": 1, "a": {"y": 2, "x": 3}})
    two.step("s", plugin="noop", with_={"a": {"x": 3, "y": 2}, "b": 1})
    assert yaml.safe_dump(one.document(), sort_keys=False) == yaml.safe_dump(
        two.document(), sort_keys=False
    )


def test_a_cycle_is_caught_when_validated() -> None:
    dag = Dag("loop", version=1)
    a, b = dag.step("a", plugin="noop"), dag.step("b", plugin="noop")
    a >> b >> a
    with pytest.raises(SpecInvalid, match="cycle"):
        parse_spec(dag.document())


def test_a_duplicate_step_id_is_caught_when_validated() -> None:
    dag = Dag("twice", version=1)
    dag.step("a", plugin="noop")
    dag.step("a", plugin="noop")
    with pytest.raises(SpecInvalid, match="duplicate"):
        parse_spec(dag.document())


def test_editing_the_document_does_not_change_the_dag() -> None:
    dag = thumbnails()
    dag.document()["steps"][1]["with"]["task"] = "hijacked"
    assert dag.document()["steps"][1]["with"]["task"] == "resize-image"
