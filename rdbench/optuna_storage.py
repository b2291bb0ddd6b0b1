"""Optuna storages for ``rdbench tune``: the URL a user gives, turned into a storage and a lock.

SQLite (the default, a file under ``results/``), Optuna's journal file (``journal:///path``, for
a shared file system) and database servers (PostgreSQL, MySQL: any SQLAlchemy URL). Workers of
one study count and ask for trials under :func:`trial_lock`, so the study gets exactly the
number of trials asked for: a file lock beside a file storage, the server's advisory lock for
PostgreSQL (``pg_advisory_lock``) and MySQL (``GET_LOCK``).

``postgresql://`` names SQLAlchemy's default driver, psycopg2; where only psycopg 3 is installed
(``pip install 'rdbench[postgres]'``) the URL is read as ``postgresql+psycopg://``, and where
neither is, the message is one line naming the extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import time
from pathlib import Path
from typing import Callable, Iterator

import optuna

from rdbench.optional import require


def make_storage(url: str | None, default: Path):
    if url is None:
        default.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{default.resolve()}"
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal://")))
    if url.startswith("sqlite"):
        # Workers started together race to create the schema, and SQLite serialises writers:
        # wait for the lock instead of failing, and retry the schema race.
        return retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}))
    url = database_url(url)
    # Workers started together race to create the schema on a server too.
    return retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}))


def database_url(url: str) -> str:
    """A server URL with a driver that is installed: ``postgresql://`` read as psycopg 3's
    ``postgresql+psycopg://`` where psycopg2 is missing; one line naming the extra where no
    PostgreSQL driver is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        if _installed("psycopg2"):
            return f"postgresql://{rest}"
        require("psycopg", f"--storage {scheme}://", "postgres")
        return f"postgresql+psycopg://{rest}"
    if scheme == "postgresql+psycopg":
        require("psycopg", f"--storage {scheme}://", "postgres")
    return url


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def storage_label(url: str | None, default: Path) -> str:
    """The storage as ``--storage`` names it (so another worker can join), password hidden."""
    if url is None:
        return f"sqlite:///{default.resolve()}"
    if url.startswith("journal://"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: Optuna will say what is wrong with it
        return url


def storage_file(url: str | None, default: Path) -> Path | None:
    """The file of a file-based storage (SQLite, journal), None for a database server."""
    if url is None:
        return default
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://"))
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return Path(database) if database and database != ":memory:" else None
    return None


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock between the processes of one machine (or of an NFS share)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the over-budget check below still holds the count
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def retry(make, attempts: int = 8):
    import random

    for attempt in range(attempts):
        try:
            return make()
        except Exception:  # sqlalchemy's IntegrityError/OperationalError while another worker creates tables
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())




#: The advisory lock statements of the servers that have one: (take, release).
SERVER_LOCKS = {
    "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
    "mysql": ("SELECT GET_LOCK(:name, 600)", "SELECT RELEASE_LOCK(:name)"),
}


def trial_lock(url: str | None, default: Path, study: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The lock under which a worker counts the study's trials and asks for a new one: a file
    lock for a file storage, the server's advisory lock (keyed by the study's name) for
    PostgreSQL and MySQL, none for other servers (the over-budget check then keeps the count)."""
    path = storage_file(url, default)
    if path is not None:
        lock = path.with_name(path.name + ".trials.lock")
        return lambda: _file_lock(lock)
    if url is None or url.startswith("journal://"):
        return contextlib.nullcontext
    server = database_url(url).partition("://")[0].split("+")[0]
    if server not in SERVER_LOCKS:
        return contextlib.nullcontext
    return lambda: _server_lock(database_url(url), server, study)


@contextlib.contextmanager
def _server_lock(url: str, server: str, study: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    take, release = SERVER_LOCKS[server]
    # a signed 64-bit key for PostgreSQL, a name for MySQL; both the same in every worker
    key = int.from_bytes(hashlib.sha256(f"rdbench-trials:{study}".encode()).digest()[:8], "big", signed=True)
    params = {"key": key, "name": f"rdbench-trials:{study}"[:64]}
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text(take), params)
            try:
                yield
            finally:
                connection.execute(text(release), params)
    finally:
        engine.dispose()
