"""A run that prints a secret every way it can: the value is in no store file, log or export."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)
from api_fixtures import BASE, Api, open_api, spec  # noqa: E402

from stellaorch.observability.logs import line_formatter  # noqa: E402
from stellaorch.observability.secret_values import REDACTED  # noqa: E402
from stellaorch.plugins.base import PluginResult, StepContext  # noqa: E402

A = "acme"
# Quotes, a backslash, a slash, a plus, a space and non-ASCII: every encoding differs from raw.
OLD = 'old "S3cret"\\ /+ välue-41'
VALUE = 'leak "S3cret"\\ /+ välue-42'

# Prints the value raw, base64, URL-encoded and JSON-escaped; splits it across two writes
# (a chunk boundary of the capture) on stdout and stderr; ends with outputs holding it.
PRINTER = r"""
import base64, json, os, sys, time, urllib.parse
s = os.environ["S"]
print(s)
print("b64", base64.b64encode(s.encode()).decode())
print("b64url", base64.urlsafe_b64encode(s.encode()).decode().rstrip("="))
print("url", urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s))
print("json", json.dumps(s), json.dumps(s, ensure_ascii=False))
half = len(s) // 2
for stream in (sys.stdout, sys.stderr):
    stream.write("split " + s[:half]); stream.flush(); time.sleep(0.2)
    stream.write(s[half:] + "\n"); stream.flush()
print(json.dumps({"leak": s, "nested": {s: [s]}, "b64": base64.b64encode(s.encode()).decode()}))
"""


class CrashWithTheSecret:
    """A plugin whose exception message holds the secret it was given (a careless plugin)."""

    name, version = "leak", "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        """Raise with the value in the message."""
        raise RuntimeError(f"bad token {ctx.params['token']} / {ctx.secrets['api-key']}")


@pytest.fixture
async def leaky_api(tmp_path: Path, keys_dir: Path) -> AsyncIterator[Api]:
    """An API on a SQLite file (the test greps it), the crashing plugin, the sandbox off."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    async with open_api(url, keys_dir, sandbox="off") as api:
        api.orchestrator.plugins.register(CrashWithTheSecret())
        yield api


def forms(value: str) -> list[bytes]:
    """The value as bytes in every encoding the test looks for."""
    raw = value.encode()
    texts = {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return [*sorted(t.encode() for t in texts), value.encode("utf-16-le")]


def found_in(data: bytes, values: list[str]) -> list[str]:
    """Which forms of which values occur in `data` (described, never the bytes themselves)."""
    return [
        f"{values.index(v)}:{i}" for v in values for i, form in enumerate(forms(v)) if form in data
    ]


def leaking_dag() -> dict[str, Any]:
    """A printer step, and a plugin that crashes with the secret in its exception."""
    env = {"S": "${secrets.api-key}"}
    printer = {
        "id": "print",
        "plugin": "script",
        "with": {"command": ["python3", "-c", PRINTER], "env": env},
    }
    failer = {"id": "fail", "plugin": "leak", "with": {"token": "${secrets.api-key}"}}
    return spec("leaky", [printer, failer], [("print", "fail")])


async def put(api: Api, value: str) -> None:
    """Put a version of `api-key` for tenant A."""
    body = {"value": value, "reason": "test"}
    response = await api.client.put(
        f"{BASE}/secrets/api-key", json=body, headers=api.headers(A, reason=None)
    )
    assert response.status_code == 200, response.text


def store_files(api: Api) -> bytes:
    """The SQLite file and its WAL, as bytes."""
    path = Path(api.settings.database_url.removeprefix("sqlite:///"))
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
async def printed(leaky_api: Api) -> tuple[Api, dict[str, Any]]:
    """A finished run of the leaking DAG after two versions of the secret were put."""
    api = leaky_api
    await put(api, OLD)
    await put(api, VALUE)
    await api.publish(A, leaking_dag())
    api.start_worker()
    run = await api.start(A, "leaky")
    await api.wait(A, run["runId"])
    await api.stop_worker()
    return api, run


async def test_the_printed_step_was_redacted_not_dropped(
    printed: tuple[Api, dict[str, Any]],
) -> None:
    api, run = printed
    step = await api.get_json(A, f"/runs/{run['runId']}/steps/print")
    assert step["status"] == "succeeded", step
    logs = json.dumps(await api.get_json(A, f"/runs/{run['runId']}/steps/print/logs"))
    assert logs.count(REDACTED) >= 9 and "split " in logs
    failed = await api.get_json(A, f"/runs/{run['runId']}/steps/fail")
    assert failed["error"] is not None, failed
    assert failed["error"]["code"] == "PLUGIN_CRASHED"
    assert REDACTED in failed["error"]["message"]


async def test_no_form_of_any_version_is_in_the_store_files(
    printed: tuple[Api, dict[str, Any]],
) -> None:
    api, _ = printed
    data = store_files(api)
    assert found_in(data, [OLD, VALUE]) == []
    await api.orchestrator.close()  # checkpoints the WAL into the file
    assert found_in(store_files(api), [OLD, VALUE]) == []


async def test_no_form_is_in_the_ledger_export(printed: tuple[Api, dict[str, Any]]) -> None:
    api, _ = printed
    window = {"from": "2000-01-01T00:00:00.000Z", "to": "2999-01-01T00:00:00.000Z"}
    response = await api.client.get(f"{BASE}/ledger/export", params=window, headers=api.headers(A))
    assert response.status_code == 200 and response.content
    assert REDACTED.encode() in response.content
    assert found_in(response.content, [OLD, VALUE]) == []


async def test_no_form_is_in_the_service_log(
    leaky_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = leaky_api
    await put(api, VALUE)
    await api.publish(A, leaking_dag())
    api.start_worker()
    run = await api.start(A, "leaky")
    await api.wait(A, run["runId"])
    logging.getLogger("stellaorch.test").warning("echo %s", VALUE)  # what a careless line does
    formatter = line_formatter()
    lines = "\n".join(formatter.format(r) for r in caplog.records).encode()
    assert b"echo " + REDACTED.encode() in lines
    assert b"plugin crashed" in lines and b"bad token " + REDACTED.encode() in lines
    assert found_in(lines, [VALUE]) == []


async def dump_tables(api: Api) -> bytes:
    """Every row of every table of the store's schema as text (bytea as hex), like a dump."""
    tables = await api.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    rows: list[str] = []
    for table in sorted(t["table_name"] for t in tables):
        found = await api.sql(f'SELECT t::text AS row FROM "{table}" t')
        rows += [r["row"] for r in found]
    return "\n".join(rows).encode()


async def test_no_form_is_in_a_postgresql_dump(
    pg_store_url: Callable[[], str], keys_dir: Path
) -> None:
    async with open_api(pg_store_url(), keys_dir, sandbox="off") as api:
        api.orchestrator.plugins.register(CrashWithTheSecret())
        await put(api, OLD)
        await put(api, VALUE)
        await api.publish(A, leaking_dag())
        api.start_worker()
        run = await api.start(A, "leaky")
        await api.wait(A, run["runId"])
        await api.stop_worker()
        dump = await dump_tables(api)
    assert run["runId"].encode() in dump and REDACTED.encode() in dump
    hexes = [v.encode().hex().encode() for v in (OLD, VALUE)]
    assert found_in(dump, [OLD, VALUE]) == [] and not [h for h in hexes if h in dump]
