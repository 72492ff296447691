"""Clocks. The engine never calls ``datetime.now()`` itself: it asks the clock it was given.

That is what makes ``--now``, ``simulate`` and fast tests possible, and it keeps every stored time
(and every email's ``Date`` header) consistent with the clock that decided to send it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


def as_utc(moment: datetime) -> datetime:
    """Make ``moment`` aware UTC; naive values are taken to be UTC (SQLite returns them so)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant such as ``2026-12-07T15:00:00Z``; a naive value means UTC."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to: ``nurture --now``, tests and simulations.

    ``--now`` freezes time rather than starting a running clock there: a touch that
    ``nurture --now T enroll`` plans for T must be due when ``nurture --now T worker --burst``
    ticks, however long each command took to start.
    """

    def __init__(self, start: datetime):
        self._now = as_utc(start)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = as_utc(moment)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now
