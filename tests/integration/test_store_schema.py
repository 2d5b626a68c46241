"""The store's schema: migrations match the declared tables and every table carries a tenant."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from stellaorch.store.database import Database
from stellaorch.store.migrate import current_revision, head_revision, upgrade
from stellaorch.store.schema import metadata

# Tables that belong to the migration tool, not to the product.
TOOL_TABLES = {"alembic_version"}


def migrated(url: str) -> Database:
    db = Database.open(url)
    upgrade(db.engine)
    return db


def test_migrations_produce_exactly_the_declared_schema(store_url: str) -> None:
    db = migrated(store_url)
    try:
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diffs = compare_metadata(context, metadata)
    finally:
        db.close()

    assert diffs == []


def test_every_declared_table_is_created_by_the_migrations(store_url: str) -> None:
    db = migrated(store_url)
    try:
        created = set(inspect(db.engine).get_table_names()) - TOOL_TABLES
    finally:
        db.close()

    assert created == set(metadata.tables)


def test_upgrade_is_repeatable_and_keeps_data(store_url: str) -> None:
    db = migrated(store_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(
                metadata.tables["tenant_queues"].insert(),
                [{"tenant": "acme", "paused": False, "created_us": 1}],
            )
        upgrade(db.engine)
        upgrade(db.engine)
        with db.engine.connect() as conn:
            tenants = conn.execute(metadata.tables["tenant_queues"].select()).all()
        revision, head = current_revision(db.engine), head_revision(db.engine)
    finally:
        db.close()

    assert len(tenants) == 1
    assert revision == head is not None


def test_every_table_carries_a_required_tenant_column(store_url: str) -> None:
    db = migrated(store_url)
    try:
        inspector = inspect(db.engine)
        tables = set(inspector.get_table_names()) - TOOL_TABLES
        without = sorted(
            t
            for t in tables
            if not any(
                c["name"] == "tenant" and not c["nullable"] for c in inspector.get_columns(t)
            )
        )
    finally:
        db.close()

    assert tables
    assert without == []
