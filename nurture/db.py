"""Engine, sessions and schema migrations.

Migrations are Alembic scripts shipped inside the package (``nurture/migrations``). They run on
``nurture db upgrade`` and automatically the first time a command opens a database that is behind.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Dialect, Engine, Executable, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_MS = 30_000  # how long a writer waits for another before "database is locked"


def _took_write_lock(raw: sqlite3.Connection) -> bool:
    """Try ``BEGIN IMMEDIATE`` every fraction of a millisecond until the busy timeout, on a
    connection whose own busy timeout is off. False if the lock did not come, or on any other
    error.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries, several times as long as a
    worker holds the lock to record one email, so two workers spent much of their time asleep
    (``python -m bench.sqlite_writers`` measures both).
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
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision. Returns True if anything was applied.

    On SQLite, Alembic changes a table by copying it and dropping the original; with foreign
    keys enforced that drop would cascade-delete every row that points at it, so migrations run
    on a connection without them (and check the keys afterwards). On PostgreSQL an advisory
    lock lets several workers start at once on a new database.
    """
    if current_revision(engine) == head_revision():
        return False
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


class Precompiled:
    """A Core statement compiled once per dialect and run on the driver's own cursor.

    The send path runs about eight statements per email, and SQLAlchemy's ``execute`` spends
    more time around each (cache key, parameters, result object) than SQLite takes to run it:
    ``python -m bench.statements`` measured 40 µs per statement against 17 µs this way on
    SQLite (260 against 175 µs on PostgreSQL). It runs in the caller's transaction, on the
    connection SQLAlchemy began it on, applies the column types' conversions both ways, and
    raises SQLAlchemy's exceptions (a lost connection is invalidated, as ``execute`` would).
    It refuses what ``execute`` would do for it: expanding ``IN`` lists (write ``or_``) and
    Python-side column defaults (give every column a value).
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Plan] = {}

    def rows(self, on: Session | Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run it; the rows it returns, as named tuples (none for a statement without any)."""
        connection = on.connection() if isinstance(on, Session) else on
        if not connection.in_transaction():
            connection.begin()  # as ``execute`` would: the caller commits
        plan = self._by_dialect.get(connection.dialect.name) or self._plan(connection.dialect)
        values = plan.values(params)
        cursor = None
        try:
            cursor = connection.connection.driver_connection.cursor()
            cursor.execute(plan.sql, values)
            fetched = cursor.fetchall() if plan.row is not None else []
            cursor.close()
        except Exception as exc:  # noqa: BLE001
            # SQLAlchemy's own handler, as for exec_driver_sql: wraps the driver's error and
            # invalidates a lost connection (private, but unchanged since 1.4).
            connection._handle_dbapi_exception(exc, plan.sql, values, cursor, None)
        if plan.row is None:
            return []
        convert = plan.converters
        return [plan.row._make(f(v) if f else v for f, v in zip(convert, raw, strict=True))
                for raw in fetched]

    def first(self, on: Session | Connection, params: Mapping[str, Any]) -> Any | None:
        found = self.rows(on, params)
        return found[0] if found else None

    def scalar(self, on: Session | Connection, params: Mapping[str, Any]) -> Any | None:
        found = self.rows(on, params)
        return found[0][0] if found else None

    def _plan(self, dialect: Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect)
        if any(bind.expanding or bind.callable for bind in compiled.binds.values()):
            raise ValueError(f"expanding IN and callable values are not supported: {compiled}")
        defaulted = [*getattr(compiled, "insert_prefetch", ()),
                     *getattr(compiled, "update_prefetch", ())]
        if defaulted:  # computed by SQLAlchemy's execute, which this skips
            raise ValueError(f"give {', '.join(c.name for c in defaulted)} a value: {compiled}")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup or []) if dialect.positional else list(by_name)
        binds = [by_name[name] for name in names]
        getters = [(bind.key, bind.required, None if bind.required else bind.effective_value,
                    bind.type.dialect_impl(dialect).bind_processor(dialect)) for bind in binds]
        columns = list(getattr(self.statement, "exported_columns", ()))
        row = None
        if columns:
            row = namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
        plan = _Plan(compiled.string, dialect.positional, names, getters, row,
                     [c.type.dialect_impl(dialect).result_processor(dialect, None)
                      for c in columns])
        self._by_dialect[dialect.name] = plan
        return plan


@dataclass
class _Plan:
    sql: str
    positional: bool
    names: list[str]
    getters: list[tuple[str, bool, Any, Any]]  # (key, required, default, bind processor)
    row: Any  # a namedtuple class, or None
    converters: list[Any]  # result processors

    def values(self, params: Mapping[str, Any]) -> Any:
        values = []
        for key, required, default, process in self.getters:
            value = params[key] if required else params.get(key, default)
            values.append(process(value) if process is not None else value)
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


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
