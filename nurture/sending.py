"""The send path of one touch: claim, re-check, render, send, record.

1. **Claim** the row with a compare-and-set update (queued → sending) and, in the same
   transaction, re-check everything that may have changed since it was planned: the contact's
   status, the enrollment, the campaign and step, the send window. Render it there too, so a
   broken template fails the row instead of half-sending it.
2. **Send** over the transport, outside any transaction.
3. **Record** it as sent with its Message-ID and plan the next step, in one transaction.

No code path sends without holding the claim, so two workers, two ticks or a retried RQ job can
never send one row twice. A worker killed between 2 and 3 leaves the row ``sending``; its lease
expires and :func:`nurture.engine.recover_expired_claims` marks it ``uncertain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .app import Nurture
from .contacts import contact_view
from .delivery import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    Transport,
    UncertainDeliveryError,
)
from .engine import advance, log_event, suppress_contact
from .errors import TemplateError
from .models import ContactStatus, EnrollmentState, Referral, Touch, TouchState
from .render import build_message, make_message_id
from .schedule import in_window, next_window_opening
from .unsubscribe import unsubscribe_mailto, unsubscribe_url


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # re-check said no (or already handled)
    rescheduled: list[int] = field(default_factory=list)  # outside the window now
    failed: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # transient errors: RQ retries the job


def deliver(app: Nurture, touch_ids: list[int], transport: Transport) -> DeliveryReport:
    """Send each touch that is still queued, one claim at a time, over one transport."""
    report = DeliveryReport()
    for touch_id in touch_ids:
        message = _claim(app, touch_id, report)
        if message is not None:
            _send_and_record(app, touch_id, message, transport, report)
    return report


def _claim(app: Nurture, touch_id: int, report: DeliveryReport) -> EmailMessage | None:
    now = app.now()
    lease = now + timedelta(seconds=app.settings.worker_lease_seconds)
    with app.db.transaction() as session:
        got = session.scalar(
            update(Touch).where(Touch.id == touch_id, Touch.state == TouchState.QUEUED)
            .values(state=TouchState.SENDING, claimed_at=now, lease_until=lease,
                    attempts=Touch.attempts + 1)
            .returning(Touch.id))
        if got is None:
            report.skipped.append(touch_id)  # someone else has it, or it was stopped
            return None
        touch = session.get_one(Touch, touch_id, populate_existing=True)
        why_not = _recheck(app, session, touch)
        if why_not == "window":
            report.rescheduled.append(touch_id)
            return None
        if why_not:
            touch.state, touch.reason = TouchState.SKIPPED, why_not
            log_event(session, now, "touch_skipped", touch_id=touch.id,
                      enrollment_id=touch.enrollment_id, why=why_not)
            report.skipped.append(touch_id)
            return None
        try:
            return _compose(app, session, touch)
        except TemplateError as exc:
            touch.state, touch.reason = TouchState.FAILED, str(exc)
            log_event(session, now, "touch_failed", touch_id=touch.id,
                      enrollment_id=touch.enrollment_id, why=str(exc))
            report.failed.append(touch_id)
            return None


def _recheck(app: Nurture, session: Session, touch: Touch) -> str | None:
    """Why this touch must not go out now, or None. ``"window"`` means later, not never."""
    enrollment, contact = touch.enrollment, touch.enrollment.contact
    if contact.status != ContactStatus.ACTIVE:
        return f"contact is {contact.status}"
    campaign = app.campaigns.get(enrollment.campaign_id)
    if campaign is None:
        return f"campaign {enrollment.campaign_id!r} no longer exists"
    try:
        campaign.step(touch.step_id)
    except KeyError:
        return f"step {touch.step_id!r} was removed from campaign {campaign.id!r}"
    if not touch.trigger_key and enrollment.state != EnrollmentState.ACTIVE:
        return f"enrollment {enrollment.state} ({enrollment.stop_reason or 'done'})"
    window = campaign.send_window
    zone = app.zone_for(contact.timezone, window.timezone if window else None)
    now = app.now()
    if not in_window(now, window, zone):
        touch.state, touch.job_id = TouchState.SCHEDULED, None
        touch.due_at = next_window_opening(now, window, zone)
        touch.attempts -= 1  # not an attempt: nothing was tried
        return "window"
    return None


def _compose(app: Nurture, session: Session, touch: Touch) -> EmailMessage:
    enrollment, contact = touch.enrollment, touch.enrollment.contact
    campaign = app.campaigns[enrollment.campaign_id]
    step = campaign.step(touch.step_id)
    referrals = session.execute(select(func.count(Referral.id), func.max(Referral.referred_on))
                                .where(Referral.contact_id == contact.id)).one()
    touches_sent = session.scalar(select(func.count(Touch.id)).join(Touch.enrollment).where(
        Touch.state == TouchState.SENT, Touch.enrollment.has(contact_id=contact.id)))
    settings = app.settings
    link = unsubscribe_url(settings, contact.id)
    context = {
        "contact": contact_view(contact),
        "sender": app.sender_view(),
        "owner": app.sender_view(),
        "practice": app.practice_view(),
        "campaign": {"id": campaign.id, "name": campaign.name},
        "step": {"id": step.id},
        "unsubscribe_url": link,
        "referral_count": referrals[0],
        "last_referral_date": referrals[1],
        "touch_count": touches_sent or 0,
    }
    rendered = app.renderer.render(step.template, step.subject, context,
                                   field=f"{campaign.id}.steps.{step.id}")
    message_id = make_message_id(touch.id, settings.secret_key, settings.sender_domain)
    touch.message_id, touch.subject = message_id, rendered.subject
    to_name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
    return build_message(rendered, from_name=settings.sender_name, from_email=settings.sender_email,
                         to_name=to_name, to_email=contact.email, message_id=message_id,
                         date=app.now(), unsubscribe_url=link,
                         unsubscribe_mailto=unsubscribe_mailto(settings, contact.id))


def _send_and_record(app: Nurture, touch_id: int, message: EmailMessage, transport: Transport,
                     report: DeliveryReport) -> None:
    try:
        transport.send(message)
    except DeliveryError as exc:
        _record_failure(app, touch_id, exc, report)
        return
    now = app.now()
    with app.db.transaction() as session:
        # ``uncertain`` too: if the lease ran out while we were sending, we now know it went.
        done = session.scalar(
            update(Touch).where(Touch.id == touch_id,
                                Touch.state.in_([TouchState.SENDING, TouchState.UNCERTAIN]))
            .values(state=TouchState.SENT, sent_at=now, reason=None).returning(Touch.id))
        touch = session.get_one(Touch, touch_id, populate_existing=True)
        log_event(session, now, "touch_sent", touch_id=touch_id,
                  contact_id=touch.enrollment.contact_id,
                  enrollment_id=touch.enrollment_id, step=touch.step_id,
                  message_id=touch.message_id, recorded=done is not None)
        if done is not None:
            advance(app, session, touch, now)
    report.sent.append(touch_id)


def _record_failure(app: Nurture, touch_id: int, exc: DeliveryError,
                    report: DeliveryReport) -> None:
    now = app.now()
    with app.db.transaction() as session:
        touch = session.get_one(Touch, touch_id, populate_existing=True)
        if touch.state != TouchState.SENDING:
            return
        touch.reason = str(exc)
        if isinstance(exc, TransientDeliveryError):
            touch.state = TouchState.QUEUED  # same job: RQ's Retry runs it again
            report.retry.append(touch_id)
            kind = "touch_retry"
        elif isinstance(exc, UncertainDeliveryError):
            touch.state = TouchState.UNCERTAIN
            report.uncertain.append(touch_id)
            kind = "touch_uncertain"
        else:
            touch.state = TouchState.FAILED
            report.failed.append(touch_id)
            kind = "touch_failed"
            if isinstance(exc, PermanentDeliveryError) and exc.kind == "mailbox":
                suppress_contact(app, session, touch.enrollment.contact, ContactStatus.BOUNCED,
                                 str(exc))
        log_event(session, now, kind, touch_id=touch_id, enrollment_id=touch.enrollment_id,
                  code=exc.code, enhanced=exc.enhanced, why=str(exc))
