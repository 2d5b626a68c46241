"""store package: the only place that speaks SQL (SQLAlchemy Core) to the database.

`Connection` is the store's transaction handle as the engine's transaction scripts receive
it: engine modules name it from here, so that only `store/` imports SQLAlchemy.
"""

from sqlalchemy import Connection

__all__ = ["Connection"]
