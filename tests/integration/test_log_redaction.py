"""Credentials in a request (the stream's `?access_token=`) never reach a log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

pytest.register_assert_rewrite("served_api")
from served_api import BASE, TENANT, served  # noqa: E402

from stellaorch.observability.logs import line_formatter  # noqa: E402
from stellaorch.observability.redaction import REDACTED  # noqa: E402

SECRET = "SECRETVALUE"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every message the server logged (the test's own httpx client logs its URLs too)."""
    return [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]


async def test_access_log_redacts_access_token_of_an_http_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with served(tmp_path) as api, httpx.AsyncClient() as client:
        response = await client.get(f"{api.url}{BASE}/runs?access_token={SECRET}&limit=5")
        assert response.status_code == 401
    rendered = [line_formatter().format(r) for r in caplog.records]
    assert all(SECRET not in line for line in rendered + lines(caplog))
    # One structured access line, naming the route template (no query string at all).
    access = [json.loads(line) for line in rendered if json.loads(line)["event"] == "request"]
    assert [(a["route"], a["status"]) for a in access] == [(f"{BASE}/runs", 401)]


async def test_access_log_redacts_the_token_of_a_stream_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with served(tmp_path) as api:
        token = api.token()
        url = f"{api.ws_url}/runs/stream?access_token={token}&tenant={TENANT}"
        async with connect(url):
            pass
    accepted = [line for line in lines(caplog) if "/runs/stream" in line]
    assert accepted, lines(caplog)
    assert all(token not in line for line in lines(caplog))
    assert f"access_token={REDACTED}&tenant={TENANT}" in accepted[0]
