"""The state machine over touches: enroll, plan, stop, tick and recover.

Every planned email is a :class:`~nurture.models.Touch` row. Rows change state only through
compare-and-set updates (``UPDATE … WHERE state = … RETURNING``), which behave the same on SQLite
and PostgreSQL: whoever's update matched the row owns it, and nobody else can. Redis only
carries the ids of queued rows; if it loses them, :func:`tick` notices and queues them again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .app import Nurture
from .content.campaigns import ROUND_PREFIX, Campaign, Step, round_key, round_of
from .errors import NotFound, NurtureError
from .intake.contacts import find_contacts, normalize_email
from .models import (
    PENDING,
    Contact,
    ContactStatus,
    Enrollment,
    EnrollmentState,
    Event,
    Touch,
    TouchState,
)
from .models import Campaign as CampaignRow
from .schedule import due_at

MAX_BATCHES_PER_TICK = 200

ALWAYS_STOP = ("unsubscribe", "bounce")

#: Touches of the sequence (any round), as opposed to triggered ones such as a thank-you:
#: a reply or referral cancels them, an out-of-office moves them (see campaigns.round_key).
IN_SEQUENCE = or_(Touch.trigger_key == "", Touch.trigger_key.startswith(ROUND_PREFIX))


class Dispatcher(Protocol):
    """Where the tick hands work to: RQ in production (:mod:`nurture.worker.jobs`)."""

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None: ...

    def lost(self, job_ids: Sequence[str], unleased: Collection[str] = ()) -> set[str]:
        """The ids among ``job_ids`` that will not run: missing from Redis, over, or taken by a
        worker that died before it began. A job in ``unleased`` never leased its rows (see
        :func:`nurture.outbound.sending.deliver`), so if it counts as started it got stuck before it
        could send anything."""
        ...


def log_event(session: Session, at: datetime, kind: str, *, contact_id: int | None = None,
              enrollment_id: int | None = None, touch_id: int | None = None,
              **detail: Any) -> None:
    """Append to the event log, at once (Core: several events are written per email)."""
    session.execute(insert(Event).values(
        at=at, kind=kind, contact_id=contact_id, enrollment_id=enrollment_id, touch_id=touch_id,
        detail=json.dumps(detail, default=str, sort_keys=True)))


# Planning ---------------------------------------------------------------------------------
def plan_touch(app: Nurture, session: Session, campaign: Campaign, enrollment_id: int,
               contact_timezone: str, step: Step, after: datetime,
               trigger_key: str = "") -> int | None:
    """Plan ``step`` for an enrollment; returns the new touch's id, or None if that
    (enrollment, step, trigger) already exists (the unique key decides, and nothing fails).

    ``trigger_key`` is the round for a sequence step (:func:`nurture.content.campaigns.round_key`)
    and
    the occasion for a triggered one (a thank-you), which ignores the step's wait: it goes out as
    soon as the window allows. The send window is read in the contact's time zone unless the
    window names its own.
    """
    window = campaign.send_window
    zone = app.zone_for(contact_timezone, window.timezone if window else None)
    wait = step.wait if round_of(trigger_key) is not None else None
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return session.scalar(
        dialect.insert(Touch).values(
            enrollment_id=enrollment_id, step_id=step.id, trigger_key=trigger_key,
            due_at=due_at(after, wait, window, zone), created_at=app.now(),
            state=TouchState.SCHEDULED, attempts=0)
        .on_conflict_do_nothing().returning(Touch.id))


class TouchKey(Protocol):
    """What :func:`advance` needs of a touch: a :class:`Touch`, or a row of these columns."""

    enrollment_id: int
    step_id: str
    trigger_key: str


def advance(app: Nurture, session: Session, touch: TouchKey, sent_at: datetime) -> int | None:
    """After a sequence step went out (or was skipped), plan the next one, or complete the
    enrollment; returns the planned touch's id. A repeating campaign never completes: its last
    step is followed by the next round's first
    (:meth:`nurture.content.campaigns.Campaign.following`).

    The enrollment is read under a row lock, so a stop committed meanwhile is seen and kept.
    """
    enrollment = session.execute(
        select(Enrollment.state, Enrollment.campaign_id, Enrollment.contact_id, Contact.timezone)
        .join(Enrollment.contact).where(Enrollment.id == touch.enrollment_id)
        .with_for_update(of=Enrollment)).one()
    campaign = app.campaigns.get(enrollment.campaign_id)
    round_ = round_of(touch.trigger_key)
    if round_ is None or campaign is None or enrollment.state != EnrollmentState.ACTIVE:
        return None
    following = campaign.following(touch.step_id, round_)
    if following is None:
        session.execute(update(Enrollment).where(Enrollment.id == touch.enrollment_id)
                        .values(state=EnrollmentState.COMPLETED, ended_at=sent_at))
        log_event(session, sent_at, "enrollment_completed", contact_id=enrollment.contact_id,
                  enrollment_id=touch.enrollment_id, campaign=campaign.id)
        return None
    step, round_ = following
    return plan_touch(app, session, campaign, touch.enrollment_id, enrollment.timezone, step,
                      sent_at, round_key(round_))


# Enrolling ----------------------------------------------------------------------------------
@dataclass
class EnrollResult:
    campaign: str
    enrolled: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)  # unsubscribed or bounced
    missing: list[str] = field(default_factory=list)  # emails given that are not contacts


def enroll(app: Nurture, campaign_id: str, *, tags: Sequence[str] = (),
           emails: Sequence[str] = ()) -> EnrollResult:
    """Enroll contacts in a campaign and plan their first step.

    With neither tags nor emails, the campaign's ``audience`` tags choose the contacts.
    Enrolling twice is harmless: a contact goes through a campaign once.
    """
    campaign = app.campaign(campaign_id)
    if not tags and not emails:
        tags = campaign.audience_tags
    result = EnrollResult(campaign.id)
    now = app.now()
    with app.db.transaction() as session:
        app.campaign_row(session, campaign)
        session.flush()
        contacts = find_contacts(session, tags=tags, emails=emails) if (tags or emails) else []
        found = {c.email for c in contacts}
        result.missing = [e for e in emails if normalize_email(e) not in found]
        for contact in contacts:
            enrollment = _enroll_one(app, session, campaign, contact, now, result)
            if enrollment is not None:
                result.enrolled.append(contact.email)
    return result


def _enroll_one(app: Nurture, session: Session, campaign: Campaign, contact: Contact,
                now: datetime, result: EnrollResult) -> Enrollment | None:
    if contact.status != ContactStatus.ACTIVE:
        result.suppressed.append(contact.email)
        return None
    exists = session.scalar(select(Enrollment.id).where(
        Enrollment.contact_id == contact.id, Enrollment.campaign_id == campaign.id))
    if exists is not None:
        result.already.append(contact.email)
        return None
    enrollment = Enrollment(contact_id=contact.id, campaign_id=campaign.id,
                            state=EnrollmentState.ACTIVE, enrolled_at=now)
    session.add(enrollment)
    session.flush()
    first = campaign.next_step(None)
    if first is not None:
        plan_touch(app, session, campaign, enrollment.id, contact.timezone, first, now)
    log_event(session, now, "enrolled", contact_id=contact.id, enrollment_id=enrollment.id,
              campaign=campaign.id)
    return enrollment


def enroll_contact(app: Nurture, session: Session, campaign: Campaign, contact: Contact) -> bool:
    """Enroll one contact inside the caller's transaction (used by referral intake)."""
    app.campaign_row(session, campaign)
    session.flush()
    return _enroll_one(app, session, campaign, contact, app.now(),
                       EnrollResult(campaign.id)) is not None


