"""The send path of a batch of touches: prepare, claim, send, record.

1. **Prepare** the whole batch ahead, in one transaction: re-check each row (the contact's
   status, the enrollment, the campaign and step, the send window) and read what its email is
   made of (its library item, its thread, its Message-ID). Nothing changes a row's state here.
   Each email is rendered later, holding no lock, while the SMTP server considers the one
   before it.
2. **Claim** each row just before its send with a compare-and-set update (queued → sending)
   that also re-checks what may have changed since it was prepared (a stop, a pause), and
   count it against the mailbox's limits. A row with anything unusual about it takes the full
   claim instead (:func:`_claim`), which re-checks everything and records why it is not sent.
3. **Send** over the transport, outside any transaction.
4. **Record** it as sent, with its subject, and plan the next step; in the same transaction,
   claim the batch's next row (one commit per email). The next row's MAIL FROM goes to the
   SMTP server just before (:meth:`nurture.delivery.Transport.announce`), so the server
   answers it while this transaction runs; nothing of that email goes before its claim.

No code path sends without holding the claim, so two workers, two ticks or a retried RQ job can
never send one row twice, and at most one row per worker is ``sending`` at a time. A worker
killed between 2 and 4 leaves that row ``sending``; its lease expires and
:func:`nurture.engine.recover_expired_claims` marks it ``uncertain``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session, defaultload

from .app import Nurture
from .campaigns import Campaign, round_of
from .compose import Composed, Prepared, facts_of, prepare_touch, render_touch
from .db import Precompiled
from .delivery import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    Transport,
    UncertainDeliveryError,
)
from .engine import advance, log_event, suppress_contact
from .errors import TemplateError
from .limits import take_send
from .models import Campaign as CampaignRow
from .models import (
    Contact,
    ContactStatus,
    ContentSent,
    Enrollment,
    EnrollmentState,
    Touch,
    TouchState,
)
from .schedule import SendWindow, in_window, next_window_opening

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # re-check said no (or already handled)
    rescheduled: list[int] = field(default_factory=list)  # outside the window now
    failed: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # transient errors: RQ retries the job
    unavailable: str | None = None  # the transport could not connect: the batch stopped


def deliver(app: Nurture, touch_ids: list[int], transport: Transport,
            job_id: str | None = None) -> DeliveryReport:
    """Send each touch that is still queued, one claim at a time, over one transport (see the
    module's description for the steps).

    One bad row never holds up the others: an unexpected error while preparing it is counted
    as an attempt and the batch goes on. A transport that cannot connect stops the batch,
    with every unsent row still queued and no attempt counted: RQ retries the whole job.

    With ``job_id`` (the RQ job running this batch), only rows queued under that job are
    claimed, and the job keeps a lease on its queued rows while it works: if the worker is
    killed, the lease runs out and the next tick queues them again, without waiting for RQ to
    notice the dead job (which takes minutes).
    """
    report = DeliveryReport()
    renewed = None
    with app.campaigns_pinned(), app.db.held_connection():
        owners = _owners(app, touch_ids)
        batch = _prepare_batch(app, touch_ids, job_id)
        transport.while_waiting = batch.render_next
        try:
            claimed = None  # the row the last record claimed too
            for position, touch_id in enumerate(touch_ids):
                if job_id is not None and (renewed is None or app.now() >= renewed):
                    renewed = _renew_job_lease(app, job_id)
                held, claimed = claimed == touch_id, None
                try:
                    composed = _claim_next(app, batch, touch_id, held, owners.get(touch_id),
                                           report, job_id)
                except Exception as exc:  # a bug or bad data in one row
                    log.exception("touch %s could not be prepared", touch_id)
                    _count_attempt(app, touch_id, exc, report)
                    continue
                if composed is None or composed.message is None or composed.rendered is None:
                    continue
                subject = composed.rendered.subject
                try:
                    transport.send(composed.message)
                except DeliveryError as exc:
                    if exc.connecting:
                        _release(app, touch_id)
                        report.unavailable = str(exc)
                        report.retry.append(touch_id)
                        break
                    _record_failure(app, touch_id, exc, subject, report)
                except Exception as exc:  # we cannot tell how far it got: never resend blindly
                    log.exception("touch %s: unexpected error while sending", touch_id)
                    _record_failure(app, touch_id, UncertainDeliveryError(repr(exc)), subject,
                                    report)
                else:
                    following = touch_ids[position + 1] if position + 1 < len(touch_ids) else None
                    after = batch.rendered(following)
                    upcoming = after.composed if after is not None else None
                    if upcoming is not None and upcoming.message is not None:
                        transport.announce(upcoming.message)  # answered while we record
                    claimed = _record_sent(app, touch_id, owners.get(touch_id), subject, report,
                                           then=(following, after, job_id) if after else None)
        finally:
            transport.while_waiting = None
    if report.retry and job_id is not None:
        _drop_job_lease(app, job_id)
    return report


def _owners(app: Nurture, touch_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Each touch's (contact id, enrollment id), read once per batch: they never change, the
    claim locks those rows first (see :func:`_lock_owners`) and the record names the contact."""
    if not touch_ids:
        return {}
    with app.db.transaction() as session:
        rows = session.execute(select(Touch.id, Enrollment.contact_id, Touch.enrollment_id)
                               .join(Touch.enrollment).where(Touch.id.in_(touch_ids))).all()
    return {touch_id: (contact_id, enrollment_id) for touch_id, contact_id, enrollment_id in rows}


def _renew_job_lease(app: Nurture, job_id: str) -> datetime:
    """Extend the lease of this job's queued rows; returns when to renew it next."""
    now = app.now()
    lease = timedelta(seconds=app.settings.worker_lease_seconds)
    with app.db.transaction() as session:
        session.execute(update(Touch).where(Touch.job_id == job_id,
                                            Touch.state == TouchState.QUEUED)
                        .values(lease_until=now + lease))
    return now + lease / 3


def _drop_job_lease(app: Nurture, job_id: str) -> None:
    """The job is about to fail for RQ's ``Retry`` to run it again later: its queued rows give
    up their lease, so the tick asks Redis about the job (scheduled: waiting) instead of taking
    the rows back when the lease runs out, which would cut the retry's backoff short."""
    with app.db.transaction() as session:
        session.execute(update(Touch).where(Touch.job_id == job_id,
                                            Touch.state == TouchState.QUEUED)
                        .values(lease_until=None))


@dataclass
class _Ready:
    """A row's email, prepared before its claim (see :func:`_prepare_batch`)."""

    prepared: Prepared
    zone: ZoneInfo  # the send window's
    composed: Composed | None = None  # rendered when first needed, see _Batch.rendered

    @property
    def window(self) -> SendWindow | None:
        return self.prepared.campaign.send_window


class _Batch:
    """The rows prepared ahead, rendered one by one as they come up.

    Rendering is the one part of an email's work that needs no lock and no answer from
    anyone, so it fills the time the SMTP server takes to answer for the email before
    (:attr:`nurture.delivery.Transport.while_waiting`): a worker then spends that time
    rendering rather than idle.
    """

    def __init__(self, app: Nurture, ready: dict[int, _Ready], order: list[int]):
        self.app, self.ready = app, ready
        self._order = deque(touch_id for touch_id in order if touch_id in ready)

    def rendered(self, touch_id: int | None) -> _Ready | None:
        """The row's email, rendered now if it was not yet; None if it was not prepared or
        does not render (its full claim renders it again and records why)."""
        one = self.ready.get(touch_id) if touch_id is not None else None
        if one is not None and one.composed is None:
            try:
                one.composed = render_touch(self.app, one.prepared, self.app.now())
            except Exception:  # noqa: BLE001
                del self.ready[touch_id]
                return None
        return one

    def render_next(self) -> None:
        """Render the first row still waiting for it, in batch order."""
        while self._order:
            touch_id = self._order.popleft()
            one = self.ready.get(touch_id)
            if one is not None and one.composed is None:
                self.rendered(touch_id)
                return

    def take(self, touch_id: int) -> _Ready | None:
        one = self.rendered(touch_id)
        self.ready.pop(touch_id, None)
        return one


def _prepare_batch(app: Nurture, touch_ids: list[int], job_id: str | None) -> _Batch:
    """Read the batch's emails ahead of their claims, in one transaction for all.

    Per email, rendering it and the claim itself are then left to do (:func:`_take_ready`),
    and what the claim re-checks is exactly what may change meanwhile. A row with anything
    unusual about it (a stop, a pause, a closed window, no library item left, a template that
    fails) is left out: its full claim (:func:`_claim`) finds that out again and records it.
    Nothing here changes a row's state. Library items are chosen here, as the claim would; a
    row that is then not sent releases its item (:data:`nurture.compose.RELEASED`) or keeps it
    for its retry.
    """
    now = app.now()
    ready: dict[int, _Ready] = {}
    try:
        with app.db.transaction() as session:
            paused = set(session.scalars(select(CampaignRow.id).where(CampaignRow.paused)))
            query = (select(Touch).where(Touch.id.in_(touch_ids),
                                         Touch.state == TouchState.QUEUED)
                     .options(defaultload(Touch.enrollment).defaultload(Enrollment.contact)
                              .lazyload(Contact.tags)))
            if job_id is not None:
                query = query.where(Touch.job_id == job_id)
            touches = session.scalars(query).unique().all()
            facts = facts_of(session, {touch.enrollment.contact_id for touch in touches})
            for touch in touches:
                if _obstacle(app, touch, now, paused.__contains__) is not None:
                    continue
                theirs = facts.pop(touch.enrollment.contact_id, None)
                if theirs is None:
                    continue  # the contact's second email here: the first changes its facts
                one = prepare_touch(app, session, touch, theirs)
                if not isinstance(one, str):
                    ready[touch.id] = _Ready(one, _zone(app, touch, one.campaign))
    except Exception:  # noqa: BLE001 - every row still gets its full claim
        log.exception("the batch could not be prepared ahead; claiming each row in full")
        ready = {}
    return _Batch(app, ready, touch_ids)


def _claim_next(app: Nurture, batch: _Batch, touch_id: int, held: bool,
                owners: tuple[int, int] | None, report: DeliveryReport,
                job_id: str | None) -> Composed | None:
    """The email to send for this row now, its claim held; None when there is none.
    ``held``: recording the row before already claimed this one."""
    early = batch.take(touch_id)
    if early is not None and held:
        return early.composed
    if early is not None:
        with app.db.transaction() as session:
            claimed = _take_ready(app, session, touch_id, early, job_id)
        if claimed:
            return early.composed
    return _claim(app, touch_id, owners, report, job_id)  # finds out what is unusual, records it


def _take_ready(app: Nurture, session: Session, touch_id: int, ready: _Ready,
                job_id: str | None) -> bool:
    """The claim of a row prepared ahead, in the caller's transaction.

    Every stop (reply, referral, unsubscribe, bounce, a deleted contact) cancels or deletes the
    queued row in the transaction that records it, so the compare-and-set on ``queued`` sees
    each stop committed before it; on PostgreSQL a stop still in progress has the row locked,
    and the update waits for it and then sees it. A pause changes only the campaign's row: the
    update checks it too. What is left is the send window and the mailbox's limits; a claim
    they refuse is undone here, and the full claim reschedules it.
    """
    now = app.now()
    if not in_window(now, ready.window, ready.zone):
        return False
    got = (_CLAIM_READY if job_id is None else _CLAIM_READY_MINE).scalar(session, {
        "b_id": touch_id, "b_now": now, "b_job": job_id,
        "b_lease": now + timedelta(seconds=app.settings.worker_lease_seconds),
        "b_campaign": ready.prepared.campaign.id, "b_message_id": ready.prepared.message_id})
    if got is None:
        return False
    if take_send(app.settings, session, now) is not None:
        _UNCLAIM_READY.rows(session, {"b_id": touch_id})
        return False
    return True


def _claim(app: Nurture, touch_id: int, owners: tuple[int, int] | None,
           report: DeliveryReport, job_id: str | None = None) -> Composed | None:
    now = app.now()
    lease = now + timedelta(seconds=app.settings.worker_lease_seconds)
    with app.db.transaction() as session:
        if owners is not None and app.db.engine.dialect.name == "postgresql":
            _lock_owners(session, *owners)
        got = (_CLAIM if job_id is None else _CLAIM_MINE).scalar(
            session, {"b_id": touch_id, "b_now": now, "b_lease": lease, "b_job": job_id})
        if got is None:
            report.skipped.append(touch_id)  # someone else has it, or it was stopped
            return None
        touch = _load(session, touch_id)
        why_not = _recheck(app, session, touch)
        if why_not == LATER:
            report.rescheduled.append(touch_id)
            return None
        if why_not:
            _skip(app, session, touch, why_not, now, advancing=False)
            report.skipped.append(touch_id)
            return None
        prepared = prepare_touch(app, session, touch)
        if isinstance(prepared, str):  # nothing left in the library for this contact
            _skip(app, session, touch, prepared, now, advancing=True)
            report.skipped.append(touch_id)
            return None
        touch.message_id = prepared.message_id
    # Rendered once the claim has committed, holding no lock: SQLite's one writer and the
    # mailbox row are free for other workers meanwhile.
    try:
        return render_touch(app, prepared, app.now())
    except Exception as exc:  # noqa: BLE001 - a broken template or a bug: this row only
        _unclaim(app, touch_id, exc, report)
        return None


def _skip(app: Nurture, session: Session, touch: Touch, why: str, now: datetime, *,
          advancing: bool) -> None:
    """Record why the touch goes out never. A step with nothing left to pick is passed over
    and the sequence goes on; anything else (a stop, a suppression) ends here."""
    touch.state, touch.reason = TouchState.SKIPPED, why
    log_event(session, now, "touch_skipped", touch_id=touch.id,
              enrollment_id=touch.enrollment_id, why=why)
    if advancing:
        advance(app, session, touch, now)


def _unclaim(app: Nurture, touch_id: int, exc: Exception, report: DeliveryReport) -> None:
    """The claimed touch could not be rendered. A template error fails it (its library item is
    free again); anything else hands it back, queued, with the attempt counted, and fails it
    after the last attempt, like :func:`_count_attempt`."""
    now, why = app.now(), str(exc) if isinstance(exc, TemplateError) else repr(exc)
    if not isinstance(exc, TemplateError):
        log.error("touch %s could not be rendered", touch_id, exc_info=exc)
    give_up = isinstance(exc, TemplateError)
    with app.db.transaction() as session:
        back = session.execute(
            update(Touch).where(Touch.id == touch_id, Touch.state == TouchState.SENDING)
            .values(state=TouchState.QUEUED, reason=why, lease_until=None)
            .returning(Touch.attempts, Touch.enrollment_id)).first()
        if back is None:
            return
        if give_up or back.attempts >= app.settings.worker_max_attempts:
            session.execute(update(Touch).where(Touch.id == touch_id)
                            .values(state=TouchState.FAILED))
            session.execute(delete(ContentSent).where(ContentSent.touch_id == touch_id))
            log_event(session, now, "touch_failed", touch_id=touch_id,
                      enrollment_id=back.enrollment_id, why=why)
            report.failed.append(touch_id)


def _load(session: Session, touch_id: int) -> Touch:
    """The touch with its enrollment and contact, in one query. The contact's tags, which
    nothing here reads, are left to load on access (eagerly they cost a query per email)."""
    return session.get_one(Touch, touch_id, populate_existing=True, options=[
        defaultload(Touch.enrollment).defaultload(Enrollment.contact).lazyload(Contact.tags)])


LATER = "later"  # outside the send window, or the mailbox's limits: rescheduled, not skipped

# The compare-and-set updates of every email, compiled once and run on the driver's cursor
# (:class:`nurture.db.Precompiled`): building an ORM statement per email, or even SQLAlchemy's
# ``execute``, cost more than running it. Whatever the session had loaded is reloaded
# afterwards (``populate_existing``).
_to_sending = (update(Touch)
          .where(Touch.id == bindparam("b_id"), Touch.state == TouchState.QUEUED)
          .values(state=TouchState.SENDING, claimed_at=bindparam("b_now"),
                  lease_until=bindparam("b_lease"), attempts=Touch.attempts + 1)
          .returning(Touch.id))
_ready_to_sending = (_to_sending.values(message_id=bindparam("b_message_id"))
                .where(~select(CampaignRow.id).where(CampaignRow.id == bindparam("b_campaign"),
                                                     CampaignRow.paused).exists()))
_mine = Touch.job_id == bindparam("b_job")
_CLAIM, _CLAIM_MINE = Precompiled(_to_sending), Precompiled(_to_sending.where(_mine))
_CLAIM_READY = Precompiled(_ready_to_sending)
_CLAIM_READY_MINE = Precompiled(_ready_to_sending.where(_mine))
_UNCLAIM_READY = Precompiled(update(Touch)
                             .where(Touch.id == bindparam("b_id"),
                                    Touch.state == TouchState.SENDING)
                             .values(state=TouchState.QUEUED, attempts=Touch.attempts - 1))
_PAUSED = Precompiled(select(CampaignRow.paused)
                      .where(CampaignRow.id == bindparam("b_campaign")))
_LOCK_CONTACT = Precompiled(select(Contact.id).where(Contact.id == bindparam("b_contact"))
                            .with_for_update(read=True))
_LOCK_ENROLLMENT = Precompiled(select(Enrollment.id)
                               .where(Enrollment.id == bindparam("b_enrollment"))
                               .with_for_update(read=True))
# ``uncertain`` too: if the lease ran out while we were sending, we now know it went.
_SENT = Precompiled(update(Touch)
                    .where(Touch.id == bindparam("b_id"),
                           or_(Touch.state == TouchState.SENDING,
                               Touch.state == TouchState.UNCERTAIN))
                    .values(state=TouchState.SENT, sent_at=bindparam("b_now"), reason=None,
                            subject=bindparam("b_subject"))
                    .returning(Touch.enrollment_id, Touch.step_id, Touch.trigger_key,
                               Touch.message_id))
_KEY = Precompiled(select(Touch.enrollment_id, Touch.step_id, Touch.trigger_key,
                          Touch.message_id).where(Touch.id == bindparam("b_id")))


def _lock_owners(session: Session, contact_id: int, enrollment_id: int) -> None:
    """Lock the touch's contact and enrollment (shared) before claiming the touch.

    On PostgreSQL a reply, referral or unsubscribe updates these rows first; holding them here
    means the re-check below sees a stop committed before the claim, and a stop racing it waits
    until the claim is decided. The order (contact, enrollment, touch) is the stop paths' order,
    so the two cannot deadlock. SQLite serialises writers anyway (every transaction here begins
    IMMEDIATE), so it needs no row locks.
    """
    _LOCK_CONTACT.rows(session, {"b_contact": contact_id})
    _LOCK_ENROLLMENT.rows(session, {"b_enrollment": enrollment_id})


def _recheck(app: Nurture, session: Session, touch: Touch) -> str | None:
    """Why this touch must not go out now, or None. :data:`LATER` means later, not never: the
    touch is then scheduled again (its attempt uncounted, since nothing was tried).

    The mailbox's limits are checked last, so only a send that will really be tried counts.
    """
    now = app.now()
    why = _obstacle(app, touch, now, lambda campaign_id: bool(
        _PAUSED.scalar(session, {"b_campaign": campaign_id})))
    if why is not None and why not in _LATER:
        return why
    later = None
    if why is None:
        later = take_send(app.settings, session, now)
        if later is None:
            return None
    touch.state, touch.job_id = TouchState.SCHEDULED, None  # a paused one waits for resume
    touch.attempts -= 1
    if why == _CLOSED or later is not None:
        campaign = app.campaigns[touch.enrollment.campaign_id]
        touch.due_at = next_window_opening(later or now, campaign.send_window,
                                           _zone(app, touch, campaign))
    return LATER


# Reasons to wait rather than to skip (see :func:`_obstacle`).
_ON_HOLD, _EARLY, _CLOSED = "campaign paused", "not due yet", "outside the send window"
_LATER = (_ON_HOLD, _EARLY, _CLOSED)


def _obstacle(app: Nurture, touch: Touch, now: datetime,
              is_paused: Callable[[str], bool]) -> str | None:
    """What stands in the way of sending ``touch`` now, changing nothing; None when nothing
    does. One of :data:`_LATER` means it may go later; anything else means never."""
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
    if is_paused(campaign.id):
        return _ON_HOLD
    sequence = round_of(touch.trigger_key) is not None  # not a triggered thank-you
    if sequence and enrollment.state != EnrollmentState.ACTIVE:
        return f"enrollment {enrollment.state} ({enrollment.stop_reason or 'done'})"
    if touch.due_at > now:  # queued by a tick that ran ahead (`--now` in the future)
        return _EARLY
    if not in_window(now, campaign.send_window, _zone(app, touch, campaign)):
        return _CLOSED
    return None


def _zone(app: Nurture, touch: Touch, campaign: Campaign) -> ZoneInfo:
    window = campaign.send_window
    return app.zone_for(touch.enrollment.contact.timezone, window.timezone if window else None)


def _record_sent(app: Nurture, touch_id: int, owners: tuple[int, int] | None, subject: str,
                 report: DeliveryReport,
                 then: tuple[int, _Ready, str | None] | None = None) -> int | None:
    """Record the send and plan the next step; with ``then`` (the batch's next row, prepared
    ahead, and the job), claim that row in the same transaction: one commit per email instead
    of two. Returns the id of the row claimed, if any."""
    now = app.now()
    with app.db.transaction() as session:
        done = _SENT.first(session, {"b_id": touch_id, "b_now": now, "b_subject": subject})
        touch = done or _KEY.first(session, {"b_id": touch_id})
        if touch is not None:
            log_event(session, now, "touch_sent", touch_id=touch_id,
                      contact_id=owners[0] if owners else None,
                      enrollment_id=touch.enrollment_id, step=touch.step_id,
                      message_id=touch.message_id, recorded=done is not None)
        if done is not None:
            advance(app, session, done, now)
        claimed = then[0] if then is not None and _take_ready(app, session, *then) else None
    report.sent.append(touch_id)
    return claimed


def _record_failure(app: Nurture, touch_id: int, exc: DeliveryError, subject: str,
                    report: DeliveryReport) -> None:
    """Record what the transport said. ``uncertain`` rows count too: a lease that ran out while
    we were sending does not change what the server answered."""
    now = app.now()
    if isinstance(exc, TransientDeliveryError):
        state, bucket, kind = TouchState.QUEUED, report.retry, "touch_retry"  # RQ retries the job
    elif isinstance(exc, UncertainDeliveryError):
        state, bucket, kind = TouchState.UNCERTAIN, report.uncertain, "touch_uncertain"
    else:
        state, bucket, kind = TouchState.FAILED, report.failed, "touch_failed"
    with app.db.transaction() as session:
        done = session.scalar(
            update(Touch).where(Touch.id == touch_id,
                                Touch.state.in_([TouchState.SENDING, TouchState.UNCERTAIN]))
            .values(state=state, reason=str(exc), subject=subject).returning(Touch.id))
        if done is None:
            return
        touch = _load(session, touch_id)
        bucket.append(touch_id)
        if isinstance(exc, PermanentDeliveryError) and exc.kind == "mailbox":
            suppress_contact(app, session, touch.enrollment.contact, ContactStatus.BOUNCED,
                             str(exc))
        log_event(session, now, kind, touch_id=touch_id, enrollment_id=touch.enrollment_id,
                  code=exc.code, enhanced=exc.enhanced, why=str(exc))


def _release(app: Nurture, touch_id: int) -> None:
    """Give a claimed touch back, uncounted: the transport was down, nothing was tried."""
    with app.db.transaction() as session:
        session.execute(update(Touch).where(Touch.id == touch_id,
                                            Touch.state == TouchState.SENDING)
                        .values(state=TouchState.QUEUED, attempts=Touch.attempts - 1))


def _count_attempt(app: Nurture, touch_id: int, exc: Exception, report: DeliveryReport) -> None:
    """A row that could not even be prepared: count the attempt, and give up after the last.

    It stays queued under this job; once the job ends the next tick plans it again (see
    :func:`nurture.engine.tick`), so it is retried without blocking the rest of its batch.
    """
    limit = app.settings.worker_max_attempts
    with app.db.transaction() as session:
        session.execute(update(Touch).where(Touch.id == touch_id,
                                            Touch.state == TouchState.QUEUED)
                        .values(attempts=Touch.attempts + 1, reason=repr(exc)))
        failed = session.scalar(update(Touch).where(Touch.id == touch_id,
                                                    Touch.state == TouchState.QUEUED,
                                                    Touch.attempts >= limit)
                                .values(state=TouchState.FAILED).returning(Touch.id))
        if failed is not None:
            log_event(session, app.now(), "touch_failed", touch_id=touch_id, why=repr(exc))
            report.failed.append(touch_id)
