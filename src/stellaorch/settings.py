"""The one typed settings object, from STELLA_ORCH_* variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# Service roles that run inline shell commands unless the operator says otherwise.
_INLINE_SCRIPT_ROLES = frozenset({"serve"})


def _config_file() -> Path | None:
    """The TOML file named by STELLA_ORCH_CONFIG, if any (the only env read outside Settings)."""
    name = os.environ.get("STELLA_ORCH_CONFIG")
    return Path(name) if name else None


class Settings(BaseSettings):
    """Everything an operator can tune; defaults suit the embedded single-process setup."""

    model_config = SettingsConfigDict(env_prefix="STELLA_ORCH_", extra="ignore")

    database_url: str = "sqlite:///.stella/orchestrator.db"
    default_tenant: str = "default"
    lease_ttl_seconds: float = Field(default=30.0, gt=0)
    # External workers' leases of queue steps (the worker API): lapse without a heartbeat.
    task_lease_ttl_seconds: float = Field(default=30.0, gt=0)
    # The longest a `tasks:claim` long-poll is held open, whatever waitSeconds asks for.
    task_claim_max_wait_seconds: float = Field(default=30.0, ge=0, le=30)
    heartbeat_interval_seconds: float | None = Field(default=None, gt=0)
    worker_concurrency: int = Field(default=64, ge=1, le=10_000)
    claim_batch: int = Field(default=256, ge=1, le=5_000)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    max_log_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Live logs: how often a running attempt's new output is written to the store, the most
    # one written chunk holds, and how long one `logs?follow=true` response may stay open.
    log_flush_seconds: float = Field(default=0.5, gt=0, le=60)
    log_chunk_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    log_follow_max_seconds: float = Field(default=3600.0, gt=0, le=86_400)
    # All step outputs of one run together; a step that would overrun it fails the run with
    # OUTPUT_LIMIT_EXCEEDED (one step's outputs are capped at 1 MiB: OUTPUT_TOO_LARGE).
    max_run_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**40)
    lost_attempt_limit: int = Field(default=3, ge=0, le=100)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    # A worker not heard from for this long is dead to `worker list`, health and the queue
    # view, and its registry row is pruned; unset: three heartbeat intervals.
    worker_ttl_seconds: float | None = Field(default=None, gt=0, le=86_400)
    # Which tenants this process's worker serves; empty: every tenant.
    worker_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The scheduler leader lease: a standby takes over at most this long after the leader died.
    scheduler_lease_ttl_seconds: float = Field(default=10.0, gt=0)
    scheduler_poll_seconds: float = Field(default=1.0, gt=0)
    # A cron that fires more often than this is refused (SCHEDULE_TOO_FREQUENT).
    schedule_min_interval_seconds: int = Field(default=60, ge=1, le=86_400)
    max_schedules_per_tenant: int = Field(default=1000, ge=1, le=1_000_000)
    # Alerts: webhook deliveries of the tenants' rules (run by `serve` and `scheduler`).
    max_alert_rules_per_tenant: int = Field(default=50, ge=1, le=10_000)
    alert_poll_seconds: float = Field(default=5.0, gt=0, le=3_600)
    alert_timeout_seconds: float = Field(default=5.0, gt=0, le=60)  # one attempt, end to end
    alert_max_attempts: int = Field(default=5, ge=1, le=20)
    alert_retry_initial_seconds: float = Field(default=1.0, gt=0, le=300)  # doubles, max 300 s
    # Most runs one `schedule backfill` may create; a wider window is refused (BACKFILL_TOO_LARGE).
    max_backfill_runs: int = Field(default=500, ge=1, le=10_000)
    # Settled triggers older than this are deleted (their runs and ledger stay).
    schedule_firing_retention_days: float = Field(default=7.0, gt=0)
    # PostgreSQL only (SQLite has one writer: one store thread, no pool)
    database_threads: int = Field(default=4, ge=1, le=64)  # concurrent transactions
    database_pool_size: int = Field(default=5, ge=1, le=200)
    database_max_overflow: int = Field(default=5, ge=0, le=200)
    database_statement_timeout_ms: int = Field(default=30_000, ge=0)  # 0: no limit
    database_connect_timeout_seconds: int = Field(default=5, ge=1, le=300)
    # Integrity check of an existing store before a process uses it: SQLite's quick_check
    # (reads every page, skips index cross-checks), its full integrity_check, or none.
    store_start_check: Literal["quick", "full", "off"] = "quick"
    # Readiness fails below this much free space beside the SQLite file (0: not checked).
    store_min_free_mb: int = Field(default=32, ge=0, le=1_048_576)

    # API, auth and tenancy
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8440, ge=1, le=65535)
    keys_dir: Path = Path(".stella/keys")
    # The key-encryption key of secrets (mode 0600, created on first use); unset: in keys_dir.
    secrets_key_file: Path | None = None
    # A secret value larger than this is refused (SECRET_INVALID).
    secret_max_value_bytes: int = Field(default=64 * 1024, ge=1, le=1024 * 1024)
    audience: str = "stella-orchestrator"
    # A token whose exp - iat exceeds this is refused, so a leaked token cannot live for years.
    token_max_lifetime_seconds: int = Field(default=30 * 86_400, ge=60, le=366 * 86_400)
    # When set, a token's `iss` must equal it (tokens from an identity provider); unset: any.
    token_issuer: str | None = Field(default=None, min_length=1)
    tenants: list[str] = Field(default_factory=list)  # server-side allowlist; empty = any
    insecure_dev: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # One artifact a worker uploads (PUT /tasks/{leaseId}/artifacts/{sha256}); its own body cap.
    max_artifact_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # What a client controls before a request exists (slowloris, giant headers): the request
    # line and headers together (larger: 431), the time to send them (slower: 408), the idle
    # time between keep-alive requests, and the open connections (more: 503 to new requests).
    api_max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1024 * 1024)
    api_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    api_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    api_max_connections: int = Field(default=1000, ge=1, le=100_000)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    stream_queue_limit: int = Field(default=10_000, ge=10)
    # Store-wide metrics (runs by status, queue depth, live workers) are read from the store
    # at most this often per process; scrapes in between get the same figures (0: every one).
    metrics_store_cache_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Workers and schedulers: serve their own /metrics on this port (on api_host); unset: none.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # Traces (docs/observability.md): finished spans are appended to `trace_file` as NDJSON
    # until it holds `trace_file_max_bytes` (later spans are dropped); `trace_enabled=false`
    # makes none. OTLP export only when `otlp_endpoint` is set (needs the OTLP exporter).
    trace_enabled: bool = True
    trace_file: Path = Path(".stella/traces.ndjson")
    trace_file_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**40)
    otlp_endpoint: str | None = Field(default=None, max_length=2048)

    # Ledger checkpoints (docs/ledger.md): how often the leader signs the heads of a ledger
    # that moved (0: only on demand), and the Ed25519 key it signs with (unset: the newest
    # Ed25519 `*.private.pem` in keys_dir).
    checkpoint_interval_seconds: float = Field(default=60.0, ge=0, le=86_400)
    checkpoint_key_file: Path | None = None
    # The offline kit (`stella orch export`) is built in memory: a window whose files together
    # exceed this is refused (EXPORT_TOO_LARGE); export shorter windows.
    export_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=2**34)

    # Signed DAGs and bundles (docs/bundles.md). The trust store: default `<keys_dir>/trust`.
    trust_dir: Path | None = None
    # POST /dags refuses unsigned versions; unset: on for `serve`, `api` and `worker`
    # processes, off for the library and `local` commands.
    require_dag_signatures: bool | None = None
    # Imported archives (`archives/`) and this process's unpacked cache (`cache/`).
    bundles_dir: Path = Path(".stella/bundles")
    # Where each process unpacks verified bundles; unset: the system temp dir, which the
    # sandbox's unprivileged uid can always enter (a data dir under /root, say, it cannot).
    bundle_cache_dir: Path | None = None
    bundle_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024, le=2**34)
    bundle_max_entry_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, le=2**36)
    bundle_max_unpacked_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024, le=2**38)

    # Sandbox of script steps (SPEC §5): "off" runs them unconfined (never in production).
    sandbox: Literal["on", "off"] = "on"
    sandbox_bwrap: str = "bwrap"
    sandbox_uid: int = Field(default=65534, ge=1, le=2**32 - 2)  # used when the worker is root
    sandbox_gid: int = Field(default=65534, ge=1, le=2**32 - 2)
    # Per-step defaults; a step's `resources` may ask for more, up to the maximum.
    sandbox_cpu_seconds: int = Field(default=300, ge=1, le=86_400)
    sandbox_memory_mb: int = Field(default=1024, ge=16, le=1_048_576)
    sandbox_max_cpu_seconds: int = Field(default=3600, ge=1, le=86_400)
    sandbox_max_memory_mb: int = Field(default=8192, ge=16, le=1_048_576)
    sandbox_processes: int = Field(default=256, ge=8, le=65_536)
    sandbox_open_files: int = Field(default=1024, ge=16, le=1_048_576)
    sandbox_file_size_mb: int = Field(default=256, ge=1, le=1_048_576)
    sandbox_tmp_mb: int = Field(default=64, ge=1, le=65_536)
    sandbox_work_mb: int = Field(default=256, ge=1, le=1_048_576)
    # Inline shell `command` steps (the built-in `script`). Unset: the process role decides,
    # on for `serve` and local development (`local run`, the library), off for `api`,
    # `worker` and `scheduler` processes. Either way they run in the sandbox.
    inline_scripts: bool | None = None

    @field_validator("worker_tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        """`a,b` (the flag and the variable) or a list (the TOML file)."""
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    def for_role(self, role: str) -> Settings:
        """These settings for a service process of `role`: unset role defaults filled in."""
        if self.inline_scripts is not None:
            return self
        return self.model_copy(update={"inline_scripts": role in _INLINE_SCRIPT_ROLES})

    @property
    def inline_scripts_enabled(self) -> bool:
        """Whether inline shell commands may be published and run (unset: yes, see above)."""
        return self.inline_scripts is not False

    @property
    def secrets_key_path(self) -> Path:
        """The KEK file of secrets: the explicit setting, or `secrets.kek` in the keys dir."""
        return self.secrets_key_file or self.keys_dir / "secrets.kek"

    @property
    def heartbeat_seconds(self) -> float:
        """Heartbeat period: explicit, or a third of the lease so two beats can be missed."""
        return self.heartbeat_interval_seconds or self.lease_ttl_seconds / 3

    @property
    def worker_ttl(self) -> float:
        """How long a worker's registry row counts as live after its last heartbeat."""
        return self.worker_ttl_seconds or 3 * self.heartbeat_seconds

    @property
    def trust_directory(self) -> Path:
        """Where the trusted public keys are: `trust_dir`, or `trust` inside the key directory."""
        return self.trust_dir or self.keys_dir / "trust"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments, then env vars, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
