"""The database layer.

SQLite's writers take turns: a second writer waits for the first, then goes ahead. nurture
takes SQLite's write lock itself at the start of every transaction (``BEGIN IMMEDIATE``, polled
every fraction of a millisecond instead of SQLite's busy handler, which sleeps 1, 2, 5 ... ms).
These tests hold the lock from a second connection, as another worker process would, and check
what a waiting writer does.

A :class:`nurture.db.Precompiled` statement does what SQLAlchemy's ``execute`` would, on both
databases: the same rows and values, in the caller's transaction, with SQLAlchemy's errors.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from nurture import db
from nurture.db import Database, Precompiled
from nurture.models import Mailbox, Touch, TouchState


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    path = tmp_path / "writers.db"
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)"))
    yield path, engine
    engine.dispose()


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's writer, mid-transaction."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO note (body) VALUES ('first')")
    return other


def test_a_second_writer_waits_for_the_first_and_then_writes(
        sqlite_file: tuple[Path, Engine]) -> None:
    path, engine = sqlite_file
    other = _hold_write_lock(path)
    order: list[str] = []
    failure: list[BaseException] = []
    started = threading.Event()

    def second_writer() -> None:
        try:
            started.set()
            with engine.begin() as conn:
                order.append("second began")
                conn.execute(text("INSERT INTO note (body) VALUES ('second')"))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            failure.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    started.wait()
    thread.join(0.3)
    assert thread.is_alive(), "the second writer should still be waiting for the lock"
    order.append("first committed")
    other.execute("COMMIT")
    other.close()
    thread.join(10)
    assert not failure, failure
    assert order == ["first committed", "second began"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM note ORDER BY id")).scalars().all() == [
            "first", "second"]


def test_a_writer_that_waits_past_the_busy_timeout_fails_and_writes_nothing(
        sqlite_file: tuple[Path, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    path, engine = sqlite_file
    monkeypatch.setattr(db, "SQLITE_BUSY_MS", 200)
    other = _hold_write_lock(path)
    try:
        with pytest.raises(OperationalError, match="database is locked"), engine.begin() as conn:
            conn.execute(text("INSERT INTO note (body) VALUES ('second')"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM note")).scalar() == 0


def test_statements_inside_a_transaction_keep_the_busy_timeout(
        sqlite_file: tuple[Path, Engine]) -> None:
    _path, engine = sqlite_file
    with engine.begin() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.SQLITE_BUSY_MS


# Precompiled statements ---------------------------------------------------------------------
_BUMP = (update(Mailbox).where(Mailbox.address == bindparam("b_address"),
                               Mailbox.sent_today < bindparam("b_limit"))
         .values(sent_today=Mailbox.sent_today + 1, day=bindparam("b_day"),
                 last_sent_at=bindparam("b_at"))
         .returning(Mailbox.address, Mailbox.sent_today, Mailbox.day, Mailbox.last_sent_at))
_ADD = insert(Mailbox).values(address=bindparam("address"), day=bindparam("day"), sent_today=0)
_READ = select(Mailbox.day, Mailbox.last_sent_at).where(Mailbox.address == bindparam("b_address"))


def _mailboxes(database: Database) -> list[tuple]:
    with database.transaction() as session:
        return [tuple(row) for row in session.execute(
            select(Mailbox.address, Mailbox.day, Mailbox.sent_today, Mailbox.last_sent_at)
            .order_by(Mailbox.address))]


def test_precompiled_runs_as_execute_does(db: Database) -> None:
    """The same statement, once through SQLAlchemy and once precompiled, on twin rows: the same
    rows back (dates and time zones converted alike) and the same values stored."""
    day, at = date(2026, 12, 7), datetime(2026, 12, 7, 14, 30, 15, 123456, tzinfo=UTC)
    bump, add, read = Precompiled(_BUMP), Precompiled(_ADD), Precompiled(_READ)
    with db.transaction() as session:
        session.execute(_ADD, {"address": "a@pt.example", "day": day})
        assert add.rows(session, {"address": "b@pt.example", "day": day}) == []
    for limit in (5, 0):  # the second returns nothing: the WHERE no longer holds
        params = {"b_limit": limit, "b_day": day + timedelta(days=1), "b_at": at}
        with db.transaction() as session:
            by_sqlalchemy = session.execute(_BUMP, {**params, "b_address": "a@pt.example"}).all()
            precompiled = bump.rows(session, {**params, "b_address": "b@pt.example"})
        assert [tuple(r)[1:] for r in precompiled] == [tuple(r)[1:] for r in by_sqlalchemy]
    assert precompiled == by_sqlalchemy == []
    with db.engine.connect() as connection:  # a Connection too; it begins a transaction
        (row,) = bump.rows(connection, {"b_address": "b@pt.example", "b_limit": 9,
                                        "b_day": day, "b_at": at - timedelta(hours=1)})
        assert (row.address, row.sent_today, row.day, row.last_sent_at) == (
            "b@pt.example", 2, day, at - timedelta(hours=1))
        assert row.last_sent_at.tzinfo is not None
    # ... and, not committed, rolled back when the connection closed
    with db.transaction() as session:
        assert read.first(session, {"b_address": "b@pt.example"}) == (day + timedelta(days=1), at)
        assert read.first(session, {"b_address": "nobody@pt.example"}) is None
        assert read.scalar(session, {"b_address": "a@pt.example"}) == day + timedelta(days=1)
    a, b = _mailboxes(db)
    assert a[1:] == b[1:] == (day + timedelta(days=1), 1, at)


def test_precompiled_writes_belong_to_the_callers_transaction(db: Database) -> None:
    add = Precompiled(_ADD)
    with pytest.raises(RuntimeError), db.transaction() as session:
        add.rows(session, {"address": "a@pt.example", "day": date(2026, 12, 7)})
        raise RuntimeError("the caller fails after the write")
    assert _mailboxes(db) == []
    with db.transaction() as session:
        add.rows(session, {"address": "a@pt.example", "day": date(2026, 12, 7)})
    assert [m[0] for m in _mailboxes(db)] == ["a@pt.example"]


def test_precompiled_raises_sqlalchemys_errors_and_the_connection_lives_on(
        db: Database) -> None:
    add = Precompiled(_ADD)
    with db.transaction() as session:
        add.rows(session, {"address": "a@pt.example", "day": date(2026, 12, 7)})
    with db.held_connection():
        with pytest.raises(IntegrityError), db.transaction() as session:
            add.rows(session, {"address": "b@pt.example", "day": date(2026, 12, 7)})
            add.rows(session, {"address": "a@pt.example", "day": date(2026, 12, 8)})
        with db.transaction() as session:  # the same connection, rolled back and usable
            add.rows(session, {"address": "c@pt.example", "day": date(2026, 12, 9)})
    assert [m[0] for m in _mailboxes(db)] == ["a@pt.example", "c@pt.example"]


def test_precompiled_refuses_what_it_would_run_differently(db: Database) -> None:
    """SQLAlchemy fills Python-side column defaults and expands IN lists as it executes."""
    with db.transaction() as session:
        no_defaults = Precompiled(insert(Touch).values(
            enrollment_id=bindparam("e"), step_id="s", due_at=bindparam("d"),
            created_at=bindparam("c")))
        with pytest.raises(ValueError, match="give trigger_key, state, attempts a value"):
            no_defaults.rows(session, {"e": 1, "d": None, "c": None})
        expanding = Precompiled(select(Touch.id).where(
            Touch.state.in_([TouchState.SENT, TouchState.SKIPPED])))
        with pytest.raises(ValueError, match="expanding IN"):
            expanding.rows(session, {})


def test_precompiled_on_a_lost_connection_invalidates_it_and_the_next_transaction_works(
        db: Database) -> None:
    """As SQLAlchemy's ``execute`` would: the driver's error arrives as SQLAlchemy's, marked as
    a lost connection, and the pool hands out a working one next."""
    add = Precompiled(_ADD)
    with pytest.raises(RuntimeError, match="rolled back"), db.transaction() as session:
        raw = session.connection().connection.driver_connection
        if db.engine.dialect.name == "postgresql":  # the server ends the session
            with db.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"),
                              {"pid": raw.info.backend_pid})
        else:  # the file handle goes away under it
            raw.close()
        with pytest.raises(DBAPIError) as lost:
            add.rows(session, {"address": "a@pt.example", "day": date(2026, 12, 7)})
        assert lost.value.connection_invalidated
        raise RuntimeError("rolled back")
    with db.transaction() as session:
        add.rows(session, {"address": "b@pt.example", "day": date(2026, 12, 7)})
    assert [m[0] for m in _mailboxes(db)] == ["b@pt.example"]
