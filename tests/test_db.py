"""The database layer.

SQLite's writers take turns: a second writer waits for the first, then goes ahead. nurture
takes SQLite's write lock itself at the start of every transaction (``BEGIN IMMEDIATE``, polled
every fraction of a millisecond instead of SQLite's busy handler, which sleeps 1, 2, 5 ... ms).
These tests hold the lock from a second connection, as another worker process would, and check
what a waiting writer does.

A connection lost in the middle of a transaction is SQLAlchemy's to invalidate, on both
databases.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from nurture import db
from nurture.db import Database
from nurture.models import Mailbox


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


# A lost connection ---------------------------------------------------------------------------
_ADD = insert(Mailbox).values(address=bindparam("address"), day=bindparam("day"), sent_today=0)


def _mailboxes(database: Database) -> list[str]:
    with database.transaction() as session:
        return list(session.scalars(select(Mailbox.address).order_by(Mailbox.address)))


def test_a_lost_connection_is_invalidated_and_the_next_transaction_works(db: Database) -> None:
    """The driver's error arrives as SQLAlchemy's, marked as a lost connection, the transaction
    is rolled back, and the pool hands out a working connection next (also to a thread that
    holds its connection for a batch)."""
    with db.held_connection():
        with pytest.raises(RuntimeError, match="rolled back"), db.transaction() as session:
            session.execute(_ADD, {"address": "a@pt.example", "day": date(2026, 12, 7)})
            raw = session.connection().connection.driver_connection
            if db.engine.dialect.name == "postgresql":  # the server ends the session
                with db.engine.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"),
                                  {"pid": raw.info.backend_pid})
            else:  # the file handle goes away under it
                raw.close()
            with pytest.raises(DBAPIError) as lost:
                session.execute(_ADD, {"address": "b@pt.example", "day": date(2026, 12, 7)})
            assert lost.value.connection_invalidated
            raise RuntimeError("rolled back")
    with db.transaction() as session:
        session.execute(_ADD, {"address": "c@pt.example", "day": date(2026, 12, 7)})
    assert _mailboxes(db) == ["c@pt.example"]
