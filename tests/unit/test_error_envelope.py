"""The API's error body: one shape for handlers, middleware and the HTTP guard."""

from __future__ import annotations

from stellaorch.domain.errors import error_envelope


def test_the_envelope_carries_code_message_and_trace_id() -> None:
    assert error_envelope("NOT_FOUND", "no such run", "abc") == {
        "error": {"code": "NOT_FOUND", "message": "no such run", "traceId": "abc"}
    }


def test_details_appear_only_when_there_are_some() -> None:
    assert "details" not in error_envelope("X", "m", "t", {})["error"]
    assert error_envelope("X", "m", "t", {"errors": []})["error"]["details"] == {"errors": []}
