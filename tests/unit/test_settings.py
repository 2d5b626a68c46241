"""Settings from the environment: the worker's tenant filter and the scheduler lease."""

from __future__ import annotations

import pytest

from stellaorch.settings import Settings


def test_worker_tenants_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STELLA_ORCH_WORKER_TENANTS", "acme, beta,,")
    assert Settings().worker_tenants == ["acme", "beta"]


def test_no_worker_tenants_means_every_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STELLA_ORCH_WORKER_TENANTS", raising=False)
    assert Settings().worker_tenants == []


def test_a_list_is_taken_as_given() -> None:
    assert Settings(worker_tenants=["acme"]).worker_tenants == ["acme"]


def test_the_scheduler_lease_is_tunable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLA_ORCH_SCHEDULER_LEASE_TTL_SECONDS", "1.5")
    assert Settings().scheduler_lease_ttl_seconds == 1.5
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(scheduler_lease_ttl_seconds=0)


@pytest.mark.parametrize(
    ("name", "too_small", "too_large"),
    [
        ("api_max_header_bytes", 4095, 1024 * 1024 + 1),
        ("api_header_timeout_seconds", 0, 301),
        ("api_keep_alive_seconds", 0, 301),
        ("api_max_connections", 0, 100_001),
    ],
)
def test_the_api_connection_bounds_are_bounded(
    name: str, too_small: float, too_large: float
) -> None:
    for value in (too_small, too_large):
        with pytest.raises(ValueError, match=name):
            Settings(**{name: value})


@pytest.mark.parametrize(
    ("role", "allowed"), [("serve", True), ("api", False), ("worker", False), ("scheduler", False)]
)
def test_inline_scripts_default_by_process_role(
    monkeypatch: pytest.MonkeyPatch, role: str, allowed: bool
) -> None:
    monkeypatch.delenv("STELLA_ORCH_INLINE_SCRIPTS", raising=False)
    settings = Settings().for_role(role)
    assert settings.inline_scripts is allowed and settings.inline_scripts_enabled is allowed


def test_inline_scripts_unset_outside_a_service_role_are_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STELLA_ORCH_INLINE_SCRIPTS", raising=False)
    assert Settings().inline_scripts is None and Settings().inline_scripts_enabled


@pytest.mark.parametrize(("text", "allowed"), [("on", True), ("true", True), ("off", False)])
def test_the_operators_inline_scripts_setting_wins_over_the_role(
    monkeypatch: pytest.MonkeyPatch, text: str, allowed: bool
) -> None:
    monkeypatch.setenv("STELLA_ORCH_INLINE_SCRIPTS", text)
    for role in ("serve", "worker"):
        assert Settings().for_role(role).inline_scripts_enabled is allowed
