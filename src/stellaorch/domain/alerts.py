"""Alert rules as the domain sees them: kinds, validation, the signed payload, the backoff.

A rule watches one tenant for one kind of trouble and posts a JSON payload to an
operator-configured webhook. Everything here is pure, so any process reaches the same
decision, signature and retry time for the same delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from stellaorch.domain.errors import ValidationError
from stellaorch.domain.secrets import check_secret_name

MAX_URL_CHARS = 2_048
MAX_THRESHOLD = 1_000_000
MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS = 60, 7 * 86_400
DEFAULT_WINDOW_SECONDS = 3_600
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SECRET_REF = re.compile(r"\$\{secrets\.([A-Za-z0-9_.-]{1,128})\}")
SIGNATURE_HEADER = "X-Stella-Signature"  # "sha256=<hex HMAC-SHA256 of the body>"
RETRY_MAX_US = 300_000_000
MAX_PAYLOAD_BYTES = 64 * 1024


class AlertKind(StrEnum):
    """What a rule watches."""

    RUN_FAILED = "run.failed"  # every failed run (of one DAG, when dagId is set)
    DEADLETTER_GROWTH = "deadletter.growth"  # more than `threshold` failed steps in the window
    BACKLOG = "backlog"  # more than `threshold` queued steps


class DeliveryStatus(StrEnum):
    """Where one delivery stands."""

    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed; no more tries


class AlertRuleInvalid(ValidationError):
    """A rule that can never be stored as given."""

    code = "ALERT_RULE_INVALID"


@dataclass(frozen=True)
class AlertRule:
    """One notification rule of a tenant."""

    tenant: str
    rule_id: str
    kind: AlertKind
    url: str
    dag_id: str | None = None
    threshold: int | None = None
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    secret_name: str | None = None  # the HMAC key, from the secret store; None: unsigned


def check_url(url: str) -> str:
    """An absolute http(s) URL of bounded length with a host and no credentials in it."""
    if len(url) > MAX_URL_CHARS:
        raise AlertRuleInvalid(f"a webhook URL is at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise AlertRuleInvalid(f"the webhook URL is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertRuleInvalid("a webhook URL is http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise AlertRuleInvalid("a webhook URL must not hold credentials; sign with --secret")
    if any(c.isspace() or ord(c) < 32 for c in url) or port == 0:
        raise AlertRuleInvalid("the webhook URL holds spaces, control characters or port 0")
    return url


def secret_name_of(ref: str | None) -> str | None:
    """The secret name of `NAME` or `${secrets.NAME}` (None stays None)."""
    if ref is None:
        return None
    found = SECRET_REF.fullmatch(ref)
    return check_secret_name(found.group(1) if found else ref)


def check_rule(rule: AlertRule) -> AlertRule:
    """The rule when its fields fit its kind; AlertRuleInvalid names what does not."""
    if not RULE_ID.fullmatch(rule.rule_id):
        raise AlertRuleInvalid("a rule id is 1 to 64 characters of a-z 0-9 . _ - (first a-z 0-9)")
    check_url(rule.url)
    if rule.kind is AlertKind.RUN_FAILED:
        if rule.threshold is not None:
            raise AlertRuleInvalid("run.failed takes no threshold: every failed run alerts")
    else:
        if rule.dag_id is not None:
            raise AlertRuleInvalid(f"{rule.kind.value} covers the whole tenant: no dagId")
        if rule.threshold is None or not 0 <= rule.threshold <= MAX_THRESHOLD:
            raise AlertRuleInvalid(f"{rule.kind.value} needs a threshold in 0..{MAX_THRESHOLD}")
    if not MIN_WINDOW_SECONDS <= rule.window_seconds <= MAX_WINDOW_SECONDS:
        raise AlertRuleInvalid(
            f"windowSeconds must be between {MIN_WINDOW_SECONDS} and {MAX_WINDOW_SECONDS}"
        )
    return rule


def signature(body: bytes, key: str) -> str:
    """The value of the signature header: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def retry_at_us(now_us: int, attempts: int, initial_us: int) -> int:
    """When the next attempt of a delivery that failed `attempts` times is due (doubling)."""
    delay: int = initial_us << max(0, min(attempts - 1, 20))
    return now_us + min(delay, RETRY_MAX_US)
