"""Making two transactions overlap on purpose, for the tests of concurrent intakes.

A test wraps a library function so that the first call, having written, holds its transaction
open until a second transaction really waits for it. On PostgreSQL that is observed in
``pg_locks``: the second is blocked on a lock the first holds (a row or a unique-index entry),
so the race the test is about did happen. SQLite has one writer at a time (``BEGIN
IMMEDIATE``): the second waits before it can read anything, which a short pause lets happen.
"""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.orm import Session

SQLITE_PAUSE = 0.3  # seconds: time for the second writer to reach BEGIN IMMEDIATE and wait
_WAITING_FOR_ME = text("SELECT count(*) FROM pg_locks WHERE NOT granted "
                       "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")


def hold_until_blocked(session: Session, timeout: float = 20) -> None:
    """Flush ``session``'s writes, then return once another transaction waits for them."""
    session.flush()
    if session.get_bind().dialect.name == "sqlite":
        time.sleep(SQLITE_PAUSE)
        return
    deadline = time.monotonic() + timeout
    while not session.scalar(_WAITING_FOR_ME):
        if time.monotonic() > deadline:
            raise AssertionError(f"no transaction waited for this one within {timeout} s")
        time.sleep(0.02)
