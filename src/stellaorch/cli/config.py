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
}


def build_settings(
    *, db: str | None = None, tenant: str | None = None, concurrency: int | None = None
) -> Settings:
    """Settings with the given flags applied; a rejected value is a SettingsInvalid."""
    given = {"database_url": db, "default_tenant": tenant, "worker_concurrency": concurrency}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
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
