"""Who is calling and for which tenant: bearer token, tenant header, scope, operator reason."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import (
    ScopeRequired,
    TenantForbidden,
    TenantRequired,
    Unauthenticated,
    ValidationError,
)
from stellaorch.domain.limits import (
    MAX_OPERATOR_REASON_CHARS,
    MAX_OPERATOR_TICKET_CHARS,
    bounded_header,
)
from stellaorch.security.tokens import (
    GRANTABLE_SCOPES,
    METRICS_SCOPE,
    SCOPES,
    WORKER_SCOPE,
    Principal,
    TokenVerifier,
)
from stellaorch.settings import Settings

READ, WRITE, ADMIN = SCOPES
METRICS = METRICS_SCOPE
WORKER = WORKER_SCOPE
# A scrape without X-Stella-Tenant by a token for every tenant: the scrape covers them all.
EVERY_TENANT = "*"
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_bearer = HTTPBearer(auto_error=False, description="JWT signed by a key in the local JWKS")


@dataclass(frozen=True)
class Caller:
    """An authenticated principal acting for one tenant."""

    principal: Principal
    tenant: str
    reason: str | None = None
    ticket: str | None = None

    @property
    def actor(self) -> str:
        """The subject recorded in the audit log."""
        return self.principal.subject

    @property
    def operator(self) -> Operator:
        """Who asks for an admin change and why, as the engine's audit entries record it."""
        return Operator(self.actor, self.reason or "", self.ticket)


class Authenticator:
    """Checks tokens and tenants for every route; `insecure` trusts everyone (loudly)."""

    def __init__(self, settings: Settings, verifier: TokenVerifier | None) -> None:
        self._verifier = verifier
        self._allowlist = frozenset(settings.tenants)

    def principal(self, token: str | None) -> Principal:
        """The principal behind a bearer token."""
        if self._verifier is None:
            return Principal("insecure-dev", frozenset(GRANTABLE_SCOPES), frozenset({"*"}))
        if not token:
            raise Unauthenticated("a bearer token is required")
        return self._verifier.verify(token)

    def tenant(self, principal: Principal, tenant: str | None) -> str:
        """The tenant the call acts for, if the server serves it and the token may use it."""
        if not tenant:
            raise TenantRequired("the X-Stella-Tenant header is required")
        if not TENANT_ID.match(tenant):
            raise TenantForbidden("tenant id is not valid")
        if self._allowlist and tenant not in self._allowlist:
            raise TenantForbidden(f"tenant {tenant} is not served here")
        if not principal.may_act_for(tenant):
            raise TenantForbidden(f"the token may not act for tenant {tenant}")
        return tenant

    def check(self, token: str | None, tenant: str | None, scope: str) -> Caller:
        """Authenticate, then authorise tenant and scope, in that order (401 before 403)."""
        principal = self.principal(token)
        return self._scoped(principal, self.tenant(principal, tenant), scope)

    def check_scrape(self, token: str | None, tenant: str | None) -> Caller:
        """`check` for metrics, where a scraper may leave the tenant header out.

        Without it a token for every tenant scrapes them all (tenant EVERY_TENANT) and a
        token for one tenant scrapes that one; a token for several must name one.
        """
        principal = self.principal(token)
        if tenant:
            chosen = self.tenant(principal, tenant)
        elif "*" in principal.tenants:
            chosen = EVERY_TENANT
        elif len(principal.tenants) == 1:
            chosen = self.tenant(principal, next(iter(principal.tenants)))
        else:
            raise TenantRequired("the token names several tenants: send X-Stella-Tenant")
        return self._scoped(principal, chosen, METRICS)

    @staticmethod
    def _scoped(principal: Principal, tenant: str, scope: str) -> Caller:
        if scope not in principal.scopes:
            raise ScopeRequired(f"this call needs the {scope} scope")
        return Caller(principal, tenant)


def require(scope: str, *, operator_reason: bool = False) -> Callable[..., Awaitable[Caller]]:
    """A route dependency: the caller must hold `scope` for the requested tenant."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_stella_tenant: Annotated[str | None, Header()] = None,
        x_stella_operator_reason: Annotated[str | None, Header()] = None,
        x_stella_operator_ticket: Annotated[str | None, Header()] = None,
    ) -> Caller:
        auth: Authenticator = request.app.state.auth
        token = credentials.credentials if credentials else None
        caller = auth.check(token, x_stella_tenant, scope)
        reason, ticket = _operator_note(x_stella_operator_reason, x_stella_operator_ticket)
        if operator_reason and reason is None:
            raise ValidationError(
                "admin changes need a reason in the X-Stella-Operator-Reason header"
            )
        return Caller(caller.principal, caller.tenant, reason, ticket)

    return dependency


def _operator_note(reason: str | None, ticket: str | None) -> tuple[str | None, str | None]:
    """Reason and ticket as the audit log keeps them; bounded, the log is not a file store."""
    reason = bounded_header("X-Stella-Operator-Reason", reason, MAX_OPERATOR_REASON_CHARS)
    ticket = bounded_header("X-Stella-Operator-Ticket", ticket, MAX_OPERATOR_TICKET_CHARS)
    return (reason or "").strip() or None, ticket


async def _scraper(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_stella_tenant: Annotated[str | None, Header()] = None,
) -> Caller:
    """The metrics routes' dependency: the metrics scope (admin implies it), tenant optional."""
    auth: Authenticator = request.app.state.auth
    return auth.check_scrape(credentials.credentials if credentials else None, x_stella_tenant)


ReadCaller = Annotated[Caller, Depends(require(READ))]
Scraper = Annotated[Caller, Depends(_scraper)]
WriteCaller = Annotated[Caller, Depends(require(WRITE))]
AdminCaller = Annotated[Caller, Depends(require(ADMIN, operator_reason=True))]
AdminReader = Annotated[Caller, Depends(require(ADMIN))]
