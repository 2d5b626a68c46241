"""Example SDK worker: one typed async task."""

from pydantic import BaseModel

from stellaorch.sdk import TaskContext, Worker, task


class ResizeParams(BaseModel):
    """What the step's `with` passes."""

    width: int


@task("resize-image")
async def resize(ctx: TaskContext, params: ResizeParams) -> dict[str, int]:
    """Pretend to resize."""
    ctx.progress(0.5, "resizing")
    return {"width": params.width, "height": params.width // 2}


worker = Worker(tasks=[resize], concurrency=8)