# Pausing a campaign -------------------------------------------------------------------------
def pause_campaign(app: Nurture, campaign_id: str, paused: bool = True) -> bool:
    """Pause (or resume) a whole campaign: nothing of it is sent meanwhile, and nothing is lost.

    Its touches stay planned; the tick leaves them alone and a send already queued puts its
    touch back (see :mod:`nurture.outbound.sending`). On resume, whatever came due meanwhile goes
    out at
    the next tick, within the send window and the mailbox's limits. Returns whether anything
    changed.
    """
    campaign = app.campaign(campaign_id)
    with app.db.transaction() as session:
        row = app.campaign_row(session, campaign)
        if row.paused == paused:
            return False
        row.paused = paused
        log_event(session, app.now(), "campaign_paused" if paused else "campaign_resumed",
                  campaign=campaign.id)
    return True


# Stopping -----------------------------------------------------------------------------------
def stop_contact(app: Nurture, session: Session, contact: Contact, kind: str) -> list[Enrollment]:
    """Stop what ``kind`` (reply, referral, unsubscribe, bounce) stops for this contact.

    A reply or referral stops the enrollments whose campaign lists it in ``stop_on``. An
    unsubscribe or bounce stops everything, including triggered thank-yous not yet sent.
    """
    now = app.now()
    stopped = []
    active = session.scalars(select(Enrollment).where(
        Enrollment.contact_id == contact.id, Enrollment.state == EnrollmentState.ACTIVE)).all()
    for enrollment in active:
        campaign = app.campaigns.get(enrollment.campaign_id)
        if kind in ALWAYS_STOP or campaign is None or kind in campaign.stop_on:
            enrollment.state, enrollment.ended_at, enrollment.stop_reason = (
                EnrollmentState.STOPPED, now, kind)
            stopped.append(enrollment)
            log_event(session, now, "enrollment_stopped", contact_id=contact.id,
                      enrollment_id=enrollment.id, campaign=enrollment.campaign_id, reason=kind)
    if stopped:
        cancel = (update(Touch).where(Touch.enrollment_id.in_([e.id for e in stopped]),
                                      Touch.state.in_(PENDING), IN_SEQUENCE)
                  .values(state=TouchState.CANCELLED, reason=f"stopped by {kind}"))
        session.execute(cancel)
    if kind in ALWAYS_STOP:
        mine = select(Enrollment.id).where(Enrollment.contact_id == contact.id)
        session.execute(update(Touch).where(Touch.enrollment_id.in_(mine),
                                            Touch.state.in_(PENDING))
                        .values(state=TouchState.CANCELLED, reason=f"stopped by {kind}"))
    return stopped


