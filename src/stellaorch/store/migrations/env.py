"""Alembic environment: runs migrations on the engine handed over by stellaorch.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

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
            context.run_migrations()
        conn.commit()


run_migrations()
