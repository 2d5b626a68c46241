"""The CLI's --reason and --ticket fit the server's header bounds before anything is sent."""

from __future__ import annotations

import pytest

from stellaorch.cli.dags import OperatorNote
from stellaorch.cli.errors import UsageInvalid


def test_reason_and_ticket_at_their_limits_become_headers() -> None:
    headers = OperatorNote("r" * 1024, "T" * 128).headers()
    assert headers == {
        "X-Stella-Operator-Reason": "r" * 1024,
        "X-Stella-Operator-Ticket": "T" * 128,
    }


@pytest.mark.parametrize(
    ("note", "flag"),
    [(OperatorNote("r" * 1025), "--reason"), (OperatorNote("why", "T" * 129), "--ticket")],
)
def test_overlong_reason_or_ticket_is_a_usage_error(note: OperatorNote, flag: str) -> None:
    with pytest.raises(UsageInvalid, match=f"{flag} must be at most"):
        note.headers()
