"""No input ever becomes code: hostile values in every input position run nothing (issue 9 §2).

The payloads reach a `script` step as an argv item of `sh -c`, as an env value (directly and
through an upstream step's outputs) and as stdin; the step writes what it received to files
and reports them. Executed, a payload would change those values or leave a `pwned*` file.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.domain.errors import SpecInvalid

if TYPE_CHECKING:
    from conftest import Harness

PAYLOADS = [
    "$(cat .stella/keys/*.private.pem)",
    "$(touch pwned1)",
    "`touch pwned2`",
    "; touch pwned3",
    "| touch pwned4",
    "&& touch pwned5 ||",
    "\ntouch pwned6\n",
    "'\"; touch pwned7; echo \"'",
    "${IFS}touch${IFS}pwned8",
    "-c touch pwned9",
    "$((1+1)) * ?",
]

REPORT = (
    "import json, os; "
    "print(json.dumps({'files': sorted(os.listdir('.')), "
    "**{k: open(k).read() for k in ('arg', 'env', 'upstream', 'stdin')}}))"
)
SHELL = (
    'printf "%s" "$1" > arg; printf "%s" "$V" > env; printf "%s" "$W" > upstream; '
    f'cat > stdin; exec python3 -c "{REPORT}"'
)


def dag(harness: Harness) -> dict[str, Any]:
    """prepare (noop echoing the input) -> receive (script getting it in every position)."""
    receive = {
        "id": "receive",
        "plugin": "script",
        "with": {
            "command": ["sh", "-c", SHELL, "sh", "${inputs.x}"],
            "env": {"V": "${inputs.x}", "W": "${steps.prepare.outputs.x}"},
            "stdin": "${inputs.x}",
        },
    }
    prepare = {"id": "prepare", "plugin": "noop", "with": {"outputs": {"x": "${inputs.x}"}}}
    return harness.spec("inputs-are-data", [prepare, receive], [("prepare", "receive")])


async def test_hostile_inputs_in_every_position_run_nothing(harness: Harness) -> None:
    await harness.publish(dag(harness))
    created = [await harness.create("inputs-are-data", {"x": p}) for p in PAYLOADS]
    async with harness.worker(concurrency=4):
        views = await asyncio.gather(*(harness.wait_done(c.run.run_id, within=30) for c in created))
    for payload, view in zip(PAYLOADS, views, strict=True):
        step = harness.step(view, "receive")
        assert view["status"] == "completed", (payload, step)
        outputs = step["outputs"]
        assert outputs["files"] == ["arg", "env", "stdin", "upstream"], payload
        for position in ("arg", "env", "upstream", "stdin"):
            assert outputs[position] == payload, (position, payload, outputs[position])


@pytest.mark.parametrize(
    "command",
    [
        "echo ${inputs.x}",
        "echo '${inputs.x}'",
        ["sh", "-c", "echo ${inputs.x}"],
        ["bash", "-lc", "${inputs.x}"],
        ["python3", "-c", "${inputs.x}"],
        ["${inputs.x}"],
    ],
)
async def test_a_reference_where_it_would_run_as_code_is_refused_at_publish(
    harness: Harness, command: Any
) -> None:
    spec = harness.spec("code", [{"id": "a", "plugin": "script", "with": {"command": command}}])
    with pytest.raises(SpecInvalid) as caught:
        await harness.publish(spec)
    assert caught.value.details["errors"][0]["path"].startswith("steps[0].with.command")
    assert "Pass it as data instead" in caught.value.message
