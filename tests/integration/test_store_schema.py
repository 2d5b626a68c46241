"""The store's schema: migrations match the declared tables and every table carries a tenant."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from stellaorch.store.database import Database
from stellaorch.store.migrate import alembic_config, current_revision, head_revision, upgrade
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


def _revisions(db: Database) -> list[str]:
    """Every revision this code ships, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(db.engine))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _columns(db: Database) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    """table -> column -> (type, nullable, has a server default)."""
    inspector = inspect(db.engine)
    return {
        table: {
            c["name"]: (str(c["type"]), bool(c["nullable"]), c.get("default") is not None)
            for c in inspector.get_columns(table)
        }
        for table in inspector.get_table_names()
    }


def test_each_migration_only_adds_so_processes_of_the_previous_release_keep_working(
    store_url: str,
) -> None:
    """`db upgrade` may run while old processes are up: nothing they read or write changes."""
    db = Database.open(store_url)
    try:
        revisions = _revisions(db)
        upgrade(db.engine, revisions[0])
        before = _columns(db)
        for revision in revisions[1:]:
            upgrade(db.engine, revision)
            after = _columns(db)
            for table, columns in before.items():
                assert table in after, f"{revision} drops table {table}"
                for name, (kind, nullable, _) in columns.items():
                    assert name in after[table], f"{revision} drops {table}.{name}"
                    new_kind, new_nullable, _ = after[table][name]
                    assert new_kind == kind, f"{revision} changes the type of {table}.{name}"
                    assert new_nullable or not nullable, f"{revision} makes {table}.{name} required"
                added = set(after[table]) - set(columns)
                for name in added:  # an old process's INSERT does not name it
                    _, nullable, has_default = after[table][name]
                    assert nullable or has_default, f"{revision} adds required {table}.{name}"
            before = after
    finally:
        db.close()
