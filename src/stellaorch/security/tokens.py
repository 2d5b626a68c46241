"""Bearer tokens: verify JWTs offline (EdDSA, RS256 only) and issue local development tokens."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.errors import Unauthenticated, ValidationError
from stellaorch.security.keys import VerificationKey, load_signing_key

# The subject is the audit log's actor (a 200-character column): a longer one would pass
# here and then fail the admin change's write on PostgreSQL.
MAX_SUBJECT_CHARS = 200
DEFAULT_MAX_LIFETIME_SECONDS = 30 * 86400
RELOAD_SECONDS = 1.0  # the least time between two reads of the key directory
SCOPES = ("orchestrator:read", "orchestrator:write", "orchestrator:admin")
# Prometheus metrics only: a scraper's token reads /metrics and nothing else.
METRICS_SCOPE = "orchestrator:metrics"
# External workers: the worker API's routes (claim, heartbeat, progress, log, complete) only.
WORKER_SCOPE = "orchestrator:worker"
GRANTABLE_SCOPES = (*SCOPES, METRICS_SCOPE, WORKER_SCOPE)
# admin implies write implies read: an operator never needs three scopes for one job
_IMPLIED = {
    "orchestrator:admin": {
        "orchestrator:admin",
        "orchestrator:write",
        "orchestrator:read",
        METRICS_SCOPE,
        WORKER_SCOPE,
    },
    "orchestrator:write": {"orchestrator:write", "orchestrator:read"},
    "orchestrator:read": {"orchestrator:read"},
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: subject, the scopes granted and the tenants the token may act for."""

    subject: str
    scopes: frozenset[str]
    tenants: frozenset[str]

    def may_act_for(self, tenant: str) -> bool:
        """True when the token names this tenant (or every tenant with "*")."""
        return tenant in self.tenants or "*" in self.tenants


def effective_scopes(granted: Iterable[str]) -> frozenset[str]:
    """The granted scopes plus those they imply."""
    out: set[str] = set()
    for scope in granted:
        out |= _IMPLIED.get(scope, {scope})
    return frozenset(out)


class TokenVerifier:
    """Checks signature, algorithm, audience, issuer, lifetime and claim types, offline."""

    def __init__(
        self,
        keys: Mapping[str, VerificationKey],
        audience: str,
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
        *,
        max_lifetime_seconds: int = DEFAULT_MAX_LIFETIME_SECONDS,
        issuer: str | None = None,
        reload: Callable[[], Mapping[str, VerificationKey]] | None = None,
    ) -> None:
        self._keys = dict(keys)
        # Reads the keys again when a token names a kid not known yet (`keys generate` while
        # the API runs), at most once per RELOAD_SECONDS so unknown kids cannot flood the disk.
        self._reload = reload
        self._reloaded_at = 0.0
        self._audience = audience
        self._max_lifetime = max_lifetime_seconds
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> Principal:
        """The principal behind a valid token; raises Unauthenticated otherwise."""
        # A signature check costs far more than the request it guards; a token already
        # verified stays valid until its exp, so remember it until then.
        hit = self._cache.get(token)
        if hit is not None and time.time() < hit[1] + self._leeway:
            return hit[0]
        principal, expires = self._verify(token)
        self._cache[token] = (principal, expires)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed bearer token") from exc
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("bearer token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("bearer token is for another audience") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"bearer token rejected: {exc}") from exc
        expires = _check_lifetime(claims, self._max_lifetime)
        return _principal(claims), expires

    def _key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ("EdDSA", "RS256"):
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        key = self._keys.get(str(kid)) if kid else None
        if key is None and kid and self._reload_keys():
            key = self._keys.get(str(kid))
        if key is None and not kid:
            matching = [k for k in self._keys.values() if k.algorithm == alg]
            key = matching[0] if len(matching) == 1 else None
        if key is None or key.algorithm != alg:
            raise Unauthenticated("token is not signed by a trusted key")
        return key

    def _reload_keys(self) -> bool:
        """Read the keys again unless that was done less than RELOAD_SECONDS ago."""
        now = time.monotonic()
        if self._reload is None or now - self._reloaded_at < RELOAD_SECONDS:
            return False
        self._reloaded_at = now
        self._keys = dict(self._reload())
        return True


def _epoch_seconds(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim as a number; PyJWT alone would take "123" or true through int()."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unauthenticated(f"token claim {name!r} must be a number of seconds since the epoch")
    return float(value)


def _check_lifetime(claims: Mapping[str, Any], max_lifetime: int) -> float:
    """The token's expiry; a token minted to outlive the cap is refused, however valid now."""
    _epoch_seconds(claims, "nbf")
    issued, expires = _epoch_seconds(claims, "iat"), _epoch_seconds(claims, "exp")
    if issued is None or expires is None:  # both required by decode; kept for the types
        raise Unauthenticated("bearer token needs 'iat' and 'exp' claims")
    if expires - issued > max_lifetime:
        raise Unauthenticated(f"bearer token lives longer than the {max_lifetime} s allowed")
    return expires


def _strings(claims: Mapping[str, Any], name: str, *, split: bool) -> list[str]:
    """A claim given as a string (split on spaces, or as one item) or a list of strings."""
    value = claims.get(name, [])
    if isinstance(value, str):
        return value.split() if split else [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise Unauthenticated(f"token claim {name!r} must be a string or a list of strings")


def _subject(claims: Mapping[str, Any]) -> str:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise Unauthenticated("token claim 'sub' must be a non-empty string")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise Unauthenticated(f"token claim 'sub' is longer than {MAX_SUBJECT_CHARS} characters")
    return subject


def _principal(claims: Mapping[str, Any]) -> Principal:
    # A dict or a number where a list is expected is refused, never iterated: iterating
    # {"orchestrator:admin": false} would grant admin.
    return Principal(
        subject=_subject(claims),
        scopes=effective_scopes(_strings(claims, "scope", split=True)),
        tenants=frozenset(_strings(claims, "tenants", split=False)),
    )


def issue_token(
    keys_dir: Path,
    *,
    subject: str,
    tenants: list[str],
    scopes: list[str],
    audience: str,
    ttl_seconds: int = 3600,
    now: float | None = None,
    issuer: str | None = None,
) -> str:
    """Sign a token with the directory's local key (development and air-gapped setups)."""
    unknown = [s for s in scopes if s not in GRANTABLE_SCOPES]
    if unknown:
        known = ", ".join(GRANTABLE_SCOPES)
        raise ValidationError(f"unknown scope(s): {', '.join(unknown)}; use {known}")
    if not tenants:
        raise ValidationError("a token needs at least one tenant")
    kid, key = load_signing_key(keys_dir)
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "scope": " ".join(scopes),
        "tenants": tenants,
    }
    if issuer is not None:
        claims["iss"] = issuer
    alg = "EdDSA" if isinstance(key, Ed25519PrivateKey) else "RS256"
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
