"""Settings for a CLI invocation: flags override STELLA_ORCH_* variables and the TOML file."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from stellaorch.cli.errors import SettingsInvalid
from stellaorch.settings import Settings

# Which flag sets which setting, for error messages that name what the user typed.
_FLAGS = {
    "database_url": "--db",
    "default_tenant": "--tenant",
    "worker_concurrency": "--concurrency",
    "worker_tenants": "--tenants",
    "metrics_port": "--metrics-port",
    "api_host": "--host",
    "api_port": "--port",
    "keys_dir": "--dir",
    "trust_dir": "--trust-dir",
    "insecure_dev": "--insecure-dev",
}
# Flag name (as the commands call their parameters) -> setting it overrides.
_SETTING_OF = {
    "db": "database_url",
    "tenant": "default_tenant",
    "concurrency": "worker_concurrency",
    "tenants": "worker_tenants",
    "metrics_port": "metrics_port",
    "host": "api_host",
    "port": "api_port",
    "keys_dir": "keys_dir",
    "trust_dir": "trust_dir",
    "insecure_dev": "insecure_dev",
}


def build_settings(**flags: Any) -> Settings:
    """Settings with the flags applied (None keeps the configured value); rejects raise."""
    overrides: dict[str, Any] = {
        _SETTING_OF[name]: value for name, value in flags.items() if value is not None
    }
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        raise SettingsInvalid(_describe(exc, overrides)) from None


def _describe(exc: PydanticValidationError, overrides: dict[str, Any]) -> str:
    """`name (source): reason` for each rejected setting, on one line."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "settings"
        source = _FLAGS[name] if name in overrides else f"STELLA_ORCH_{name.upper()}"
        parts.append(f"{name} ({source}): {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
