"""Pure timing: how long to wait, and when a send may happen.

Everything here is a function of its arguments (no clock, no database, no I/O), so the engine,
`nurture simulate` and the tests can all travel in time. Datetimes go in and come out
timezone-aware, in UTC; local wall-clock time is used only inside, where people's calendars
matter: days, weekends and working hours.

Daylight-saving rule, used everywhere a wall-clock time becomes an instant: an ambiguous time
(clocks went back) means its *first* occurrence, and a time skipped by clocks going forward means
the instant they jumped. So a send is never planned twice, never skipped, and never earlier than
the author asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UNITS = ("minutes", "hours", "days", "weeks", "business_days")

_WAIT = re.compile(r"\s*([0-9]+)\s+(minute|hour|day|week|business[\s_]+day)s?\s*", re.IGNORECASE)
_HOURS = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")
_UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080, "business_days": 2016}
# Ten years. A longer wait is surely a typo, and a huge one would overflow `datetime`.
_MAX_WAIT_MINUTES = 3660 * 1440
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Wait:
    """A pause before a touch, kept as the author wrote it.

    Not a timedelta: "1 week", "7 days", "5 business days" and "168 hours" differ once weekends
    and daylight-saving changes are involved.
    """

    amount: int
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {self.unit!r}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 1:
            raise ValueError(f"amount must be a whole number of at least 1, not {self.amount!r}")
        if self.amount * _UNIT_MINUTES[self.unit] > _MAX_WAIT_MINUTES:
            raise ValueError(f'"{self}" is longer than ten years')

    def __str__(self) -> str:
        noun = self.unit.replace("_", " ")
        return f"{self.amount} {noun[:-1] if self.amount == 1 else noun}"


def parse_wait(text: str) -> Wait:
    """Read a campaign's `wait:` value, e.g. "5 business days" or "1 week".

    Forgiving about case, spacing and singular/plural, strict about everything else: a wait that
    is misread sends an email at the wrong time, so a typo must fail validation instead.
    """
    match = _WAIT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        units = "minutes|hours|days|weeks|business days"
        raise ValueError(f'"{text}" is not a duration; use N {units}')
    amount = int(match[1])
    if amount < 1:
        raise ValueError(f'"{text}" is not a duration; the amount must be at least 1')
    return Wait(amount, re.sub(r"[\s_]+", "_", match[2].lower()) + "s")


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone `name`, or a ValueError that a campaign author can act on."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found, malformed, or a folder of tzdata
        raise ValueError(
            f'"{name}" is not a known time zone; use an IANA name such as America/New_York'
        ) from None


@dataclass(frozen=True)
class SendWindow:
    """When a touch may go out: some weekdays, between two local times.

    `timezone` is "contact" (the hours are the recipient's working hours, the usual case) or an
    IANA name that pins the window to one zone, e.g. the practice's own.
    """

    days: frozenset[int]  # 0=Monday .. 6=Sunday
    start: time
    end: time  # exclusive
    timezone: str = "contact"

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError(f"days must be a non-empty set of 0 (Mon) .. 6 (Sun): {self.days}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are wall-clock times; they take no tzinfo")
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        if self.timezone != "contact":
            zone_named(self.timezone)

    def zone(self, contact_tz: ZoneInfo) -> ZoneInfo:
        """The zone the hours are read in: the contact's own, unless the campaign pinned one."""
        return contact_tz if self.timezone == "contact" else zone_named(self.timezone)


def parse_hours(text: str) -> tuple[time, time]:
    """Read a window's `hours:` value, "09:00-16:00"; the end is exclusive."""
    match = _HOURS.fullmatch(text) if isinstance(text, str) else None
    try:
        if match is None:
            raise ValueError
        start, end = (time(int(match[i]), int(match[i + 1])) for i in (1, 3))
    except ValueError:  # malformed, or 25:00 / 09:60
        hint = "use HH:MM-HH:MM, e.g. 09:00-16:00"
        raise ValueError(f'"{text}" is not a range of hours; {hint}') from None
    if start >= end:
        raise ValueError(f'"{text}": the start must be before the end')
    return start, end


def add_wait(moment: datetime, wait: Wait | None, tz: ZoneInfo) -> datetime:
    """`moment` plus `wait`, in UTC; None means no wait.

    Minutes and hours are elapsed time. Days and weeks are calendar days on the wall clock of
    `tz`, so a touch sent at 9:30 is followed at 9:30 local a week later, even across a DST
    change. Business days count Monday to Friday only, in `tz`'s calendar: the result is the
    N-th weekday *after* the local date (like a spreadsheet's WORKDAY), so Friday + 1 and
    Saturday + 1 and Sunday + 1 are all Monday, at the same wall-clock time.
    """
    moment = _utc(moment)
    if wait is None:
        return moment
    if wait.unit in ("minutes", "hours"):
        return moment + timedelta(**{wait.unit: wait.amount})
    wall = moment.astimezone(tz).replace(tzinfo=None)
    if wait.unit == "business_days":
        day = wall.date()
        for _ in range(wait.amount):
            day += _DAY
            while day.weekday() >= 5:
                day += _DAY
        return _wall_to_utc(datetime.combine(day, wall.time()), tz)
    return _wall_to_utc(wall + wait.amount * (7 if wait.unit == "weeks" else 1) * _DAY, tz)


def in_window(moment: datetime, window: SendWindow | None, tz: ZoneInfo) -> bool:
    """Whether a send at `moment` is allowed; None means any time is.

    Read on the local wall clock, start included and end excluded: 16:00 is outside 09:00-16:00.
    """
    if window is None:
        return True
    local = _utc(moment).astimezone(window.zone(tz))
    return local.weekday() in window.days and window.start <= local.time() < window.end


def next_window_opening(moment: datetime, window: SendWindow | None, tz: ZoneInfo) -> datetime:
    """The earliest instant at or after `moment` that is inside the window, in UTC.

    That is `moment` itself when it is inside. Otherwise the window opens either when the local
    clock reaches `start` on an allowed day (once, or twice on a fall-back night), or when a DST
    jump lands the clock inside the window. We take the first such instant that is really inside,
    so a window swallowed by a DST gap is skipped rather than hit early or late.
    """
    moment = _utc(moment)
    if window is None or in_window(moment, window, tz):
        return moment
    zone = window.zone(tz)
    first_day = moment.astimezone(zone).date()
    for days in (9, 17):  # a week covers every window, unless a DST gap ate its only day
        # Every opening before `cutoff` is a start on one of these `days` local dates, or the jump.
        cutoff = moment + (days - 2) * _DAY
        starts = (s for s in _starts(window, zone, first_day, days) if s >= moment)
        first = next((s for s in starts if in_window(s, window, tz)), None)
        jump = _offset_change(moment, min(first or cutoff, cutoff), zone)  # only if before first
        found = [o for o in (first, jump) if o and o <= cutoff and in_window(o, window, tz)]
        if found:
            return min(found)
    raise ValueError(f"{window} does not open within {days} days")  # pragma: no cover


def due_at(
    previous: datetime, wait: Wait | None, window: SendWindow | None, tz: ZoneInfo
) -> datetime:
    """When the touch after one sent at `previous` may go out: wait, then the next open window."""
    return next_window_opening(add_wait(previous, wait, tz), window, tz)


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is a bug in the caller, not a local time to guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive; schedule takes timezone-aware datetimes only")
    return moment.astimezone(UTC)


def _wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant whose wall-clock time in `tz` is `wall` (naive) or, in a gap, later."""
    early, late = sorted(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    for instant in (early, late):  # both exist when ambiguous; early is the first occurrence
        if instant.astimezone(tz).replace(tzinfo=None) == wall:
            return instant
    jump = _offset_change(early, late, tz)  # in a gap, the two readings straddle the jump
    assert jump is not None
    return jump


def _offset_change(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime | None:
    """The instant in (lo, hi] at which `tz`'s UTC offset changes, if it does.

    Assumes at most one change in the interval: true of every zone for the two weeks at most
    that next_window_opening looks at (DST starts and ends months apart).
    """
    lo, hi = lo.replace(microsecond=0), hi.replace(microsecond=0)
    before = lo.astimezone(tz).utcoffset()
    if hi.astimezone(tz).utcoffset() == before:
        return None
    while hi - lo > timedelta(seconds=1):  # bisect to the second; transitions fall on whole ones
        mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=2))
        lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == before else (lo, mid)
    return hi


def _starts(window: SendWindow, zone: ZoneInfo, first_day: date, days: int) -> Iterator[datetime]:
    """Both readings of `start` on each allowed day, in order; some may not really be inside."""
    for day in (first_day + n * _DAY for n in range(days)):
        if day.weekday() in window.days:
            wall = datetime.combine(day, window.start, tzinfo=zone)
            yield from sorted(wall.replace(fold=fold).astimezone(UTC) for fold in (0, 1))
