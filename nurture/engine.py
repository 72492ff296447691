"""The state machine over touches: enroll, plan, advance, stop, pause and settle by hand.

Every planned email is a :class:`~nurture.models.Touch` row. Rows change state only through
compare-and-set updates (``UPDATE … WHERE state = … RETURNING``), which behave the same on SQLite
and PostgreSQL: whoever's update matched the row owns it, and nobody else can. Redis only
carries the ids of queued rows; if it loses them, :func:`nurture.ticking.tick` notices and queues
them again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .app import Nurture
from .bulk import insert_rows
from .content.campaigns import ROUND_PREFIX, Campaign, Step, round_key, round_of
from .errors import ContactsError, NotFound, NurtureError, Problem
from .intake.contacts import control_character, normalize_email
from .models import (
    PENDING,
    Base,
    Contact,
    ContactStatus,
    ContactTag,
    Enrollment,
    EnrollmentState,
    Event,
    Touch,
    TouchState,
)
from .progress import Progress
from .schedule import due_at

ALWAYS_STOP = ("unsubscribe", "bounce")

#: Touches of the sequence (any round), as opposed to triggered ones such as a thank-you:
#: a reply or referral cancels them, an out-of-office moves them (see campaigns.round_key).
IN_SEQUENCE = or_(Touch.trigger_key == "", Touch.trigger_key.startswith(ROUND_PREFIX))


def log_event(session: Session, at: datetime, kind: str, *, contact_id: int | None = None,
              enrollment_id: int | None = None, touch_id: int | None = None,
              **detail: Any) -> None:
    """Append to the event log, at once (Core: several events are written per email)."""
    session.connection().execute(_EVENT, {
        "at": at, "kind": kind, "contact_id": contact_id, "enrollment_id": enrollment_id,
        "touch_id": touch_id, "detail": json.dumps(detail, default=str, sort_keys=True)})


_EVENT = insert(Event)  # built once: several events are written per email


# Planning ---------------------------------------------------------------------------------
def plan_touch(app: Nurture, session: Session, campaign: Campaign, enrollment_id: int,
               contact_timezone: str, step: Step, after: datetime,
               trigger_key: str = "") -> int | None:
    """Plan ``step`` for an enrollment; returns the new touch's id, or None if that
    (enrollment, step, trigger) already exists (the unique key decides, and nothing fails).

    ``trigger_key`` is the round for a sequence step (see :func:`~.content.campaigns.round_key`)
    and the occasion for a triggered one (a thank-you), which ignores the step's wait: it goes
    out as soon as the window allows (see :func:`planned_due`).
    """
    connection = session.connection()
    planned: int | None = connection.execute(_PLAN[connection.dialect.name], {
        "enrollment_id": enrollment_id, "step_id": step.id, "trigger_key": trigger_key,
        "due_at": planned_due(app, campaign, contact_timezone, step, after, trigger_key),
        "created_at": app.now(), "state": TouchState.SCHEDULED, "attempts": 0}).scalar()
    return planned


def planned_due(app: Nurture, campaign: Campaign, contact_timezone: str, step: Step,
                after: datetime, trigger_key: str = "") -> datetime:
    """When :func:`plan_touch` plans ``step``: after its wait (a sequence step only), at the
    next opening of the campaign's send window in the contact's zone (or the window's own)."""
    window = campaign.send_window
    zone = app.zone_for(contact_timezone, window.timezone if window else None)
    wait = step.wait if round_of(trigger_key) is not None else None
    return due_at(after, wait, window, zone)


# Built once per dialect (each has its own ON CONFLICT): every send plans the next step.
_PLAN = {dialect.__name__.rsplit(".", 1)[-1]: dialect.insert(Touch).on_conflict_do_nothing()
         .returning(Touch.id) for dialect in (postgresql, sqlite)}

_ADVANCING = (select(Enrollment.state, Enrollment.campaign_id, Enrollment.contact_id,
                     Contact.timezone)
              .join(Enrollment.contact).where(Enrollment.id == bindparam("enrollment"))
              .with_for_update(of=Enrollment))


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
    enrollment = session.connection().execute(
        _ADVANCING, {"enrollment": touch.enrollment_id}).one()
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
           emails: Sequence[str] = (), progress: Progress | None = None) -> EnrollResult:
    """Enroll contacts in a campaign and plan their first step.

    With neither tags nor emails, the campaign's ``audience`` tags choose the contacts.
    Enrolling twice is harmless: a contact goes through a campaign once. A malformed address
    or tag raises :class:`~nurture.errors.ContactsError` before anything is written.

    Set-based, for lists of any size: one query selects the contacts with what decides their
    fate, then each batch is one multi-row insert of enrollments, one of their first touches
    (due as :func:`plan_touch` plans it, computed once per time zone) and one of events;
    ``progress`` hears after each batch.
    """
    campaign = app.campaign(campaign_id)
    if not tags and not emails:
        tags = campaign.audience_tags
    tag_keys, email_keys = _enroll_keys(tags, emails)
    result = EnrollResult(campaign.id)
    now = app.now()
    with app.db.transaction() as session:
        app.campaign_row(session, campaign)
        session.flush()
        chosen = _chosen(session, campaign.id, tag_keys, list(email_keys.values()))
        found = {row.email for row in chosen}
        result.missing = [given for given, key in email_keys.items() if key not in found]
        todo = []
        for row in chosen:
            if row.status != ContactStatus.ACTIVE:
                result.suppressed.append(row.email)
            elif row.enrolled:
                result.already.append(row.email)
            else:
                todo.append(row)
        for start in range(0, len(todo), _BATCH):
            _enroll_batch(app, session, campaign, todo[start:start + _BATCH], now, result)
            if progress is not None:
                progress(min(start + _BATCH, len(todo)), len(todo))
    return result


