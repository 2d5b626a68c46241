"""Alert rules in the domain: URL checks, rule shapes, secret references, signature, backoff."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.alerts import (
    RETRY_MAX_US,
    AlertKind,
    AlertRule,
    AlertRuleInvalid,
    check_rule,
    check_url,
    retry_at_us,
    secret_name_of,
    signature,
)
from stellaorch.domain.secrets import SecretInvalid


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://hooks.example.internal/stella?team=ops",
        "https://[::1]:9443/x",
    ],
)
def test_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https:///no-host",
        "https://user:secret@hooks.example/x",
        "https://hooks.example:99999/x",
        "https://hooks.example:0/x",
        "https://hooks.example/a b",
        "https://hooks.example/\x00",
        "https://hooks.example/" + "a" * 2048,
        "hooks.example/x",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(AlertRuleInvalid):
        check_url(url)


def rule(kind: AlertKind, **kw: object) -> AlertRule:
    """A rule of `kind` with a valid URL, overridden by `kw`."""
    return AlertRule(tenant="acme", rule_id="r", kind=kind, url="https://h.example/x", **kw)  # type: ignore[arg-type]


def test_threshold_kinds_need_a_threshold_and_no_dag() -> None:
    with pytest.raises(AlertRuleInvalid, match="threshold"):
        check_rule(rule(AlertKind.BACKLOG))
    with pytest.raises(AlertRuleInvalid, match="dagId"):
        check_rule(rule(AlertKind.DEADLETTER_GROWTH, threshold=1, dag_id="etl"))
    assert check_rule(rule(AlertKind.BACKLOG, threshold=0)).threshold == 0


def test_run_failed_takes_no_threshold_and_ids_are_bounded() -> None:
    with pytest.raises(AlertRuleInvalid, match="no threshold"):
        check_rule(rule(AlertKind.RUN_FAILED, threshold=3))
    with pytest.raises(AlertRuleInvalid, match="rule id"):
        check_rule(AlertRule("acme", "Bad Id", AlertKind.RUN_FAILED, "https://h.example/x"))
    with pytest.raises(AlertRuleInvalid, match="windowSeconds"):
        check_rule(rule(AlertKind.RUN_FAILED, window_seconds=1))


def test_secret_references_name_a_secret() -> None:
    assert secret_name_of("${secrets.hook-key}") == "hook-key"
    assert secret_name_of("hook-key") == "hook-key"
    assert secret_name_of(None) is None
    with pytest.raises(SecretInvalid):
        secret_name_of("${secrets.}")


def test_the_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"kind":"run.failed"}'
    expected = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert signature(body, "k3y") == f"sha256={expected}"
    assert signature(body + b" ", "k3y") != signature(body, "k3y")


@given(st.integers(min_value=1, max_value=1_000), st.integers(min_value=1, max_value=10**7))
def test_retries_wait_longer_each_time_up_to_the_cap(attempts: int, initial_us: int) -> None:
    now = 10**15
    this, after = retry_at_us(now, attempts, initial_us), retry_at_us(now, attempts + 1, initial_us)
    assert now < this <= after <= now + RETRY_MAX_US
