"""What `nurture status` shows: where every enrollment stands, what goes out next, what went out,
what needs a person's attention (uncertain and failed touches), and what the inbox heard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .app import Nurture
from .models import CampaignRow, Contact, Enrollment, InboxMessage, Touch, TouchState


@dataclass(frozen=True)
class TouchLine:
    touch_id: int
    at: datetime | None
    email: str
    campaign: str
    step: str
    state: str
    note: str = ""


@dataclass
class Status:
    enrollments: dict[str, dict[str, int]] = field(default_factory=dict)  # campaign → state → n
    touches: dict[str, int] = field(default_factory=dict)  # state → n
    next: list[TouchLine] = field(default_factory=list)
    last: list[TouchLine] = field(default_factory=list)
    attention: list[TouchLine] = field(default_factory=list)
    skipped: list[TouchLine] = field(default_factory=list)  # latest first, with the reason
    inbox: dict[str, int] = field(default_factory=dict)  # kind (nurture.inbound.classify.KINDS) → n
    inbox_unmatched: int = 0  # bounces, replies... that matched no contact: left alone
    # Contacts added by a referral from an unknown address (or imported with no name and no
    # organization): the first ``limit`` addresses, and how many there are.
    needs_details: list[str] = field(default_factory=list)
    needs_details_count: int = 0
    paused: list[str] = field(default_factory=list)  # campaigns paused (`nurture pause`)


def status(app: Nurture, limit: int = 10) -> Status:
    result = Status()
    with app.db.transaction() as session:
        for campaign, state, count in session.execute(
                select(Enrollment.campaign_id, Enrollment.state, func.count())
                .group_by(Enrollment.campaign_id, Enrollment.state)
                .order_by(Enrollment.campaign_id, Enrollment.state)):
            result.enrollments.setdefault(campaign, {})[state] = count
        result.paused = list(session.scalars(select(CampaignRow.id).where(CampaignRow.paused)
                                             .order_by(CampaignRow.id)))
        result.touches = {state: count for state, count in session.execute(
            select(Touch.state, func.count()).group_by(Touch.state))}
        result.needs_details_count = session.scalar(
            select(func.count()).select_from(Contact).where(Contact.needs_details)) or 0
        result.needs_details = list(session.scalars(
            select(Contact.email).where(Contact.needs_details).order_by(Contact.id).limit(limit)))
        # Our own notes to the owner land in the same mailbox: read back, they are not news.
        result.inbox = {kind: count for kind, count in session.execute(
            select(InboxMessage.kind, func.count()).where(InboxMessage.kind != "own")
            .group_by(InboxMessage.kind))}
        result.inbox_unmatched = session.scalar(select(func.count()).select_from(InboxMessage)
                                                .where(InboxMessage.action == "unmatched")) or 0

        def lines(*where: Any, order: Any, at: Any, note: Any = None) -> list[TouchLine]:
            query = (select(Touch.id, at, Contact.email, Enrollment.campaign_id, Touch.step_id,
                            Touch.state, note if note is not None else Touch.subject)
                     .join(Touch.enrollment).join(Enrollment.contact)
                     .where(*where).order_by(order).limit(limit))
            return [TouchLine(touch_id, when, email, campaign, step, state, note or "")
                    for touch_id, when, email, campaign, step, state, note
                    in session.execute(query)]

        result.next = lines(Touch.state.in_([TouchState.SCHEDULED, TouchState.QUEUED]),
                            order=Touch.due_at, at=Touch.due_at)
        result.last = lines(Touch.state == TouchState.SENT, order=Touch.sent_at.desc(),
                            at=Touch.sent_at)
        result.attention = lines(Touch.state.in_([TouchState.UNCERTAIN, TouchState.FAILED]),
                                 order=Touch.id, at=Touch.claimed_at, note=Touch.reason)
        # e.g. "no unsent article left": the library needs more for these contacts.
        result.skipped = lines(Touch.state == TouchState.SKIPPED, order=Touch.id.desc(),
                               at=Touch.claimed_at, note=Touch.reason)
    return result