_BATCH = 2000  # enrollments per multi-row insert


def _enroll_keys(tags: Sequence[str], emails: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The tags as stored, and each given address with its stored form; or ContactsError."""
    problems, tag_keys, email_keys = [], [], {}
    for tag in tags:
        if (control := control_character(tag)) is not None:
            problems.append(Problem("<input>", None, "tag", f"{tag!r} holds {control}"))
        elif tag.strip():
            tag_keys.append(tag.strip().lower())
    for email in emails:
        try:
            email_keys[email] = normalize_email(email)
        except ValueError as exc:
            problems.append(Problem("<input>", None, "email", str(exc)))
    if problems:
        raise ContactsError(problems)
    return tag_keys, email_keys


def _chosen(session: Session, campaign_id: str, tag_keys: list[str],
            email_keys: list[str]) -> list[Any]:
    """Contacts having any of the tags or one of the addresses, each once, ordered by email
    (in Python: SQLite's and PostgreSQL's collations differ), with whether they are enrolled."""
    enrolled = select(Enrollment.id).where(Enrollment.contact_id == Contact.id,
                                           Enrollment.campaign_id == campaign_id).exists()
    query = select(Contact.id, Contact.email, Contact.status, Contact.timezone,
                   enrolled.label("enrolled"))
    wheres = [Contact.id.in_(select(ContactTag.contact_id).where(ContactTag.tag.in_(tag_keys)))
              ] if tag_keys else []
    wheres += [Contact.email.in_(email_keys[start:start + 500])
               for start in range(0, len(email_keys), 500)]
    rows: dict[int, Any] = {row.id: row for where in wheres
                            for row in session.execute(query.where(where))}
    return sorted(rows.values(), key=lambda row: str(row.email))


def _enroll_batch(app: Nurture, session: Session, campaign: Campaign, batch: list[Any],
                  now: datetime, result: EnrollResult) -> None:
    """Enroll a batch of contacts (none suppressed or known to be enrolled) with three
    multi-row inserts; a contact enrolled meanwhile by another process counts as already."""
    table, conn = Base.metadata.tables, session.connection()
    inserted = dict(insert_rows(
        conn, table["enrollments"], [
            {"contact_id": row.id, "campaign_id": campaign.id, "state": EnrollmentState.ACTIVE,
             "enrolled_at": now, "ended_at": None, "stop_reason": None} for row in batch],
        returning=("contact_id", "id"), skip_conflicts=True))
    first, due_by_zone = campaign.next_step(None), dict[str, datetime]()
    touches, events = [], []
    for row in batch:
        if (enrollment_id := inserted.get(row.id)) is None:
            result.already.append(row.email)
            continue
        result.enrolled.append(row.email)
        events.append({"at": now, "kind": "enrolled", "contact_id": row.id,
                       "enrollment_id": enrollment_id, "touch_id": None,
                       "detail": json.dumps({"campaign": campaign.id}, sort_keys=True)})
        if first is not None:
            if row.timezone not in due_by_zone:
                due_by_zone[row.timezone] = planned_due(app, campaign, row.timezone, first, now)
            touches.append({"enrollment_id": enrollment_id, "step_id": first.id,
                            "trigger_key": "", "state": TouchState.SCHEDULED,
                            "due_at": due_by_zone[row.timezone], "attempts": 0,
                            "created_at": now})
    insert_rows(conn, table["touches"], touches)
    insert_rows(conn, table["events"], events)


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
