"""Transactions that lose a race to a concurrent twin, and run again to see what it committed.

Two intakes of one referral (two CSV imports of one file, a webhook retried while the first
delivery is still running) both look for its ``ref``, find nothing, and both insert it. On
PostgreSQL the second insert waits for the first transaction, then fails on the unique key; two
transactions taking row locks in opposite orders fail with a deadlock instead. Either way the
loser's work was rolled back whole, and running it again from the start sees the winner's rows:
the repeat becomes "already recorded". (SQLite serialises writers with ``BEGIN IMMEDIATE``, so
there the second simply waits and never conflicts.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from .db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3  # the first try, and twice more: each retry sees every twin committed before it
#: PostgreSQL SQLSTATEs meaning "a concurrent transaction won": unique_violation,
#: serialization_failure, deadlock_detected.
_CONFLICT_STATES = frozenset({"23505", "40001", "40P01"})


def is_conflict(exc: DBAPIError) -> bool:
    """True for a unique-key violation, a serialization failure or a deadlock; not for other
    integrity errors (a missing foreign key stays an error however often it is retried)."""
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state in _CONFLICT_STATES
    return isinstance(exc, IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


def retry_conflicts(db: Database, work: Callable[[Session], T]) -> T:
    """``work(session)`` in a transaction of its own, run again from the start when it lost a
    race (see :func:`is_conflict`). ``work`` must do everything it means inside the
    transaction, so that a rolled-back attempt leaves nothing behind."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with db.transaction() as session:
                return work(session)
        except (IntegrityError, OperationalError) as exc:
            if attempt == ATTEMPTS or not is_conflict(exc):
                raise
            log.info("a concurrent transaction committed first (%s); trying again",
                     type(exc.orig).__name__)
    raise AssertionError("unreachable")  # the loop returns or raises