def suppress_contact(app: Nurture, session: Session, contact: Contact, status: ContactStatus,
                     why: str) -> None:
    """Unsubscribe or bounce a contact: nothing more is sent to them, effective at once."""
    now = app.now()
    if contact.status != status:
        contact.status, contact.status_changed_at, contact.updated_at = status, now, now
        log_event(session, now, f"contact_{status}", contact_id=contact.id, why=why)
    stop_contact(app, session, contact,
                 "bounce" if status == ContactStatus.BOUNCED else "unsubscribe")


# Ticking ------------------------------------------------------------------------------------
@dataclass
class TickReport:
    enqueued: int = 0
    jobs: int = 0
    requeued: int = 0  # queued rows whose job Redis lost, planned again
    failed: int = 0  # rows that ran out of attempts
    uncertain: int = 0  # claimed rows whose worker died; never resent blindly


def tick(app: Nurture, dispatcher: Dispatcher) -> TickReport:
    """Find what is due and hand it to the dispatcher, in batches; repair what was lost.

    Idempotent: running it twice, or in two processes at once, queues each row once.
    """
    report = TickReport()
    now = app.now()
    report.uncertain = recover_expired_claims(app, now)
    _requeue_lost(app, dispatcher, now, report)
    batch = app.settings.worker_batch_size
    with app.db.transaction() as session:
        paused = session.scalars(select(CampaignRow.id).where(CampaignRow.paused)).all()
    due_now = select(Touch.id).where(Touch.state == TouchState.SCHEDULED, Touch.due_at <= now)
    if paused:  # their touches wait, scheduled, until the campaign is resumed
        due_now = due_now.where(Touch.enrollment_id.not_in(
            select(Enrollment.id).where(Enrollment.campaign_id.in_(paused))))
    for _ in range(MAX_BATCHES_PER_TICK):
        job_id = uuid.uuid4().hex
        queued_at = app.now()  # per batch: the requeue grace counts from the commit, not the tick
        with app.db.transaction() as session:
            due = session.scalars(due_now.order_by(Touch.due_at, Touch.id).limit(batch)).all()
            if not due:
                break
            claimed = session.scalars(
                update(Touch).where(Touch.id.in_(due), Touch.state == TouchState.SCHEDULED)
                .values(state=TouchState.QUEUED, job_id=job_id, queued_at=queued_at,
                        lease_until=None)
                .returning(Touch.id)).all()
        if claimed:
            dispatcher.enqueue(job_id, sorted(claimed))  # after commit: the row is the truth
            report.enqueued += len(claimed)
            report.jobs += 1
        if len(due) < batch:
            break
    return report


