"""Alembic environment: runs migrations on the engine handed over by stellaorch.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from stellaorch.store.dialect import lift_statement_timeout, serialize_on
from stellaorch.store.schema import metadata


def run_migrations() -> None:
    """Run migrations online against the engine in the config's attributes."""
    engine: Engine = context.config.attributes["engine"]
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            lift_statement_timeout(conn)  # an index on a large table may take minutes
            # Processes starting together upgrade one at a time; the others then find the
            # schema at head (PostgreSQL runs the migrations in this one transaction).
            serialize_on(conn, "stellaorch", "migrations")
            context.run_migrations()
        conn.commit()


run_migrations()
