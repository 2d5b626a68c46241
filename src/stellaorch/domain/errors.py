"""One exception hierarchy for the whole product, each error with a stable code."""

from __future__ import annotations

from typing import Any


def error_envelope(
    code: str, message: str, trace_id: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The API's error body: `{"error": {code, message, traceId[, details]}}`.

    Every server-side answer that refuses a request is built here (handlers, middleware, the
    HTTP guard below them); `details` is left out when there are none.
    """
    error: dict[str, Any] = {"code": code, "message": message, "traceId": trace_id}
    if details:
        error["details"] = details
    return {"error": error}


class StellaError(Exception):
    """Root of every error the product raises on purpose; `code` is stable and UPPER_SNAKE."""

    code = "INTERNAL"
    retryable = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationError(StellaError):
    """Input that can never succeed as given (exit code 2, HTTP 400)."""

    code = "VALIDATION_FAILED"


class SpecInvalid(ValidationError):
    """A DAG spec that breaks a rule; `details['errors']` lists every problem with its path."""

    code = "DAG_SPEC_INVALID"


class InputsInvalid(ValidationError):
    """Run inputs that are not a JSON object or cannot be read."""

    code = "INPUTS_INVALID"


class NotFound(StellaError):
    """Something addressed by id does not exist for this tenant (exit code 4, HTTP 404)."""

    code = "NOT_FOUND"


class DagNotFound(NotFound):
    """No such DAG, or no such version of it, for this tenant."""

    code = "DAG_NOT_FOUND"


class RunNotFound(NotFound):
    """No such run for this tenant."""

    code = "RUN_NOT_FOUND"


class Conflict(StellaError):
    """The request contradicts state that already exists (HTTP 409)."""

    code = "CONFLICT"


class RunTokenConflict(Conflict):
    """Same runToken reused with different inputs."""

    code = "RUN_TOKEN_CONFLICT"


class DagVersionConflict(Conflict):
    """A published version may never change: same dagId+version with another spec."""

    code = "DAG_VERSION_CONFLICT"


class DagDisabled(Conflict):
    """The DAG version is disabled and takes no new runs."""

    code = "DAG_VERSION_DISABLED"


class QueueDraining(Conflict):
    """The tenant's queue is draining and takes no new runs until resumed."""

    code = "QUEUE_DRAINING"


class InvalidTransition(StellaError):
    """A status change the status machine forbids (a programming error, never user input)."""

    code = "INVALID_TRANSITION"


class StoreUnavailable(StellaError):
    """The store cannot be reached or is locked beyond the busy timeout; retry later."""

    code = "STORE_UNAVAILABLE"
    retryable = True


class ServiceBusy(StellaError):
    """The process serves the most of something it may at once (a bounded resource); retry."""

    code = "SERVICE_BUSY"
    retryable = True


class StoreNotWritable(StoreUnavailable):
    """The store answers reads but a write failed (disk full, read-only file, a failing disk)."""

    code = "STORE_NOT_WRITABLE"


class StoreCorrupt(StellaError):
    """The store's file is damaged or not a database at all; restore it, retrying cannot help."""

    code = "STORE_CORRUPT"


class StoreNotStella(StellaError):
    """The database file exists but holds no Stella schema; it is never migrated over."""

    code = "STORE_NOT_STELLA"


class StoreMissing(NotFound):
    """A check was asked for a store file that does not exist (checks never create one)."""

    code = "STORE_NOT_FOUND"


class StepFailed(StellaError):
    """Raised by a plugin: the attempt failed with a typed, recorded error."""

    code = "STEP_FAILED"

    def __init__(self, code: str, message: str, *, retryable: bool = False, logs: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.logs = logs


class AccessDenied(StellaError):
    """Authentication or authorisation failed (exit code 3)."""

    code = "ACCESS_DENIED"


class Unauthenticated(AccessDenied):
    """No bearer token, or one that is expired, forged or for another audience (HTTP 401)."""

    code = "UNAUTHENTICATED"


class TenantRequired(AccessDenied):
    """The request names no tenant (HTTP 403)."""

    code = "TENANT_REQUIRED"


class TenantForbidden(AccessDenied):
    """The token may not act for that tenant, or the server does not serve it (HTTP 403)."""

    code = "TENANT_FORBIDDEN"


class ScopeRequired(AccessDenied):
    """The token lacks the scope the route needs (HTTP 403)."""

    code = "SCOPE_REQUIRED"


# -- a service process's own errors (the CLI maps them to exit codes) --------------------
class SettingsInvalid(ValidationError):
    """A flag or STELLA_ORCH_* variable that the settings reject."""

    code = "SETTINGS_INVALID"


class UsageInvalid(ValidationError):
    """Flags that are fine alone but make no sense together."""

    code = "USAGE_INVALID"


class SchedulerCrashed(StellaError):
    """The in-process scheduler stopped on its own."""

    code = "SCHEDULER_CRASHED"


class WorkerCrashed(StellaError):
    """The in-process worker stopped on an unexpected error."""

    code = "WORKER_CRASHED"


class WorkerStopTimeout(WorkerCrashed):
    """The worker did not finish stopping in time and was abandoned."""

    code = "WORKER_STOP_TIMEOUT"


class ServiceFailed(StellaError):
    """A part of a service process (the API server, the scheduler) could not start or died."""

    code = "SERVICE_FAILED"


class ExportTooLarge(ValidationError):
    """An offline kit whose files would exceed the server's export limit: use shorter windows."""

    code = "EXPORT_TOO_LARGE"


# -- signatures and bundles (docs/bundles.md) ----------------------------------------------
class PayloadTooLarge(ValidationError):
    """A request body over the bound its route allows (HTTP 413).

    The code is the body-limit middleware's, so a client sees one code whichever layer
    refused (the middleware on Content-Length or a chunk, or a route counting its stream).
    """

    code = "BODY_TOO_LARGE"


class ArtifactTooLarge(PayloadTooLarge):
    """An uploaded artifact over STELLA_ORCH_MAX_ARTIFACT_BYTES; nothing was stored."""


class ArtifactHashMismatch(ValidationError):
    """The uploaded bytes do not hash to the sha256 named in the path; nothing was stored."""

    code = "ARTIFACT_HASH_MISMATCH"


class SignatureInvalid(ValidationError):
    """A DSSE envelope that is malformed, or whose signature does not verify (HTTP 400)."""

    code = "SIGNATURE_INVALID"


class SignatureRequired(SignatureInvalid):
    """The server requires signed DAG versions and none was sent."""

    code = "SIGNATURE_REQUIRED"


class SignerNotTrusted(SignatureInvalid):
    """The signing key is not (or no longer) in the trust store: unknown or revoked."""

    code = "SIGNER_NOT_TRUSTED"


class BundleInvalid(ValidationError):
    """A bundle archive that breaks the format or whose content does not match its manifest."""

    code = "BUNDLE_INVALID"


class BundleTooLarge(BundleInvalid):
    """A bundle (archive, entry or unpacked total) over a configured bound."""

    code = "BUNDLE_TOO_LARGE"


class BundleNotFound(NotFound):
    """No such imported bundle for this tenant."""

    code = "BUNDLE_NOT_FOUND"


class BundleConflict(Conflict):
    """An imported `name@version` never changes: other content under it is refused."""

    code = "BUNDLE_VERSION_CONFLICT"