def recover_expired_claims(app: Nurture, now: datetime) -> int:
    """Claims whose lease ran out: their worker died. Returns how many became ``uncertain``.

    A row still ``sending`` never reached the mail server (the worker marks it
    ``transmitting`` first, see :mod:`nurture.outbound.sending`), so it is planned again, its
    attempt counted, and failed once it has had its attempts. A row ``transmitting`` may have
    been delivered, so it is neither resent nor dropped: it becomes ``uncertain``, which
    ``nurture status`` lists and ``nurture resolve`` settles.
    """
    limit = app.settings.worker_max_attempts
    expired = (update(Touch).where(Touch.lease_until < now)
               .values(job_id=None, lease_until=None).returning(Touch.id, Touch.enrollment_id))
    with app.db.transaction() as session:
        again = session.execute(expired.where(
            Touch.state == TouchState.SENDING, Touch.attempts < limit).values(
            state=TouchState.SCHEDULED,
            reason="the worker stopped before sending it; it is sent again")).all()
        gave_up = session.execute(expired.where(Touch.state == TouchState.SENDING).values(
            state=TouchState.FAILED, reason=f"gave up after {limit} attempts")).all()
        uncertain = session.execute(expired.where(Touch.state == TouchState.TRANSMITTING).values(
            state=TouchState.UNCERTAIN,
            reason="the worker stopped while handing it to the mail server; "
                   "it may have been sent")).all()
        for kind, rows in (("touch_requeued", again), ("touch_failed", gave_up),
                           ("touch_uncertain", uncertain)):
            for touch_id, enrollment_id in rows:
                log_event(session, now, kind, touch_id=touch_id, enrollment_id=enrollment_id)
    return len(uncertain)


