"""Timing rules, on fixed dates around real daylight-saving changes of 2024.

Europe/Berlin: 02:00 → 03:00 on Sun 31 March, 03:00 → 02:00 on Sun 27 October.
America/New_York: 02:00 → 03:00 on Sun 10 March, 02:00 → 01:00 on Sun 3 November.
Expected instants inside a gap or a fold are written in UTC: Python never finds an ambiguous
local time equal to an instant in another zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.schedule import (
    UNITS,
    WEEKDAYS,
    SendWindow,
    Wait,
    add_wait,
    due_at,
    in_window,
    next_window_opening,
    parse_hours,
    parse_wait,
)

BERLIN, NEW_YORK, TOKYO = (ZoneInfo(n) for n in ("Europe/Berlin", "America/New_York", "Asia/Tokyo"))
WEEKDAYS_9_TO_4 = SendWindow(frozenset(range(5)), time(9), time(16), "contact")
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def at(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


def daily(start: time, end: time, days: range | set[int] = range(7), zone: str = "contact"):
    return SendWindow(frozenset(days), start, end, zone)


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("30 minutes", Wait(30, "minutes")),
    ("1 minute", Wait(1, "minutes")),
    ("2 hours", Wait(2, "hours")),
    ("3 days", Wait(3, "days")),
    ("1 day", Wait(1, "days")),
    ("2 weeks", Wait(2, "weeks")),
    ("5 business days", Wait(5, "business_days")),
    ("1 business day", Wait(1, "business_days")),
    ("  5   Business   DAYS ", Wait(5, "business_days")),
    ("1 Week", Wait(1, "weeks")),
])
def test_parse_wait(text: str, expected: Wait) -> None:
    assert parse_wait(text) == expected


@pytest.mark.parametrize("text", [
    "", "5", "days", "5 buisness days", "1.5 hours", "-1 days", "five days", "5 business",
    "5 days later", "5days", "3 months",
])
def test_parse_wait_rejects_with_the_accepted_units(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_wait(text)
    assert str(caught.value) == (
        f'"{text}" is not a duration; use N minutes|hours|days|weeks|business days')


def test_parse_wait_rejects_zero_and_absurd_amounts() -> None:
    with pytest.raises(ValueError, match=r'^"0 days" is not a duration; the amount must be at '):
        parse_wait("0 days")
    with pytest.raises(ValueError, match=r'^"99999999999999999999 weeks" is longer than ten'):
        parse_wait("99999999999999999999 weeks")


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("amount", [1, 2, 17])
def test_wait_str_reads_back(unit: str, amount: int) -> None:
    assert parse_wait(str(Wait(amount, unit))) == Wait(amount, unit)


def test_wait_str() -> None:
    assert [str(Wait(5, "business_days")), str(Wait(1, "business_days")), str(Wait(1, "minutes"))] \
        == ["5 business days", "1 business day", "1 minute"]


@pytest.mark.parametrize(("amount", "unit"), [(0, "days"), (-1, "days"), (True, "days"),
                                              (1.5, "days"), (1, "years"), (1, "day")])
def test_wait_rejects_bad_values(amount: object, unit: str) -> None:
    with pytest.raises(ValueError):
        Wait(amount, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("09:00-16:00", (time(9), time(16))),
    (" 9:30 - 17:45 ", (time(9, 30), time(17, 45))),
    ("00:00-23:59", (time(0), time(23, 59))),
])
def test_parse_hours(text: str, expected: tuple[time, time]) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("9-16", '"9-16" is not a range of hours; use HH:MM-HH:MM, e.g. 09:00-16:00'),
    ("09:00", '"09:00" is not a range of hours; use HH:MM-HH:MM, e.g. 09:00-16:00'),
    ("25:00-26:00", '"25:00-26:00" is not a range of hours; use HH:MM-HH:MM, e.g. 09:00-16:00'),
    ("09:60-10:00", '"09:60-10:00" is not a range of hours; use HH:MM-HH:MM, e.g. 09:00-16:00'),
    ("16:00-09:00", '"16:00-09:00": the start must be before the end'),
    ("09:00-09:00", '"09:00-09:00": the start must be before the end'),
])
def test_parse_hours_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_hours(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("days", "start", "end", "zone"), [
    (frozenset(), time(9), time(16), "contact"),
    (frozenset({7}), time(9), time(16), "contact"),
    (frozenset({0}), time(16), time(9), "contact"),
    (frozenset({0}), time(9), time(9), "contact"),
    (frozenset({0}), time(9), time(16), "Mars/Olympus_Mons"),
    (frozenset({0}), time(9, tzinfo=UTC), time(16), "contact"),
])
def test_send_window_rejects(days: frozenset[int], start: time, end: time, zone: str) -> None:
    with pytest.raises(ValueError):
        SendWindow(days, start, end, zone)


def test_weekday_names_are_monday_first() -> None:
    assert WEEKDAYS.index("mon") == date(2024, 6, 3).weekday() == 0


# -- add_wait ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "wait", "tz", "expected"), [
    pytest.param(utc(2024, 6, 3, 12), None, NEW_YORK, utc(2024, 6, 3, 12), id="no wait"),
    pytest.param(at(BERLIN, 2024, 3, 31, 1, 45), "30 minutes", BERLIN, utc(2024, 3, 31, 1, 15),
                 id="minutes are elapsed time across spring forward"),
    pytest.param(utc(2024, 11, 3, 4, 30), "2 hours", NEW_YORK, utc(2024, 11, 3, 6, 30),
                 id="hours are elapsed time across fall back"),
    pytest.param(at(BERLIN, 2024, 3, 30, 9, 30), "1 day", BERLIN, at(BERLIN, 2024, 3, 31, 9, 30),
                 id="a day keeps the wall-clock time, Berlin spring"),
    pytest.param(at(BERLIN, 2024, 3, 27, 9, 30), "1 week", BERLIN, utc(2024, 4, 3, 7, 30),
                 id="a week keeps the wall-clock time, Berlin spring"),
    pytest.param(at(BERLIN, 2024, 10, 23, 9, 30), "1 week", BERLIN, utc(2024, 10, 30, 8, 30),
                 id="a week keeps the wall-clock time, Berlin fall"),
    pytest.param(at(NEW_YORK, 2024, 10, 30, 9, 30), "1 week", NEW_YORK, utc(2024, 11, 6, 14, 30),
                 id="a week keeps the wall-clock time, New York fall"),
    pytest.param(at(BERLIN, 2024, 3, 30, 2, 30), "1 day", BERLIN, utc(2024, 3, 31, 1, 0),
                 id="into the Berlin gap: the moment clocks jump to 03:00"),
    pytest.param(at(NEW_YORK, 2024, 3, 9, 2, 15), "1 day", NEW_YORK, utc(2024, 3, 10, 7, 0),
                 id="into the New York gap: the moment clocks jump to 03:00"),
    pytest.param(at(NEW_YORK, 2024, 11, 2, 1, 30), "1 day", NEW_YORK, utc(2024, 11, 3, 5, 30),
                 id="into the New York fold: the first 01:30"),
    pytest.param(at(BERLIN, 2024, 10, 26, 2, 30), "1 day", BERLIN, utc(2024, 10, 27, 0, 30),
                 id="into the Berlin fold: the first 02:30"),
    pytest.param(utc(2024, 11, 3, 6, 30), "1 day", NEW_YORK, utc(2024, 11, 4, 6, 30),
                 id="from the second 01:30: 01:30 the next day"),
    pytest.param(at(NEW_YORK, 2024, 6, 7, 10), "1 business day", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 10), id="Friday + 1 business day = Monday"),
    pytest.param(at(NEW_YORK, 2024, 6, 6, 10), "1 business day", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 7, 10), id="Thursday + 1 business day = Friday"),
    pytest.param(at(NEW_YORK, 2024, 6, 8, 10), "1 business day", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 10), id="Saturday + 1 business day = Monday"),
    pytest.param(at(NEW_YORK, 2024, 6, 9, 10), "1 business day", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 10), id="Sunday + 1 business day = Monday"),
    pytest.param(at(NEW_YORK, 2024, 6, 8, 10), "2 business days", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 11, 10), id="Saturday + 2 business days = Tuesday"),
    pytest.param(at(NEW_YORK, 2024, 6, 7, 10), "5 business days", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 14, 10), id="Friday + 5 business days = Friday"),
    pytest.param(at(NEW_YORK, 2024, 6, 5, 10), "3 business days", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 10), id="Wednesday + 3 business days = Monday"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 10), "10 business days", NEW_YORK,
                 at(NEW_YORK, 2024, 6, 17, 10), id="two working weeks"),
    pytest.param(utc(2024, 6, 8, 2), "1 business day", NEW_YORK, utc(2024, 6, 11, 2),
                 id="business days follow the local calendar: Friday 22:00 in New York"),
    pytest.param(utc(2024, 6, 8, 2), "1 business day", ZoneInfo("UTC"), utc(2024, 6, 10, 2),
                 id="the same instant is a Saturday in UTC"),
    pytest.param(at(NEW_YORK, 2024, 3, 8, 9, 30), "1 business day", NEW_YORK,
                 utc(2024, 3, 11, 13, 30), id="business days keep wall time across spring"),
])
def test_add_wait(start: datetime, wait: str | None, tz: ZoneInfo, expected: datetime) -> None:
    result = add_wait(start, parse_wait(wait) if wait else None, tz)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(("tz", "day"), [
    (BERLIN, date(2024, 3, 30)), (BERLIN, date(2024, 10, 26)),
    (NEW_YORK, date(2024, 3, 9)), (NEW_YORK, date(2024, 11, 2)),
])
def test_a_day_is_the_first_instant_at_or_after_the_same_wall_time(tz: ZoneInfo, day: date) -> None:
    # Every 10 minutes of the day before a change: the result is on the next local date, at the
    # same wall time, or where the clocks jumped over it; and the minute before it is earlier.
    for minutes in range(0, 24 * 60, 10):
        wall = datetime.combine(day, time()) + minutes * MINUTE
        moment = wall.replace(tzinfo=tz)
        result = add_wait(moment, Wait(1, "days"), tz)
        target = wall + timedelta(days=1)
        got = result.astimezone(tz).replace(tzinfo=None)
        assert got == target or (got > target and got - target <= timedelta(hours=1)), wall
        assert (result - MINUTE).astimezone(tz).replace(tzinfo=None) < target, wall


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2024, 6, 3, 12)
    for call in (lambda: add_wait(naive, None, NEW_YORK),
                 lambda: in_window(naive, WEEKDAYS_9_TO_4, NEW_YORK),
                 lambda: next_window_opening(naive, None, NEW_YORK),
                 lambda: due_at(naive, None, None, NEW_YORK)):
        with pytest.raises(ValueError, match="naive"):
            call()


# -- windows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("moment", "window", "tz", "expected"), [
    pytest.param(utc(2024, 6, 8, 3), None, NEW_YORK, True, id="no window: always"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 9), WEEKDAYS_9_TO_4, NEW_YORK, True,
                 id="exactly at start is inside"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 16), WEEKDAYS_9_TO_4, NEW_YORK, False,
                 id="exactly at end is outside"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 15, 59, 59, 999999), WEEKDAYS_9_TO_4, NEW_YORK, True,
                 id="just before end"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 8, 59, 59), WEEKDAYS_9_TO_4, NEW_YORK, False,
                 id="just before start"),
    pytest.param(at(NEW_YORK, 2024, 6, 8, 10), WEEKDAYS_9_TO_4, NEW_YORK, False, id="Saturday"),
    pytest.param(utc(2024, 6, 3, 14), WEEKDAYS_9_TO_4, NEW_YORK, True, id="10:00 in New York"),
    pytest.param(utc(2024, 6, 3, 14), WEEKDAYS_9_TO_4, BERLIN, False, id="16:00 in Berlin"),
    pytest.param(utc(2024, 6, 10, 0), WEEKDAYS_9_TO_4, TOKYO, True,
                 id="Monday 09:00 in Tokyo is Monday 00:00 UTC"),
    pytest.param(utc(2024, 6, 9, 23, 30), WEEKDAYS_9_TO_4, TOKYO, False,
                 id="Sunday in UTC, Monday 08:30 in Tokyo"),
    pytest.param(utc(2024, 6, 7, 23), WEEKDAYS_9_TO_4, TOKYO, False,
                 id="Friday in UTC, Saturday 08:00 in Tokyo"),
    pytest.param(utc(2024, 6, 3, 8), daily(time(9), time(16), zone="Europe/Berlin"), NEW_YORK,
                 True, id="a window pinned to Berlin ignores the contact's zone"),
    pytest.param(utc(2024, 6, 3, 8), daily(time(9), time(16)), NEW_YORK, False,
                 id="the same instant is 04:00 for a New York contact"),
])
def test_in_window(moment: datetime, window: SendWindow | None, tz: ZoneInfo,
                   expected: bool) -> None:
    assert in_window(moment, window, tz) is expected


@pytest.mark.parametrize(("moment", "window", "tz", "expected"), [
    pytest.param(utc(2024, 6, 8, 3), None, NEW_YORK, utc(2024, 6, 8, 3), id="no window"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 10, 17, 33), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 3, 10, 17, 33), id="inside: the moment itself"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 9), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 3, 9), id="exactly at start: the moment itself"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 16), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 4, 9), id="exactly at end: tomorrow's start"),
    pytest.param(at(NEW_YORK, 2024, 6, 7, 8), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 7, 9), id="Friday morning: Friday 09:00"),
    pytest.param(at(NEW_YORK, 2024, 6, 7, 17), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 9), id="Friday 17:00: Monday 09:00"),
    pytest.param(at(NEW_YORK, 2024, 6, 8, 12), WEEKDAYS_9_TO_4, NEW_YORK,
                 at(NEW_YORK, 2024, 6, 10, 9), id="Saturday: Monday 09:00"),
    pytest.param(at(TOKYO, 2024, 6, 7, 18), WEEKDAYS_9_TO_4, TOKYO, utc(2024, 6, 10, 0),
                 id="Friday 18:00 in Tokyo: Monday 09:00 Tokyo, Sunday in UTC"),
    pytest.param(at(BERLIN, 2024, 6, 7, 17), daily(time(9), time(16), range(5), "Europe/Berlin"),
                 NEW_YORK, at(BERLIN, 2024, 6, 10, 9), id="a window pinned to Berlin"),
    pytest.param(at(BERLIN, 2024, 3, 29, 17), WEEKDAYS_9_TO_4, BERLIN, utc(2024, 4, 1, 7),
                 id="a weekend with spring forward in Berlin"),
    pytest.param(at(NEW_YORK, 2024, 11, 1, 17), WEEKDAYS_9_TO_4, NEW_YORK, utc(2024, 11, 4, 14),
                 id="a weekend with fall back in New York"),
    pytest.param(utc(2024, 3, 31, 0, 30), daily(time(2, 30), time(4)), BERLIN,
                 utc(2024, 3, 31, 1), id="a start inside the gap: when clocks jump to 03:00"),
    pytest.param(utc(2024, 3, 31, 0), daily(time(2), time(2, 30)), BERLIN, utc(2024, 4, 1, 0),
                 id="a window inside the gap is skipped that day"),
    pytest.param(utc(2024, 3, 9, 17), daily(time(2), time(2, 30), {6}), NEW_YORK,
                 utc(2024, 3, 17, 6), id="a Sunday-only window eaten by the gap: next Sunday"),
    pytest.param(utc(2024, 11, 3, 4), daily(time(1, 30), time(3)), NEW_YORK,
                 utc(2024, 11, 3, 5, 30), id="an ambiguous start: its first occurrence"),
    pytest.param(utc(2024, 11, 3, 5, 30), daily(time(1), time(1, 20)), NEW_YORK,
                 utc(2024, 11, 3, 6), id="after the window, clocks go back into it"),
])
def test_next_window_opening(moment: datetime, window: SendWindow | None, tz: ZoneInfo,
                             expected: datetime) -> None:
    result = next_window_opening(moment, window, tz)
    assert result == expected
    assert result.tzinfo is UTC


BRUTE_WINDOWS = [
    WEEKDAYS_9_TO_4,
    daily(time(0, 30), time(3, 30)),  # contains every gap and fold of both zones
    daily(time(2), time(2, 30)),  # inside them
    daily(time(2, 30), time(3, 30)),  # opens in the spring gap
    daily(time(1), time(2, 15), {6}),  # Sundays only: all four changes are on a Sunday
    daily(time(23), time(23, 59), {0, 2, 4}),
    daily(time(9), time(16), range(5), "Asia/Tokyo"),
]


@pytest.mark.parametrize("window", BRUTE_WINDOWS, ids=lambda w: (
    f"{''.join(str(d) for d in sorted(w.days))} {w.start:%H:%M}-{w.end:%H:%M} {w.timezone}"))
@pytest.mark.parametrize(("tz", "change"), [
    pytest.param(BERLIN, utc(2024, 3, 31, 1), id="Berlin spring"),
    pytest.param(BERLIN, utc(2024, 10, 27, 1), id="Berlin fall"),
    pytest.param(NEW_YORK, utc(2024, 3, 10, 7), id="New York spring"),
    pytest.param(NEW_YORK, utc(2024, 11, 3, 6), id="New York fall"),
])
def test_next_window_opening_is_the_earliest_minute_inside(
        window: SendWindow, tz: ZoneInfo, change: datetime) -> None:
    # hypothesis is not installed, so: brute force. Mark every minute from two days before the
    # change to ten days after as inside or not, then check moments across the first four days.
    origin = change - timedelta(days=2)
    inside = [in_window(origin + i * MINUTE, window, tz) for i in range(12 * 24 * 60)]
    next_inside = [0] * (len(inside) + 1)
    next_inside[-1] = 10**9
    for i in reversed(range(len(inside))):
        next_inside[i] = i if inside[i] else next_inside[i + 1]
    for i in range(0, 4 * 24 * 60, 7):
        moment = origin + i * MINUTE + timedelta(seconds=30 * (i % 2))  # some between minutes
        expected = moment if inside[i] else origin + next_inside[i + 1] * MINUTE
        assert next_window_opening(moment, window, tz) == expected, moment


# -- due_at -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("previous", "wait", "expected"), [
    pytest.param(at(NEW_YORK, 2024, 6, 7, 15), "2 hours", at(NEW_YORK, 2024, 6, 10, 9),
                 id="Friday 15:00 + 2 hours: Monday 09:00"),
    pytest.param(at(NEW_YORK, 2024, 6, 6, 15, 30), "1 day", at(NEW_YORK, 2024, 6, 7, 15, 30),
                 id="Thursday + 1 day: Friday, inside"),
    pytest.param(at(NEW_YORK, 2024, 6, 7, 15, 30), "1 day", at(NEW_YORK, 2024, 6, 10, 9),
                 id="Friday + 1 day: Saturday, so Monday 09:00"),
    pytest.param(at(NEW_YORK, 2024, 6, 3, 10), "5 business days", at(NEW_YORK, 2024, 6, 10, 10),
                 id="Monday + 5 business days"),
    pytest.param(at(NEW_YORK, 2024, 6, 8, 3), None, at(NEW_YORK, 2024, 6, 10, 9),
                 id="no wait: the next opening"),
    pytest.param(at(NEW_YORK, 2024, 3, 8, 15, 30), "1 week", utc(2024, 3, 15, 19, 30),
                 id="a week across spring forward: same wall time"),
])
def test_due_at(previous: datetime, wait: str | None, expected: datetime) -> None:
    assert due_at(previous, parse_wait(wait) if wait else None, WEEKDAYS_9_TO_4,
                  NEW_YORK) == expected
