"""Redaction of secret values: every encoding, values cut by log truncation, JSON trees, logs."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from stellaorch.domain.secrets import SecretInvalid, check_secret_name, check_secret_value
from stellaorch.domain.templating import secret_names
from stellaorch.observability.logs import line_formatter
from stellaorch.observability.secret_values import (
    REDACTED,
    KnownSecrets,
    ValueRedactor,
    encodings,
)
from stellaorch.plugins.capture import LogBuffer

VALUE = 'pa ss/w+rd "é"\\x'


@pytest.mark.parametrize(
    "form",
    [
        VALUE,
        base64.b64encode(VALUE.encode()).decode(),
        base64.urlsafe_b64encode(VALUE.encode()).decode().rstrip("="),
        quote(VALUE, safe=""),
        quote_plus(VALUE),
        json.dumps(VALUE)[1:-1],
        json.dumps(VALUE, ensure_ascii=False)[1:-1],
        VALUE.encode().hex(),
    ],
)
def test_each_encoding_of_a_value_is_redacted(form: str) -> None:
    assert ValueRedactor([VALUE]).text(f"before {form} after") == f"before {REDACTED} after"


def test_every_value_given_is_redacted_and_other_text_kept() -> None:
    redactor = ValueRedactor(["old-one", "new-one"])
    assert redactor.text("old-one, new-one, other") == f"{REDACTED}, {REDACTED}, other"


def test_a_value_cut_by_the_log_cap_is_redacted_in_part() -> None:
    buffer = LogBuffer(limit=1024)
    buffer.add_line(b"x" * 1010 + VALUE.encode())
    text = buffer.text()
    assert VALUE[:8] in text  # the cut left the first part of the value in the log
    cleaned = ValueRedactor([VALUE]).text(text)
    assert VALUE[:4] not in cleaned.split("\n")[0][-20:]
    assert cleaned.startswith("x" * 1010 + REDACTED) and "log truncated" in cleaned


def test_json_trees_are_redacted_in_keys_and_values() -> None:
    tree = {"a": VALUE, VALUE: [1, f"x{VALUE}"], "n": 3}
    assert ValueRedactor([VALUE]).tree(tree) == {
        "a": REDACTED,
        REDACTED: [1, f"x{REDACTED}"],
        "n": 3,
    }


def test_nothing_to_redact_changes_nothing() -> None:
    redactor = ValueRedactor([])
    assert not redactor and redactor.text(VALUE) == VALUE


def test_encodings_leave_out_empty_forms() -> None:
    assert "" not in encodings("a")


def test_known_secrets_redact_log_lines_once_resolved() -> None:
    known = KnownSecrets()
    assert known.redact(VALUE) == VALUE
    known.add([VALUE])
    assert known.redact(f"saw {VALUE}") == f"saw {REDACTED}"


def test_the_json_log_line_never_holds_a_resolved_value() -> None:
    from stellaorch.observability.secret_values import KNOWN_SECRETS

    KNOWN_SECRETS.add([VALUE])
    record = logging.makeLogRecord({"msg": "got %s", "args": (VALUE,), "levelno": 30})
    record.detail = {"nested": VALUE}
    line = line_formatter().format(record)
    assert REDACTED in line and VALUE not in line and json.dumps(VALUE)[1:-1] not in line


@pytest.mark.parametrize("name", ["", "a" * 129, "has space", "slash/", "ünicode", "semi;colon"])
def test_bad_secret_names_are_refused(name: str) -> None:
    with pytest.raises(SecretInvalid):
        check_secret_name(name)


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "0" * 128])
def test_good_secret_names_pass(name: str) -> None:
    assert check_secret_name(name) == name


def test_empty_and_oversize_values_are_refused_without_echoing_them() -> None:
    with pytest.raises(SecretInvalid):
        check_secret_value(b"", 10)
    with pytest.raises(SecretInvalid) as caught:
        check_secret_value(b"x" * 11 + b"SECRET", 10)
    assert "SECRET" not in caught.value.message


def test_secret_names_of_a_parameter_tree_are_sorted_and_unique() -> None:
    params = {"env": {"A": "${secrets.b}", "B": "x${secrets.a.c}y"}, "h": ["${secrets.b}"]}
    assert secret_names(params) == ("a.c", "b")
