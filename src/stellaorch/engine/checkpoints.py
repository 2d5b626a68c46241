"""Writing ledger checkpoints: sign every moved tenant's heads, periodically on the leader.

One pass reads the ledger entries no checkpoint covers yet (a final prefix, in bounded
batches), groups them by tenant and appends, per tenant, one DSSE-signed checkpoint chained to
the tenant's previous one. Passes are serialised on a named lock (PostgreSQL) or by SQLite's
single writer, so an on-demand pass and the leader's loop never write the same seq twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.audit import Operator
from stellaorch.domain.checkpoint import (
    CHECKPOINT_TYPE,
    FIRST_PREV_HASH,
    CheckpointDraft,
    RunHead,
    checkpoint_hash,
)
from stellaorch.domain.errors import SettingsInvalid, StellaError, StoreUnavailable
from stellaorch.domain.providers import worker_identity
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.security import dsse
from stellaorch.security.keys import newest_ed25519_key
from stellaorch.security.trust import load_private_key
from stellaorch.store import Connection, leases
from stellaorch.store.checkpoints import (
    CheckpointRow,
    HeadRow,
    insert_checkpoint,
    read_cursor,
    read_heads_between,
    read_latest,
)
from stellaorch.store.dialect import serialize_on
from stellaorch.store.events import read_max_id

log = logging.getLogger("stellaorch.checkpoints")

LEASE_NAME = "ledger-checkpoints"
BATCH = 20_000  # entries one pass covers at most: bounded memory and transaction size
US = 1_000_000


def server_signing_key(env: EngineEnv) -> Ed25519PrivateKey:
    """The server's signing key (checkpoints, kits): the key file set, else the newest Ed25519."""
    settings = env.settings
    if settings.checkpoint_key_file is not None:
        return load_private_key(settings.checkpoint_key_file)
    key = newest_ed25519_key(settings.keys_dir)
    if key is None:
        raise SettingsInvalid(
            f"no Ed25519 key to sign checkpoints and exports in {settings.keys_dir}: run "
            "`stella orch keys generate` or set STELLA_ORCH_CHECKPOINT_KEY_FILE"
        )
    return key


def checkpoint_view(row: CheckpointRow) -> dict[str, Any]:
    """A stored checkpoint as JSON: its hash, the decoded payload and the envelope."""
    envelope = json.loads(row.envelope_json)
    payload = json.loads(dsse.parse_envelope(envelope).payload)
    return {"checkpointHash": row.checkpoint_hash, "checkpoint": payload, "envelope": envelope}


@dataclass
class _Tenant:
    """What a pass found of one tenant: its heads and where its chain of checkpoints is."""

    heads: dict[str, RunHead]
    count: int = 0
    last_hash: str = ""


