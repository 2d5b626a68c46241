"""Redacting a log as it streams: a value split across reads is never written in the clear."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from stellaorch.observability.secret_values import REDACTED, ValueRedactor

SECRET = "pa55-w0rd/+="
REDACTOR = ValueRedactor([SECRET])


def streamed(pieces: list[str]) -> tuple[list[str], str]:
    """What a live log writes for `pieces` read one after another: (writes, end)."""
    held, writes = "", []
    for piece in pieces:
        final, held = REDACTOR.split_live(held + piece)
        writes.append(final)
    return writes, REDACTOR.finish_live(held)


def test_a_value_split_in_two_reads_is_held_then_redacted() -> None:
    writes, end = streamed(["token pa55-", "w0rd/+= done\n"])
    assert writes == ["token ", f"{REDACTED} done\n"]
    assert end == ""


def test_a_first_part_left_at_the_end_is_redacted() -> None:
    assert streamed(["cut off pa55-w"]) == (["cut off "], REDACTED)


def test_text_that_cannot_start_a_value_is_written_at_once() -> None:
    assert REDACTOR.split_live("first line\n") == ("first line\n", "")


@given(
    st.lists(st.sampled_from(["a", "pa5", "5-w0", "rd/+", "=", "\n", SECRET, "x y"]), max_size=12),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_streamed_redaction_equals_redacting_the_whole(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts) + "\n"
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    writes, end = streamed(pieces)
    joined = "".join(writes) + end
    assert joined == REDACTOR.text(text)
    assert SECRET not in joined
