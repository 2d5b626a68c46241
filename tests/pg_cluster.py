"""PostgreSQL for the tests: a server to use, a database per session, a schema per store.

The server is the one named by STELLA_TEST_PG_URL (CI starts one with scripts/pg.sh), or a
throwaway cluster this module starts itself when the PostgreSQL binaries are installed. Each
test store is a fresh schema of one session database, selected through the connection's
`search_path`: creating one costs a few milliseconds, where a database costs a hundred.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from sqlalchemy.engine import URL, make_url

URL_ENV = "STELLA_TEST_PG_URL"
REQUIRED_ENV = "STELLA_TEST_PG_REQUIRED"  # CI: a missing server fails instead of skipping


class Unavailable(Exception):
    """No PostgreSQL server can be had; the message says why."""


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    """initdb refuses root: as root, run the server as the `postgres` user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class LocalCluster:
    """A cluster in a temporary directory, run as a child process and waited for."""

    bindir: Path
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stella-pg.")))
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    _settings: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        initdb = [str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres"]
        initdb += ["--auth=trust", "-E", "UTF8", "--locale=C"]
        done = subprocess.run(_as_owner(initdb), capture_output=True, check=False)
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
        self._settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        self._launch("wb")

    def _launch(self, mode: str) -> None:
        """Run the server on the initialised data directory and wait until it accepts."""
        argv = [str(self.bindir / "postgres"), "-D", str(self.directory / "data")]
        for name, value in self._settings.items():
            argv += ["-c", f"{name}={value}"]
        with (self.directory / "server.log").open(mode) as log:
            self.process = subprocess.Popen(_as_owner(argv), stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            time.sleep(0.1)
        log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise Unavailable(f"the PostgreSQL server did not start:\n{log}")

    def halt(self) -> None:
        """Fast shutdown, as `stop`, but keep the data directory so `resume` can restart it."""
        self._shut_down()

    def resume(self) -> None:
        """Start a halted cluster again, on the same port and data directory."""
        assert self.process is None or self.process.poll() is not None, "the server is running"
        self._launch("ab")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), wait for it, delete the directory."""
        self._shut_down()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _shut_down(self) -> None:
        """Fast shutdown (SIGINT to the postmaster) and wait for the server to exit."""
        if self.process is not None and self.process.poll() is None:
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data")]
            stopped = subprocess.run(
                _as_owner([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True, check=False
            )
            if stopped.returncode != 0:
                self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _url_for(base: str, database: str, schema: str | None = None) -> str:
    url: URL = make_url(base).set(database=database)
    text = url.render_as_string(hide_password=False)
    if schema is not None:
        text += ("&" if "?" in text else "?") + "options=" + quote(f"-csearch_path={schema}")
    return text


def _libpq(url: str) -> str:
    """A URL psycopg accepts (no SQLAlchemy driver suffix)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class TestDatabase:
    """One database for the session; every store is a new schema in it."""

    __test__ = False

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"stella_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._admin = psycopg.connect(_libpq(server_url), autocommit=True, connect_timeout=5)
        self._admin.execute(f'CREATE DATABASE "{self.name}"')
        self._conn = psycopg.connect(_libpq(self.url()), autocommit=True)
        self._count = 0

    def url(self, schema: str | None = None) -> str:
        return _url_for(self.server_url, self.name, schema)

    def new_store(self) -> tuple[str, str]:
        """A fresh, empty schema: (its name, the URL that selects it)."""
        self._count += 1
        schema = f"s{self._count}"
        self._conn.execute(f"CREATE SCHEMA {schema}")
        return schema, self.url(schema)

    def drop_store(self, schema: str) -> None:
        """Drop a store's schema (give up quietly if a leaked connection still holds it)."""
        with contextlib.suppress(psycopg.Error):
            self._conn.execute("SET lock_timeout = '5s'")
            self._conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def close(self) -> None:
        self._conn.close()
        with contextlib.suppress(psycopg.Error):
            self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.close()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The store refuses service for the block: connections cut, new ones refused."""
        name = self.name
        self._conn.close()
        self._admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        try:
            yield
        finally:
            self._admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            self._conn = psycopg.connect(_libpq(self.url()), autocommit=True)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The URL of a PostgreSQL server for this session; raises Unavailable with the reason."""
    given = os.environ.get(URL_ENV)
    if given:
        try:
            psycopg.connect(_libpq(given), connect_timeout=5).close()
        except psycopg.Error as exc:  # asked for and broken: an error, never a skip
            raise RuntimeError(f"{URL_ENV}={given} does not answer: {exc}") from exc
        yield given
        return
    bindir = _bindir()
    if bindir is None:
        raise Unavailable(
            f"no PostgreSQL: set {URL_ENV} or install the binaries (apt-get install postgresql)"
        )
    cluster = LocalCluster(bindir)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()
