"""The send path: one email at a time, claim → render → send → record, in that order, once.

:func:`send_touch` is the whole story of one email, top to bottom:

1. **Claim** (:func:`claim`): one compare-and-set update (queued → sending) that re-checks, in
   the same transaction, everything that may have changed since the row was planned (the
   contact's status, the enrollment, the campaign and its step, a pause, the send window, the
   mailbox's limits) and picks the email's library item. It commits before anything goes to
   the server, and it is the only way a row becomes ``sending``.
2. **Render** the email, outside any transaction. A row that cannot render is handed back or
   failed, never left ``sending``.
3. **Send** over the batch's one reused connection, in two steps: the transport takes all of
   the message but the final commitment (:meth:`Transport.stage`); the row is marked
   ``transmitting`` (committed); then the message is committed (SMTP's closing ``.``).
4. **Record** it as sent, with its subject, and plan the next step, in one commit.

A worker killed before the mark leaves the row ``sending``: nothing reached anyone, and once
its lease runs out the tick plans it again. Killed after the mark, it leaves the row
``transmitting``, which the tick turns into ``uncertain`` (possibly delivered): never resent
blindly, never dropped, settled by ``nurture resolve``
(:func:`nurture.ticking.recover_expired_claims`). Each step after the claim compares the claim's
attempt number, so a worker whose lease ran out can never touch a row claimed again since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Update, bindparam, delete, select, update
from sqlalchemy.orm import Session, defaultload

from ..app import Nurture
from ..engine import advance, log_event, suppress_contact
from ..errors import TemplateError
from ..models import Contact, ContactStatus, ContentSent, Enrollment, Touch, TouchState
from . import activity
from .compose import Facts, Prepared, facts_of, prepare_touch, render_touch
from .recheck import LATER, recheck
from .transport import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    Transport,
    UncertainDeliveryError,
)

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """What a batch did, touch ids by outcome."""

    sent: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # re-check said no (or already handled)
    rescheduled: list[int] = field(default_factory=list)  # outside the window now
    failed: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # transient errors: RQ retries the job
    unavailable: str | None = None  # the transport could not connect: the batch stopped


@dataclass
class Batch:
    """What a batch reads once for all its rows: who each touch is for, and the relationship
    facts of each contact (see :func:`nurture.outbound.compose.facts_of`). A contact's facts are
    used once: after an email to them, their next email in the batch reads its own."""

    owners: dict[int, tuple[int, int]]  # touch id -> (contact id, enrollment id)
    facts: dict[int, Facts]  # contact id -> facts

    @classmethod
    def read(cls, app: Nurture, touch_ids: list[int]) -> Batch:
        with app.db.transaction() as session:
            rows = session.execute(select(Touch.id, Enrollment.contact_id, Touch.enrollment_id)
                                   .join(Touch.enrollment)
                                   .where(Touch.id.in_(touch_ids))).all() if touch_ids else []
            owners = {touch_id: (contact_id, enrollment_id)
                      for touch_id, contact_id, enrollment_id in rows}
            facts = facts_of(session, {contact_id for contact_id, _ in owners.values()})
        return cls(owners, facts)


@dataclass(frozen=True)
class Claimed:
    """A row this worker holds, and its email's parts. ``attempt`` is the claim's number: the
    later steps compare-and-set on it."""

    touch_id: int
    attempt: int
    contact_id: int
    enrollment_id: int
    prepared: Prepared


def deliver(app: Nurture, touch_ids: list[int], transport: Transport,
            job_id: str | None = None) -> DeliveryReport:
    """Send each touch of the batch that is still queued, one at a time (:func:`send_touch`),
    over one transport.

    A transport that cannot connect stops the batch, with every unsent row still queued and no
    attempt counted: RQ retries the whole job. With ``job_id`` (the RQ job running this
    batch), only rows queued under that job are claimed, and the job keeps a lease on its
    queued rows while it works: if the worker is killed, the lease runs out and the next tick
    queues them again, without waiting for RQ to notice the dead job (which takes minutes).
    """
    report = DeliveryReport()
    renew_at: datetime | None = None
    with app.campaigns_pinned(), app.db.held_connection():
        batch = Batch.read(app, touch_ids)
        for touch_id in touch_ids:
            if job_id is not None and (renew_at is None or app.now() >= renew_at):
                renew_at = _lease_job(app, job_id)
            if not send_touch(app, touch_id, transport, batch, report, job_id):
                break
        if report.retry and job_id is not None:
            _lease_job(app, job_id, drop=True)
    return report


def send_touch(app: Nurture, touch_id: int, transport: Transport, batch: Batch,
               report: DeliveryReport, job_id: str | None = None) -> bool:
    """Claim, render, send and record one touch. False when the transport cannot connect: the
    batch stops there."""
    try:
        claimed = claim(app, touch_id, batch, report, job_id)
    except Exception as exc:  # a bug or bad data in this row: the batch goes on
        log.exception("touch %s could not be claimed", touch_id)
        _count_attempt(app, touch_id, exc, report)
        return True
    if claimed is None:
        return True

    try:
        composed = render_touch(app, claimed.prepared, app.now())
    except Exception as exc:  # noqa: BLE001 - a broken template or a bug: this row only
        _hand_back(app, claimed, exc, report)
        return True
    assert composed.message is not None and composed.rendered is not None
    subject = composed.rendered.subject

    try:
        staged = transport.stage(composed.message)
    except DeliveryError as exc:  # nothing was delivered
        if exc.connecting:
            _release(app, claimed)
            report.unavailable = str(exc)
            report.retry.append(touch_id)
            return False
        _record_failure(app, claimed, exc, subject, report)
        return True
    except Exception as exc:  # noqa: BLE001 - a bug before the data ended: nothing delivered
        transport.close()
        _hand_back(app, claimed, exc, report)
        return True
    try:
        marked = _mark_transmitting(app, claimed)
    except BaseException:
        staged.abort()
        raise
    if not marked:  # the lease ran out and the row went on without us
        staged.abort()
        report.skipped.append(touch_id)
        return True
    try:
        staged.commit()
    except DeliveryError as exc:
        _record_failure(app, claimed, exc, subject, report)
        return True
    except Exception as exc:  # noqa: BLE001 - we cannot tell how far it got: never resend
        log.exception("touch %s: unexpected error while sending", touch_id)
        _record_failure(app, claimed, UncertainDeliveryError(repr(exc)), subject, report)
        return True

    _record_sent(app, claimed, subject, report)
    return True


def claim(app: Nurture, touch_id: int, batch: Batch, report: DeliveryReport,
          job_id: str | None = None) -> Claimed | None:
    """Take the row (queued → sending) and re-check it, in one transaction; None when it is not
    to be sent now (the report says why: someone else has it, it waits, or it was skipped)."""
    now = app.now()
    owners = batch.owners.get(touch_id)
    with app.db.transaction() as session:
        if owners is not None and app.db.engine.dialect.name == "postgresql":
            _lock_owners(session, *owners)
        attempt = session.connection().execute(_TAKE if job_id is None else _TAKE_MINE, {
            "touch": touch_id, "job": job_id, "now": now, "lease": _lease(app, now)}).scalar()
        if attempt is None:
            report.skipped.append(touch_id)  # someone else has it, or it was stopped
            return None
        touch = session.get_one(Touch, touch_id, populate_existing=True, options=[
            defaultload(Touch.enrollment).defaultload(Enrollment.contact).lazyload(Contact.tags)])
        why_not = recheck(app, session, touch)
        if why_not == LATER:
            report.rescheduled.append(touch_id)
            return None
        if why_not:
            _skip(app, session, touch, why_not, now, advancing=False)
            report.skipped.append(touch_id)
            return None
        contact_id = touch.enrollment.contact_id
        prepared = prepare_touch(app, session, touch, batch.facts.pop(contact_id, None))
        if isinstance(prepared, str):  # nothing left in the library for this contact
            _skip(app, session, touch, prepared, now, advancing=True)
            report.skipped.append(touch_id)
            return None
        touch.message_id = prepared.message_id
    return Claimed(touch_id, attempt, contact_id, touch.enrollment_id, prepared)


def _lock_owners(session: Session, contact_id: int, enrollment_id: int) -> None:
    """Lock the touch's contact and enrollment (shared) before claiming the touch.

    On PostgreSQL a reply, referral or unsubscribe updates these rows first; holding them here
    means the re-check sees a stop committed before the claim, and a stop racing it waits until
    the claim is decided. The order (contact, enrollment, touch) is the stop paths' order, so
    the two cannot deadlock. SQLite serialises writers anyway (every transaction here begins
    IMMEDIATE), so it needs no row locks.
    """
    session.execute(select(Contact.id).where(Contact.id == contact_id)
                    .with_for_update(read=True))
    session.execute(select(Enrollment.id).where(Enrollment.id == enrollment_id)
                    .with_for_update(read=True))


def _mine(claimed: Claimed, *states: TouchState) -> Update:
    """The update of ``claimed``'s row, if it is still in one of ``states`` under this claim."""
    return update(Touch).where(Touch.id == claimed.touch_id, Touch.state.in_(states),
                               Touch.attempts == claimed.attempt)