class CheckpointWriter:
    """Appends signed checkpoints for every tenant whose ledger moved."""

    def __init__(self, env: EngineEnv, key: Ed25519PrivateKey | None = None) -> None:
        self.env = env
        self._key = key

    @property
    def key(self) -> Ed25519PrivateKey:
        """The signing key (loaded on first use, so a process without one starts anyway)."""
        if self._key is None:
            self._key = server_signing_key(self.env)
        return self._key

    async def write(self, *, batch: int = BATCH) -> list[CheckpointRow]:
        """Cover every entry committed so far; the checkpoints written (none if nothing moved)."""
        key = self.key
        through = await self.env.db.transact(read_max_id)  # a final prefix (short transaction)
        written: list[CheckpointRow] = []
        while True:
            part, done = await self.env.db.transact(lambda c: self._pass(c, key, through, batch))
            written.extend(part)
            if done:
                return written

    def _pass(
        self, conn: Connection, key: Ed25519PrivateKey, through: int, batch: int
    ) -> tuple[list[CheckpointRow], bool]:
        """One batch in one transaction; True when it reached `through`."""
        serialize_on(conn, "stellaorch", "ledger-checkpoints")
        cursor = read_cursor(conn)
        rows = read_heads_between(conn, cursor, through, batch)
        if not rows:
            return [], True
        now = self.env.clock.now_us()
        last_id = rows[-1].id
        written = [
            self._append(conn, key, tenant, found, now, last_id)
            for tenant, found in sorted(_by_tenant(rows).items())
        ]
        return written, last_id >= through

    def _append(
        self,
        conn: Connection,
        key: Ed25519PrivateKey,
        tenant: str,
        found: _Tenant,
        now: int,
        through_id: int,
    ) -> CheckpointRow:
        previous = read_latest(conn, tenant)
        draft = CheckpointDraft(
            tenant=tenant,
            seq=previous.seq + 1 if previous else 1,
            ts_us=max(now, previous.created_us if previous else 0),  # never older than the last
            prev_hash=previous.checkpoint_hash if previous else FIRST_PREV_HASH,
            entries=(previous.entries if previous else 0) + found.count,
            last_entry_hash=found.last_hash,
            runs=tuple(found.heads.values()),
        )
        payload = draft.payload()
        envelope = dsse.sign(CHECKPOINT_TYPE, payload, key).to_json()
        row = CheckpointRow(
            tenant=tenant,
            seq=draft.seq,
            created_us=draft.ts_us,
            through_id=through_id,
            entries=draft.entries,
            last_entry_hash=draft.last_entry_hash,
            checkpoint_hash=checkpoint_hash(payload),
            envelope_json=json.dumps(envelope, sort_keys=True, separators=(",", ":")),
        )
        insert_checkpoint(conn, row)
        return row

    async def on_demand(self, tenant: str, operator: Operator) -> dict[str, Any]:
        """Checkpoint now (every moved tenant); the caller's tenant's newest, audited."""
        written = await self.write()
        mine = [row for row in written if row.tenant == tenant]
        latest = mine[-1] if mine else await self.latest(tenant)
        target = f"checkpoint:{latest.seq}" if latest else "checkpoint:none"
        audit = operator.entry(tenant, "ledger.checkpoint", target, {"written": bool(mine)})
        now = self.env.clock.now_us()
        await self.env.db.transact(lambda c: record_audit(c, audit, now))
        view = checkpoint_view(latest) if latest else {"checkpoint": None}
        return {"written": bool(mine), **view}

    async def latest(self, tenant: str) -> CheckpointRow | None:
        """The tenant's newest checkpoint."""
        return await self.env.db.read(lambda c: read_latest(c, tenant))


def _by_tenant(rows: list[HeadRow]) -> dict[str, _Tenant]:
    """Each tenant's newest head per run, entry count and newest entry (rows in id order)."""
    found: defaultdict[str, _Tenant] = defaultdict(lambda: _Tenant({}))
    for row in rows:
        tenant = found[row.tenant]
        head = tenant.heads.get(row.run_id)
        if head is None or row.seq > head.seq:
            tenant.heads[row.run_id] = RunHead(row.run_id, row.seq, row.entry_hash, row.started_us)
        tenant.count += 1
        tenant.last_hash = row.entry_hash
    return dict(found)


class CheckpointLoop:
    """Writes checkpoints every `interval` seconds while it holds the checkpoint lease."""

    def __init__(self, writer: CheckpointWriter, interval_seconds: float, lease_ttl_seconds: float):
        self.writer = writer
        self.interval = interval_seconds
        self.ttl_us = int(max(lease_ttl_seconds, 3 * interval_seconds) * US)
        env = writer.env
        self.holder = f"{worker_identity()}:{env.ids.lease_id()[:8]}"
        self._stopping = asyncio.Event()
        self._leader = False

    def stop(self) -> None:
        """Ask the loop to end; it gives the lease up on the way out."""
        self._stopping.set()

    async def run(self) -> None:
        """Lead and checkpoint until `stop()`; an outage or a missing key is logged and retried."""
        try:
            while not self._stopping.is_set():
                await self._cycle()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
        finally:
            await self._release()

    async def _cycle(self) -> None:
        env = self.writer.env
        try:
            now = env.clock.now_us()
            self._leader = await env.db.transact(
                lambda c: leases.acquire(c, LEASE_NAME, self.holder, now, self.ttl_us)
            )
            if self._leader:
                written = await self.writer.write()
                if written:
                    log.info("ledger.checkpointed", extra={"tenants": len(written)})
        except StoreUnavailable as exc:
            log.warning("ledger.checkpoint_store_unavailable", extra={"error": str(exc)})
        except StellaError as exc:
            log.warning("ledger.checkpoint_failed", extra={"code": exc.code, "error": exc.message})
        except Exception:  # a bug must not stop checkpoints for good: log it, try again later
            log.exception("ledger.checkpoint_failed", extra={"holder": self.holder})

    async def _release(self) -> None:
        if self._leader:
            env = self.writer.env
            with contextlib.suppress(StellaError):
                await env.db.transact(lambda c: leases.release(c, LEASE_NAME, self.holder))