def _requeue_lost(app: Nurture, dispatcher: Dispatcher, now: datetime,
                  report: TickReport) -> None:
    # Only rows queued a while ago: a tick must not race another tick that has committed its
    # rows but not yet pushed the job to Redis.
    grace = timedelta(seconds=app.settings.worker_requeue_grace)
    with app.db.transaction() as session:
        jobs = session.execute(select(Touch.job_id, Touch.lease_until.is_(None)).distinct().where(
            Touch.state == TouchState.QUEUED, Touch.queued_at < now - grace)).all()
        # A job that started keeps a lease on its rows (nurture.outbound.sending.deliver leases
        # them as
        # it begins): once it runs out, its worker is gone, whatever Redis says about the job.
        expired = set(session.scalars(select(Touch.job_id).distinct().where(
            Touch.state == TouchState.QUEUED, Touch.lease_until < now)).all())
    job_ids = sorted({job_id for job_id, _ in jobs if job_id})
    unleased = {job_id for job_id, no_lease in jobs if job_id and no_lease}
    lost = dispatcher.lost(job_ids, unleased) if job_ids else set()
    lost |= {j for j in expired if j}
    limit = app.settings.worker_max_attempts
    for job_id in sorted(lost):
        with app.db.transaction() as session:
            base = update(Touch).where(Touch.state == TouchState.QUEUED, Touch.job_id == job_id)
            again = session.scalars(base.where(Touch.attempts < limit).values(
                state=TouchState.SCHEDULED, job_id=None, lease_until=None)
                .returning(Touch.id)).all()
            gave_up = session.scalars(base.where(Touch.attempts >= limit).values(
                state=TouchState.FAILED, reason=f"gave up after {limit} attempts")
                .returning(Touch.id)).all()
            for touch_id in gave_up:
                log_event(session, now, "touch_failed", touch_id=touch_id, why="attempts")
        report.requeued += len(again)
        report.failed += len(gave_up)


# Settling what needs a person -------------------------------------------------------------------
def resolve_touch(app: Nurture, touch_id: int, *, sent: bool) -> Touch:
    """Settle an ``uncertain`` (or ``failed``) touch by hand.

    The owner checks the mailbox's sent folder (the Message-ID is in ``nurture status``):
    ``sent=True`` records it as sent and moves the sequence on; ``sent=False`` sends it again at
    the next tick, with the same Message-ID, so a copy that did arrive threads as one message.
    """
    now = app.now()
    settle = (TouchState.UNCERTAIN, TouchState.FAILED)
    with app.db.transaction() as session:
        if sent:
            done = session.scalar(update(Touch).where(
                Touch.id == touch_id, Touch.state == TouchState.UNCERTAIN)
                .values(state=TouchState.SENT, sent_at=Touch.claimed_at,
                        reason="confirmed sent by hand").returning(Touch.id))
        else:
            done = session.scalar(update(Touch).where(Touch.id == touch_id,
                                                      Touch.state.in_(settle))
                .values(state=TouchState.SCHEDULED, due_at=now, job_id=None, attempts=0,
                        reason="resend requested by hand").returning(Touch.id))
        touch = session.get(Touch, touch_id, populate_existing=True)
        if touch is None:
            raise NotFound(f"no touch {touch_id}")
        if done is None:
            need = "uncertain" if sent else "uncertain or failed"
            raise NurtureError(f"touch {touch_id} is {touch.state}; only {need} touches are "
                               "resolved by hand")
        log_event(session, now, "touch_resolved", touch_id=touch_id,
                  enrollment_id=touch.enrollment_id, outcome="sent" if sent else "resend")
        if sent:
            advance(app, session, touch, touch.sent_at or now)
        return touch


# Pausing --------------------------------------------------------------------------------------
def pause_contact(app: Nurture, session: Session, contact: Contact, until: datetime) -> int:
    """Hold the contact's pending sequence touches until at least ``until`` (an out-of-office).

    Nothing stops: the enrollments stay active and only the due times of their scheduled and
    queued sequence steps move (triggered ones such as a thank-you keep theirs). A queued row is
    caught by the send-time re-check (``due_at > now``) and planned again. Returns the number of
    touches moved.
    """
    active = select(Enrollment.id).where(Enrollment.contact_id == contact.id,
                                         Enrollment.state == EnrollmentState.ACTIVE)
    moved = session.scalars(
        update(Touch).where(Touch.enrollment_id.in_(active), Touch.state.in_(PENDING),
                            IN_SEQUENCE, Touch.due_at < until)
        .values(due_at=until).returning(Touch.id)).all()
    log_event(session, app.now(), "contact_paused", contact_id=contact.id, until=until,
              touches=sorted(moved))
    return len(moved)