def _lease(app: Nurture, now: datetime) -> datetime:
    return now + timedelta(seconds=app.settings.worker_lease_seconds)


# The three statements of every email, built once (SQLAlchemy then finds each compiled in its
# cache) and run as Core on the session's connection: they change rows the session has not
# loaded, so there is no ORM bookkeeping to do.
_NOW = bindparam("now", type_=Touch.claimed_at.type)
_LEASE = bindparam("lease", type_=Touch.lease_until.type)
_TAKE = (update(Touch)
         .where(Touch.id == bindparam("touch"), Touch.state == TouchState.QUEUED)
         .values(state=TouchState.SENDING, claimed_at=_NOW, lease_until=_LEASE,
                 attempts=Touch.attempts + 1)
         .returning(Touch.attempts))
_TAKE_MINE = _TAKE.where(Touch.job_id == bindparam("job"))
_MARK = (update(Touch)
         .where(Touch.id == bindparam("touch"), Touch.state == TouchState.SENDING,
                Touch.attempts == bindparam("attempt"))
         .values(state=TouchState.TRANSMITTING, lease_until=_LEASE)
         .returning(Touch.id))
_RECORD = (update(Touch)
           .where(Touch.id == bindparam("touch"),
                  Touch.state.in_([TouchState.TRANSMITTING, TouchState.UNCERTAIN]),
                  Touch.attempts == bindparam("attempt"))
           .values(state=TouchState.SENT, sent_at=bindparam("now", type_=Touch.sent_at.type),
                   reason=None, subject=bindparam("subject"))
           .returning(Touch.enrollment_id, Touch.step_id, Touch.trigger_key))


