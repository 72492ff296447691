"""Engine, sessions and schema migrations.

Migrations are Alembic scripts shipped inside the package (``nurture/migrations``). They run on
``nurture db upgrade`` and automatically the first time a command opens a database that is behind.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # Alembic is imported only to migrate: it is a third of a command's start-up
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_MS = 30_000  # how long a writer waits for another before "database is locked"


def _took_write_lock(raw: sqlite3.Connection) -> bool:
    """Try ``BEGIN IMMEDIATE`` every fraction of a millisecond until the busy timeout, on a
    connection whose own busy timeout is off. False if the lock did not come, or on any other
    error.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries, several times as long as a
    worker holds the lock to record one email, so two workers spent much of their time asleep
    (measured at 0.2 ms of waiting per transaction against 0.015 ms this way, 2026-11-27).
    """
    deadline, pause = time.monotonic() + SQLITE_BUSY_MS / 1000, 0.00005
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                return False
        time.sleep(pause)
        pause = min(pause * 1.5, 0.001)


def make_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and enforced foreign keys.

    WAL lets the worker send while another command writes; the busy timeout makes a second
    writer wait instead of failing with "database is locked".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_MS / 1000})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin (BEGIN IMMEDIATE
            # below), so a read followed by a write cannot deadlock two writers.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            raw = conn.connection.driver_connection
            raw.execute("PRAGMA busy_timeout=0")
            try:
                if not _took_write_lock(raw):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # last try: SQLAlchemy's error
            finally:  # statements inside the transaction keep the busy timeout
                with contextlib.suppress(sqlite3.Error):  # a broken connection: its own error
                    raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")

        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @event.listens_for(engine, "connect")
    def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
        # A process killed mid-claim whose socket lives on (in a forked child, say) must not
        # hold its locks for ever: the server ends a transaction left idle this long.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET idle_in_transaction_session_timeout = '5min'")
        dbapi_conn.commit()

    return engine


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*['\"]?(\w+)?", re.M)


def _head_from_files() -> str | None:
    """The newest revision of a linear history, read from the scripts' ``revision`` and
    ``down_revision`` lines; None if that is not plain (then Alembic decides)."""
    revisions, parents = set(), set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((k, v) for k, v in _REVISION.findall(script.read_text(encoding="utf-8")))
        if not found.get("revision"):
            return None
        revisions.add(found["revision"])
        parents.add(found.get("down_revision") or None)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _up_to_date(engine: Engine) -> bool:
    """Whether the database is at the head revision, asked without importing Alembic."""
    head = _head_from_files()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except exc.DBAPIError:  # no version table yet: a new database
        return False
    return [row[0] for row in rows] == [head]


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision. Returns True if anything was applied.

    On SQLite, Alembic changes a table by copying it and dropping the original; with foreign
    keys enforced that drop would cascade-delete every row that points at it, so migrations run
    on a connection without them (and check the keys afterwards). On PostgreSQL an advisory
    lock lets several workers start at once on a new database.
    """
    if _up_to_date(engine) or current_revision(engine) == head_revision():
        return False
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    url = engine.url.render_as_string(hide_password=False)
    sqlite = engine.dialect.name == "sqlite"
    migrator = make_engine(url, foreign_keys=False) if sqlite else engine
    try:
        with migrator.connect() as conn:
            if not sqlite:
                conn.exec_driver_sql("SELECT pg_advisory_lock(7140211)")
                conn.commit()
            try:
                if MigrationContext.configure(conn).get_current_revision() != head_revision():
                    cfg = alembic_config(migrator)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
            finally:
                if not sqlite:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(7140211)")
                    conn.commit()
    finally:
        if sqlite:
            migrator.dispose()
    return True


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        held = getattr(self._local, "connection", None)
        if held is None:
            with self.sessions.begin() as session:
                yield session
        else:
            with self.sessions(bind=held) as session, session.begin():
                yield session

    @contextmanager
    def held_connection(self) -> Iterator[None]:
        """Run this thread's transactions on one connection until the block ends.

        A send job runs two or three short transactions per email: taking a connection from
        the pool for each, and with PostgreSQL checking it is alive (a round trip), cost about
        as much as the statements. Each transaction still commits on its own.
        """
        if getattr(self._local, "connection", None) is not None:
            yield
            return
        with self.engine.connect() as connection:
            self._local.connection = connection
            try:
                yield
            finally:
                self._local.connection = None

    def analyze(self) -> None:
        """Give SQLite's planner statistics (it keeps none by default).

        Without them it reads due rows and a contact's sent touches through the state index:
        measured at a million enrollments, a tick with 1,000 due took 4.7 s instead of 127 ms.
        ``analysis_limit`` keeps it to a few milliseconds at any size. PostgreSQL does this itself.
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                conn.exec_driver_sql("ANALYZE")
                conn.commit()

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


def open_database(url: str, *, migrate: bool = True) -> Database:
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
