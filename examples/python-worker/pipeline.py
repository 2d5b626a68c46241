"""The example's DAG in Python: `stella orch dag render pipeline:dag` prints dags/resize.yaml."""

from worker import ResizeParams, resize

from stellaorch.sdk import Dag

dag = Dag("resize", version=1)
dag.task("resize", resize, with_=ResizeParams(width=640))
