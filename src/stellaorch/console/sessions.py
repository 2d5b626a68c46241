"""Console sign-ins: one-time links and cookie sessions, kept in memory under their hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

LINK_TTL_SECONDS = 300
SESSION_TTL_SECONDS = 8 * 3600
MAX_ENTRIES = 10_000  # links plus sessions; the oldest go first beyond this


def digest(secret: str) -> str:
    """The key a secret is stored under: its SHA-256, so a memory dump holds no usable id."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the token it signed in with, its tenant and its CSRF secret."""

    token: str
    tenant: str
    tenants: tuple[str, ...]  # the token's tenants ("*": any), for the switcher
    csrf: str
    expires_at: float

    def csrf_ok(self, sent: str | None) -> bool:
        """True when a form's CSRF field matches this session's (constant time)."""
        return bool(sent) and hmac.compare_digest(self.csrf, sent or "")


@dataclass(frozen=True)
class _Link:
    token: str
    tenant: str
    expires_at: float


class SessionStore:
    """Links (single use, short-lived) and sessions; only hashes of their ids are kept."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._links: dict[str, _Link] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def mint_link(self, token: str, tenant: str) -> tuple[str, float]:
        """A fresh one-time link code for this token and tenant, and when it expires."""
        code = secrets.token_urlsafe(32)
        expires = self._now() + LINK_TTL_SECONDS
        with self._lock:
            self._prune()
            self._links[digest(code)] = _Link(token, tenant, expires)
        return code, expires

    def redeem_link(self, code: str) -> tuple[str, str] | None:
        """The token and tenant behind a link, once; None when unknown, used or expired."""
        with self._lock:
            link = self._links.pop(digest(code), None)
        if link is None or link.expires_at <= self._now():
            return None
        return link.token, link.tenant

    def open(self, token: str, tenant: str, tenants: tuple[str, ...]) -> tuple[str, Session]:
        """A new session id (for the cookie) and its session."""
        sid = secrets.token_urlsafe(32)
        expires = self._now() + SESSION_TTL_SECONDS
        session = Session(token, tenant, tenants, secrets.token_urlsafe(24), expires)
        with self._lock:
            self._prune()
            self._sessions[digest(sid)] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session behind a cookie value, if any."""
        if not sid or len(sid) > 128:
            return None
        with self._lock:
            session = self._sessions.get(digest(sid))
        if session is None or session.expires_at <= self._now():
            return None
        return session

    def switch(self, sid: str, tenant: str) -> None:
        """Point a session at another tenant (the caller checked the token may act for it)."""
        key = digest(sid)
        with self._lock:
            if key in self._sessions:
                self._sessions[key] = replace(self._sessions[key], tenant=tenant)

    def close(self, sid: str | None) -> None:
        """Forget a session (sign-out)."""
        if sid:
            with self._lock:
                self._sessions.pop(digest(sid), None)

    def _prune(self) -> None:
        now = self._now()
        for table in (self._links, self._sessions):
            for key in [k for k, v in table.items() if v.expires_at <= now]:
                del table[key]
        while len(self._links) + len(self._sessions) >= MAX_ENTRIES:
            table = self._links if self._links else self._sessions
            del table[next(iter(table))]
