"""What the log redaction replaces, and that the service's log handler applies it to every
logger's records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from stellaorch.observability.logs import configure_logging
from stellaorch.observability.redaction import REDACTED, redact

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/s?access_token=abc&tenant=acme", f"/s?access_token={REDACTED}&tenant=acme"),
        ("/s?tenant=acme&token=abc", f"/s?tenant=acme&token={REDACTED}"),
        ("/s?Authorization=Bearer%20abc", f"/s?Authorization={REDACTED}"),
        ("/s?access%5Ftoken=abc", f"/s?access%5Ftoken={REDACTED}"),
        ("/s?id_token=abc&client_secret=xyz", f"/s?id_token={REDACTED}&client_secret={REDACTED}"),
        ("/s?api_key=abc", f"/s?api_key={REDACTED}"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}"),
        ("basic YWxpY2U6c2VjcmV0", f"basic {REDACTED}"),
        (f"token was {JWT} here", f"token was {REDACTED} here"),
    ],
)
def test_credentials_are_replaced_by_the_marker(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text", ["/runs?tenant=acme&after=12&dagId=d", "step.completed run_id=r1", "a bearer of news"]
)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """configure_logging() for one test, its handler writing here; the root is restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("info")
    sink = io.StringIO()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)
    yield sink
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_service_log_lines_never_carry_a_credential(service_log: io.StringIO) -> None:
    log = logging.getLogger("some.library")
    log.info("calling with Authorization: Bearer %s", "SECRETVALUE")
    log.info("request.sent", extra={"url": "/x?access_token=SECRETVALUE"})
    try:
        raise RuntimeError(f"rejected {JWT}")
    except RuntimeError:
        log.exception("request.failed")
    written = service_log.getvalue()
    assert "SECRETVALUE" not in written and JWT not in written
    docs = [json.loads(line) for line in written.splitlines()]
    assert docs[0]["event"] == f"calling with Authorization: Bearer {REDACTED}"
    assert docs[1]["url"] == f"/x?access_token={REDACTED}"
    assert REDACTED in docs[2]["exception"]
