"""`stella orch token issue` signs only tokens the server will accept: lifetime and issuer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jwt
import pytest

from stellaorch.cli.credentials import TokenGrant, issue
from stellaorch.domain.errors import ValidationError
from stellaorch.security.keys import generate_key
from stellaorch.settings import Settings

ADMIN = "orchestrator:admin"


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with a fresh key directory."""
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir)
    return Settings(keys_dir=keys_dir, **overrides)


def issued_claims(
    settings: Settings, ttl: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """Run `token issue` and decode (without verifying) what it printed."""
    asyncio.run(issue(settings, TokenGrant(["acme"], [ADMIN], "bob", ttl)))
    token = capsys.readouterr().out.strip()
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_ttl_beyond_the_server_lifetime_cap_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, token_max_lifetime_seconds=3600)
    with pytest.raises(ValidationError, match="TOKEN_MAX_LIFETIME"):
        asyncio.run(issue(settings, TokenGrant(["acme"], [ADMIN], "bob", "2h")))


def test_ttl_within_the_cap_is_issued(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path, token_max_lifetime_seconds=3600)
    claims = issued_claims(settings, "1h", capsys)
    assert claims["exp"] - claims["iat"] == 3600
    assert "iss" not in claims


def test_configured_issuer_is_written_into_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, token_issuer="https://idp.example")
    assert issued_claims(settings, "1h", capsys)["iss"] == "https://idp.example"


def test_lifetime_cap_has_bounds() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 60"):
        Settings(token_max_lifetime_seconds=59)
