"""Local signing keys and development tokens: `keys generate`, `token issue`, first-start keys."""

from __future__ import annotations

import getpass
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.cli.dags import local_signing_key
from stellaorch.cli.output import say, warn
from stellaorch.domain.errors import ValidationError
from stellaorch.security.keys import generate_key, load_verification_keys
from stellaorch.security.tokens import issue_token
from stellaorch.security.trust import TrustStore
from stellaorch.settings import Settings

DEFAULT_KEYS_DIR = Path(".stella/keys")
_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_SECONDS = 366 * 86400


def parse_ttl(text: str) -> int:
    """Seconds from `3600`, `90s`, `30m`, `12h` or `7d`."""
    match = _TTL.match(text.strip())
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ValidationError(f"--ttl {text!r}: give 1s to 366d, as 3600, 90s, 30m, 12h or 7d")
    return seconds


def default_subject() -> str:
    """Who the token is for when --subject is not given: the local user."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "local-user"  # no user name in this environment (some containers)


@dataclass(frozen=True)
class TokenGrant:
    """What `token issue` was asked to sign."""

    tenants: list[str]
    scopes: list[str]
    subject: str | None = None
    ttl: str = "1h"


async def generate(settings: Settings) -> None:
    """Create a key pair in the keys directory and print its kid (only that, on stdout)."""
    say(generate_key(settings.keys_dir))


async def issue(settings: Settings, grant: TokenGrant) -> None:
    """Sign a token with the newest local key and print it (only that, on stdout)."""
    ttl_seconds = parse_ttl(grant.ttl)
    if ttl_seconds > settings.token_max_lifetime_seconds:
        # the server would refuse it: say so now rather than at the first call
        raise ValidationError(
            f"--ttl {grant.ttl!r} exceeds STELLA_ORCH_TOKEN_MAX_LIFETIME_SECONDS "
            f"({settings.token_max_lifetime_seconds} s)"
        )
    token = issue_token(
        settings.keys_dir,
        subject=grant.subject or default_subject(),
        tenants=grant.tenants,
        scopes=grant.scopes,
        audience=settings.audience,
        ttl_seconds=ttl_seconds,
        issuer=settings.token_issuer,
    )
    say(token)


def prepare_auth(settings: Settings) -> None:
    """Before the API starts: warn about insecure mode, or make a first signing key."""
    if settings.insecure_dev:
        warn(
            "WARNING: INSECURE DEV MODE (--insecure-dev): the API checks no tokens and treats "
            "every caller as admin of every tenant. Never use it beyond a development machine."
        )
        return
    if load_verification_keys(settings.keys_dir):
        return
    kid = generate_key(settings.keys_dir)
    where = "" if settings.keys_dir == DEFAULT_KEYS_DIR else f" --dir {settings.keys_dir}"
    say(f"generated signing key {kid} in {settings.keys_dir}")
    say(
        f"get a token: {stella_command()} orch token issue{where} "
        f"--tenant {settings.default_tenant} --scope orchestrator:admin"
    )


def prepare_dag_signing(settings: Settings) -> Ed25519PrivateKey:
    """`serve`'s development signing key: the newest local Ed25519 key (made if none), trusted.

    `serve` signs the DAGs of `--dags` with it, and `stella orch dag publish` run with the
    same key directory signs with it too, so the quick start works with signatures required.
    """
    key = local_signing_key(None, settings.keys_dir)
    if key is None:
        generate_key(settings.keys_dir)
        key = local_signing_key(None, settings.keys_dir)
        assert key is not None
    trusted = TrustStore(settings.trust_directory).add_public(key.public_key())
    say(f"DAG signing key {trusted.key_id} trusted in {settings.trust_directory}")
    return key


def stella_command() -> str:
    """How this shell can call the CLI: `stella` when it is on PATH, else the launcher this
    process was started by (`.venv/bin/stella`), else the module through this interpreter."""
    if shutil.which("stella"):
        return "stella"
    launcher = Path(sys.argv[0])
    if launcher.name == "stella":
        return str(launcher)
    return f"{sys.executable} -m stellaorch.cli.main"