def _mark_transmitting(app: Nurture, claimed: Claimed) -> bool:
    """sending → transmitting, committed just before the message is committed: from here on a
    crash may have delivered it. The lease starts again, for the server's answer."""
    with app.db.transaction() as session:
        return session.connection().execute(_MARK, {
            "touch": claimed.touch_id, "attempt": claimed.attempt,
            "lease": _lease(app, app.now())}).first() is not None


def _record_sent(app: Nurture, claimed: Claimed, subject: str, report: DeliveryReport) -> None:
    """Record the send and plan the next step, in one commit. ``uncertain`` counts too: if the
    lease ran out while the server was answering, we now know it went."""
    now = app.now()
    with app.db.transaction() as session:
        done = session.connection().execute(_RECORD, {
            "touch": claimed.touch_id, "attempt": claimed.attempt, "now": now,
            "subject": subject}).first()
        log_event(session, now, "touch_sent", touch_id=claimed.touch_id,
                  contact_id=claimed.contact_id, enrollment_id=claimed.enrollment_id,
                  step=claimed.prepared.step.id, message_id=claimed.prepared.message_id,
                  recorded=done is not None)
        if done is not None:
            advance(app, session, done, now)
    report.sent.append(claimed.touch_id)
    activity.email(app, claimed, subject, "sent")


def _record_failure(app: Nurture, claimed: Claimed, exc: DeliveryError, subject: str,
                    report: DeliveryReport) -> None:
    """Record what the transport said: retry later (queued again; RQ retries the job), never
    (failed; a dead address bounces the contact) or nobody knows (uncertain)."""
    now = app.now()
    if isinstance(exc, TransientDeliveryError):
        state, bucket, kind = TouchState.QUEUED, report.retry, "touch_retry"
    elif isinstance(exc, UncertainDeliveryError):
        state, bucket, kind = TouchState.UNCERTAIN, report.uncertain, "touch_uncertain"
    else:
        state, bucket, kind = TouchState.FAILED, report.failed, "touch_failed"
    with app.db.transaction() as session:
        done = session.scalar(
            _mine(claimed, TouchState.SENDING, TouchState.TRANSMITTING, TouchState.UNCERTAIN)
            .values(state=state, reason=str(exc), subject=subject).returning(Touch.id))
        if done is None:
            return
        bucket.append(claimed.touch_id)
        if isinstance(exc, PermanentDeliveryError) and exc.kind == "mailbox":
            contact = session.get_one(Contact, claimed.contact_id)
            suppress_contact(app, session, contact, ContactStatus.BOUNCED, str(exc))
        log_event(session, now, kind, touch_id=claimed.touch_id,
                  enrollment_id=claimed.enrollment_id, code=exc.code, enhanced=exc.enhanced,
                  why=str(exc))
    activity.email(app, claimed, subject, activity.outcome_of(exc), str(exc))


