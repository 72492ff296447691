"""Sending limits per sender mailbox: a daily cap and a minimum spacing between sends.

A personal mailbox that suddenly sends hundreds of emails looks like a spammer to its provider.
Excess is never dropped: the touch waits until the mailbox may send again.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
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
    today = now.astimezone(zone).date()
    spacing = timedelta(seconds=settings.limits_spacing)
    values = {"b_address": address, "today": today, "per_day": settings.limits_per_day,
              "now": now, "cutoff": now - spacing}
    counted = session.connection().execute(_TAKE, values).scalar()  # the row almost always exists
    if counted is None and session.get(Mailbox, address) is None:
        try:
            with session.begin_nested():
                session.add(Mailbox(address=address, day=today, sent_today=0))
        except IntegrityError:
            pass  # another worker created it first
        counted = session.connection().execute(_TAKE, values).scalar()
    if counted is not None:
        return None
    mailbox = session.get_one(Mailbox, address, populate_existing=True)
    if mailbox.day == today and mailbox.sent_today >= settings.limits_per_day:
        tomorrow = datetime.combine(today + timedelta(days=1), time(0), zone)
        return tomorrow.astimezone(now.tzinfo)
    assert mailbox.last_sent_at is not None
    return mailbox.last_sent_at + spacing


_TAKE = (
    update(Mailbox)
    .where(Mailbox.address == bindparam("b_address"),
           or_(Mailbox.day != bindparam("today"), Mailbox.sent_today < bindparam("per_day")),
           or_(Mailbox.last_sent_at.is_(None),
               Mailbox.last_sent_at <= bindparam("cutoff", type_=Mailbox.last_sent_at.type)))
    .values(sent_today=case((Mailbox.day == bindparam("today"), Mailbox.sent_today + 1), else_=1),
            day=bindparam("today"), last_sent_at=bindparam("now", type_=Mailbox.last_sent_at.type))
    .returning(Mailbox.sent_today))
