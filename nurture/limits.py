"""Sending limits per sender mailbox: a daily cap and a minimum spacing between sends.

A personal mailbox that suddenly sends hundreds of emails looks like a spammer to its provider.
Excess is never dropped: the touch waits until the mailbox may send again.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, case, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Mailbox
from .settings import Settings


def take_send(settings: Settings, session: Session, now: datetime) -> datetime | None:
    """Count one send against the sender's mailbox, or say when it may send next.

    Returns None when the send may go (and counts it), else the earliest time to try again.
    """
    address = settings.sender_email.lower()
    zone = ZoneInfo(settings.practice_timezone)
    today = mailbox_day(settings, now)
    spacing = timedelta(seconds=settings.limits_spacing)
    values = {"b_address": address, "today": today, "per_day": settings.limits_per_day,
              "now": now, "cutoff": now - spacing}
    counted = session.connection().scalar(_TAKE, values)  # Core: the row almost always exists
    if counted is None and session.get(Mailbox, address) is None:
        _create(session, address, today)
        counted = session.connection().scalar(_TAKE, values)
    if counted is not None:
        return None
    mailbox = session.get_one(Mailbox, address, populate_existing=True)
    if mailbox.day == today and mailbox.sent_today >= settings.limits_per_day:
        tomorrow = datetime.combine(today + timedelta(days=1), time(0), zone)
        return tomorrow.astimezone(now.tzinfo)
    assert mailbox.last_sent_at is not None
    return mailbox.last_sent_at + spacing


# Built once: building a statement costs more than running it (it runs once per email).
_TAKE = (update(Mailbox)
         .where(Mailbox.address == bindparam("b_address"),
                or_(Mailbox.day != bindparam("today"),
                    Mailbox.sent_today < bindparam("per_day")),
                or_(Mailbox.last_sent_at.is_(None),
                    Mailbox.last_sent_at <= bindparam("cutoff", type_=Mailbox.last_sent_at.type)))
         .values(sent_today=case((Mailbox.day == bindparam("today"), Mailbox.sent_today + 1),
                                 else_=1),
                 day=bindparam("today"), last_sent_at=bindparam("now",
                                                                 type_=Mailbox.last_sent_at.type))
         .returning(Mailbox.sent_today))


def mailbox_day(settings: Settings, now: datetime) -> date:
    """The day a send counts against: the practice's, in its time zone."""
    return now.astimezone(ZoneInfo(settings.practice_timezone)).date()


def take_sends(settings: Settings, session: Session, now: datetime, wanted: int) -> int:
    """Count up to ``wanted`` sends at once against today's cap, for sends about to go one
    after another; returns how many were counted (0 when the cap is reached).

    With several workers, updating the mailbox's row for every send made them queue for its
    lock, held to each commit. Taken a few at a time, most sends touch it not at all. Only
    without spacing: with it, each send must wait its own turn (:func:`take_send`). Sends
    counted but then not made are given back (:func:`give_back_sends`); if the worker dies
    first, they only hold today's later sends back to tomorrow, never past the cap.
    """
    address = settings.sender_email.lower()
    if settings.limits_spacing or wanted < 1:
        return 0
    today = mailbox_day(settings, now)
    mailbox = session.get(Mailbox, address, with_for_update=True, populate_existing=True)
    if mailbox is None:
        _create(session, address, today)
        mailbox = session.get_one(Mailbox, address, with_for_update=True,
                                  populate_existing=True)
    used = mailbox.sent_today if mailbox.day == today else 0
    got = max(0, min(wanted, settings.limits_per_day - used))
    if got:
        mailbox.day, mailbox.sent_today, mailbox.last_sent_at = today, used + got, now
    return got


def give_back_sends(settings: Settings, session: Session, day: date, count: int) -> None:
    """Uncount sends that :func:`take_sends` counted for ``day`` but that were not made."""
    session.execute(update(Mailbox).where(Mailbox.address == settings.sender_email.lower(),
                                          Mailbox.day == day, Mailbox.sent_today >= count)
                    .values(sent_today=Mailbox.sent_today - count))


def _create(session: Session, address: str, today: date) -> None:
    """The mailbox's row, on its first send."""
    try:
        with session.begin_nested():
            session.add(Mailbox(address=address, day=today, sent_today=0))
    except IntegrityError:
        pass  # another worker created it first