def _hand_back(app: Nurture, claimed: Claimed, exc: Exception, report: DeliveryReport) -> None:
    """The claimed touch could not be rendered or staged. A template error fails it (its
    library item is free again); anything else hands it back, queued, with the attempt
    counted, and fails it after the last attempt, like :func:`_count_attempt`."""
    now, why = app.now(), str(exc) if isinstance(exc, TemplateError) else repr(exc)
    if not isinstance(exc, TemplateError):
        log.error("touch %s could not be rendered or staged", claimed.touch_id, exc_info=exc)
    give_up = (isinstance(exc, TemplateError)
               or claimed.attempt >= app.settings.worker_max_attempts)
    with app.db.transaction() as session:
        back = session.scalar(
            _mine(claimed, TouchState.SENDING)
            .values(state=TouchState.FAILED if give_up else TouchState.QUEUED, reason=why,
                    lease_until=None).returning(Touch.id))
        if back is None or not give_up:
            return
        session.execute(delete(ContentSent).where(ContentSent.touch_id == claimed.touch_id))
        log_event(session, now, "touch_failed", touch_id=claimed.touch_id,
                  enrollment_id=claimed.enrollment_id, why=why)
    report.failed.append(claimed.touch_id)
    activity.email(app, claimed, "", "failed", why)


def _release(app: Nurture, claimed: Claimed) -> None:
    """Give a claimed touch back, uncounted: the transport was down, nothing was tried."""
    with app.db.transaction() as session:
        session.execute(_mine(claimed, TouchState.SENDING)
                        .values(state=TouchState.QUEUED, attempts=Touch.attempts - 1,
                                lease_until=None))


def _skip(app: Nurture, session: Session, touch: Touch, why: str, now: datetime, *,
          advancing: bool) -> None:
    """Record why the touch goes out never. A step with nothing left to pick is passed over
    and the sequence goes on; anything else (a stop, a suppression) ends here."""
    touch.state, touch.reason = TouchState.SKIPPED, why
    log_event(session, now, "touch_skipped", touch_id=touch.id,
              enrollment_id=touch.enrollment_id, why=why)
    if advancing:
        advance(app, session, touch, now)


def _count_attempt(app: Nurture, touch_id: int, exc: Exception, report: DeliveryReport) -> None:
    """A row that could not even be claimed: count the attempt, and give up after the last.

    It stays queued under this job; once the job ends the next tick plans it again (see
    :func:`nurture.ticking.tick`), so it is retried without blocking the rest of its batch.
    """
    limit = app.settings.worker_max_attempts
    with app.db.transaction() as session:
        queued = update(Touch).where(Touch.id == touch_id, Touch.state == TouchState.QUEUED)
        session.execute(queued.values(attempts=Touch.attempts + 1, reason=repr(exc)))
        failed = session.scalar(queued.where(Touch.attempts >= limit)
                                .values(state=TouchState.FAILED).returning(Touch.id))
        if failed is not None:
            log_event(session, app.now(), "touch_failed", touch_id=touch_id, why=repr(exc))
            report.failed.append(touch_id)


def _lease_job(app: Nurture, job_id: str, *, drop: bool = False) -> datetime:
    """Extend the lease of this job's queued rows; returns when to renew it next.

    With ``drop`` the job is about to fail for RQ's ``Retry`` to run it again later: its rows
    give up their lease, so the tick asks Redis about the job (scheduled: waiting) instead of
    taking the rows back when the lease runs out, which would cut the retry's backoff short.
    """
    now = app.now()
    lease = timedelta(seconds=app.settings.worker_lease_seconds)
    with app.db.transaction() as session:
        session.execute(update(Touch).where(Touch.job_id == job_id,
                                            Touch.state == TouchState.QUEUED)
                        .values(lease_until=None if drop else now + lease))
    return now + lease / 3
