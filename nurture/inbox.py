"""Hearing back: replies recorded by hand now, read from the mailbox later.

A reply means a human conversation has started, so the automation steps aside: it stops the
enrollments whose campaign has ``reply`` in ``stop_on``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .app import Nurture
from .contacts import get_contact
from .engine import log_event, stop_contact
from .errors import NotFound
from .models import Reply


@dataclass
class ReplyResult:
    email: str
    stopped: list[str] = field(default_factory=list)  # campaign ids


def record_reply(app: Nurture, email: str, *, at: datetime | None = None, source: str = "manual",
                 message_id: str | None = None, touch_id: int | None = None) -> ReplyResult:
    """Record that ``email`` replied, and stop what a reply stops, in one transaction."""
    now = app.now()
    with app.db.transaction() as session:
        contact = get_contact(session, email)
        if contact is None:
            raise NotFound(f"no contact with email {email!r}")
        session.add(Reply(contact_id=contact.id, received_at=at or now, source=source,
                          message_id=message_id, touch_id=touch_id, recorded_at=now))
        stopped = stop_contact(app, session, contact, "reply")
        log_event(session, now, "reply_recorded", contact_id=contact.id, source=source,
                  stopped=[e.campaign_id for e in stopped])
        return ReplyResult(contact.email, [e.campaign_id for e in stopped])
