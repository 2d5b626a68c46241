"""Database URLs as the store shows them, and the driver errors of opening one, translated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from stellaorch.domain.errors import SettingsInvalid, StoreUnavailable


def hidden_password_url(url: str) -> str:
    """The URL with any password hidden (raises on a URL SQLAlchemy cannot parse)."""
    return make_url(url).render_as_string(hide_password=True)


def display_url(url: str) -> str:
    """The database URL with any password hidden, for output and logs."""
    try:
        return hidden_password_url(url)
    except ArgumentError:
        return "<invalid database URL>"


@contextmanager
def usable_url(where: str) -> Iterator[None]:
    """A URL naming no usable driver or dialect, inside the block, becomes SettingsInvalid."""
    try:
        yield
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise SettingsInvalid(f"cannot use database URL {where}: {exc}") from exc


@contextmanager
def opening_store(where: str) -> Iterator[None]:
    """Opening a store: a bad URL is SettingsInvalid, a refused connection StoreUnavailable."""
    with usable_url(where):
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(f"cannot open the store at {where}: {exc.orig}") from exc
