"""Referral intake: record it, stop what a referral stops, thank the source, begin long-term care.

One path for every way a referral arrives: :func:`record_referral`, inside the caller's
transaction. The CLI calls it through :func:`add_referral` (one referral, one transaction), the
CSV import (:mod:`nurture.intake.referrals_csv`) for every row inside one transaction, and the
webhook
(:mod:`nurture.web.pages`) inside the transaction that also records the delivery. After the commit
the owner gets a short note (:func:`notify_referrals`) suggesting a personal word too.
A referral keeps only who sent it, the date and an optional opaque id from the practice's
records. Nothing about the patient is stored, so nothing about the patient can reach an email.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..app import Nurture
from ..conflicts import retry_conflicts
from ..content.campaigns import Campaign
from ..engine import enroll_contact, log_event, plan_touch, stop_contact
from ..errors import InputError, Problem
from ..models import (
    Contact,
    ContactStatus,
    Enrollment,
    EnrollmentState,
    Referral,
    Touch,
    TouchState,
)
from ..outbound.notify import tell_owner
from .contacts import get_or_create_contact

log = logging.getLogger(__name__)

EXTERNAL_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")


@dataclass
class ReferralResult:
    email: str
    new_contact: bool = False
    duplicate: bool = False  # this external id was recorded before: nothing changed
    stopped: list[str] = field(default_factory=list)
    thank_you: list[str] = field(default_factory=list)  # "campaign/step" planned
    enrolled: list[str] = field(default_factory=list)


def check_external_ref(ref: str | None, *, file: str = "<input>", line: int | None = None) -> None:
    """Opaque ids only (``EHR-123``): no spaces, so a patient's name can't be pasted in."""
    if ref is not None and not EXTERNAL_REF.fullmatch(ref):
        raise InputError([Problem(file, line, "ref", f"{ref!r} is not an opaque id: use letters, "
                                  "digits and . _ : / - only (no names or spaces), at most 100")])


def future_date_problem(on: date, today: date) -> str | None:
    """Why ``on`` cannot be a referral's day: more than a day ahead of the practice's today
    (a day of slack for time zones) is a typo, such as 2062 for 2026."""
    if on > today + timedelta(days=1):
        return f"{on.isoformat()} is in the future (today is {today.isoformat()})"
    return None


def check_referral_date(app: Nurture, on: date, *, file: str = "<input>",
                        line: int | None = None) -> None:
    if (problem := future_date_problem(on, referral_day(app))) is not None:
        raise InputError([Problem(file, line, "date", problem)])


def referral_day(app: Nurture, on: date | None = None) -> date:
    """``on``, or today in the practice's time zone (a referral's default date)."""
    return on or app.now().astimezone(ZoneInfo(app.settings.practice_timezone)).date()


def add_referral(app: Nurture, email: str, *, on: date | None = None,
                 external_ref: str | None = None, source: str = "manual",
                 notify: bool = False) -> ReferralResult:
    """Record one referral in a transaction of its own; with ``notify``, then tell the owner.

    Library callers (tests, simulations) choose whether to notify; ``nurture referral add``
    notifies itself, to report a failed note. The owner is told only after the commit, so never
    about a referral that was not recorded; a repeated external id changes nothing and tells
    nobody, also when a concurrent intake of the same id committed first (the transaction runs
    again and finds it).
    """
    check_external_ref(external_ref)
    day = referral_day(app, on)
    check_referral_date(app, day)
    result = retry_conflicts(app.db, lambda session: record_referral(
        app, session, email, day, external_ref, source))
    if notify and not result.duplicate:
        notify_referrals(app, [(result, day)])
    return result


def record_referral(app: Nurture, session: Session, email: str, on: date,
                    external_ref: str | None, source: str) -> ReferralResult:
    """The work of one referral, inside the caller's transaction (one file is one transaction).

    Records it, stops what a referral stops, plans the thank-you (one per source per day) and
    enrolls the source in the long-term campaign (once). An address that is not a contact yet
    becomes one, marked as needing details. A known ``external_ref`` changes nothing.
    """
    check_external_ref(external_ref)  # callers validate first; this is the last line of defence
    now = app.now()
    if external_ref and session.scalar(
            select(Referral.id).where(Referral.external_ref == external_ref)):
        return ReferralResult(email.strip().lower(), duplicate=True)
    contact, created = get_or_create_contact(session, email, app.clock)
    result = ReferralResult(contact.email, new_contact=created)
    session.add(Referral(contact_id=contact.id, referred_on=on, external_ref=external_ref,
                         source=source, recorded_at=now))
    thanking = _thanking_enrollments(app, session, contact, result)
    result.stopped = [e.campaign_id for e in stop_contact(app, session, contact, "referral")]
    key = on.isoformat()
    thanked = session.scalar(select(Touch.id).join(Touch.enrollment).where(
        Enrollment.contact_id == contact.id, Touch.trigger_key == key))
    for enrollment in thanking:
        campaign = app.campaigns.get(enrollment.campaign_id)
        rule = campaign.on_referral if campaign else None
        if campaign is None or rule is None:
            continue
        if rule.send and thanked is None:  # one thank-you per source per day
            step = campaign.step(rule.send)
            if plan_touch(app, session, campaign, enrollment.id, contact.timezone, step, now,
                          key):
                result.thank_you.append(f"{campaign.id}/{step.id}")
                thanked = True
        if rule.then_enroll and enroll_contact(app, session, app.campaign(rule.then_enroll),
                                               contact):
            result.enrolled.append(rule.then_enroll)
    log_event(session, now, "referral_recorded", contact_id=contact.id, source=source,
              referred_on=key, thank_you=result.thank_you, enrolled=result.enrolled)
    return result


def _thanking_enrollments(app: Nurture, session: Session, contact: Contact,
                          result: ReferralResult) -> list[Enrollment]:
    """Whose ``on_referral`` answers this referral (asked before the referral stops any).

    The running enrollments whose campaign has an ``on_referral`` rule. If none is, the
    most recent one with an ``on_referral`` rule, in any state: a source who replied last month,
    or finished the sequence, still deserves a thank-you when they refer.
    """
    mine = session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id)
                           .order_by(Enrollment.id)).all()
    rules = [e for e in mine if (c := app.campaigns.get(e.campaign_id)) and c.on_referral]
    running = [e for e in rules if e.state == EnrollmentState.ACTIVE]
    if running or rules:
        return running or rules[-1:]
    # A source no campaign knows yet (new, or never enrolled) goes straight to long-term care,
    # whose own on_referral thanks them.
    care = care_campaign(app)
    if care is None or not enroll_contact(app, session, care, contact):
        return []  # no such campaign, or they are unsubscribed or bounced
    result.enrolled.append(care.id)
    return list(session.scalars(select(Enrollment).where(
        Enrollment.contact_id == contact.id, Enrollment.campaign_id == care.id)))


def care_campaign(app: Nurture) -> Campaign | None:
    """The long-term care campaign: the one that campaigns move their referring sources into
    (``on_referral: then_enroll``) and that thanks for referrals itself. None unless exactly one
    campaign is that (the shipped ones: ``partner-care``)."""
    campaigns = app.campaigns
    targets = {c.on_referral.then_enroll for c in campaigns.values()
               if c.on_referral and c.on_referral.then_enroll}
    found = [campaigns[t] for t in sorted(targets)
             if t in campaigns and (rule := campaigns[t].on_referral) and rule.send]
    return found[0] if len(found) == 1 else None


# Telling the owner ------------------------------------------------------------------------------
def notify_referrals(app: Nurture, recorded: Sequence[tuple[ReferralResult, date]], *,
                     origin: str = "") -> str | None:
    """One note to the owner about these referrals (duplicates left out), after the commit.

    Names the sources, the day and when the thank-you goes out, and suggests a personal note
    too; nothing about patients (not even the external id). Returns why the note could not be
    sent, or None. A failed note never undoes the referrals: it is logged and kept as an event.
    """
    fresh = [(result, on) for result, on in recorded if not result.duplicate]
    if not fresh:
        return None
    with app.db.transaction() as session:
        paragraphs = [_describe(app, session, result, on) for result, on in fresh]
        names = list(dict.fromkeys(_name(session, result.email) for result, _ in fresh))
    if len(fresh) == 1:
        subject = f"Referral from {names[0]}"
    else:
        sources = f"{len(names)} source{'s' if len(names) != 1 else ''}"
        subject = f"{len(fresh)} referrals from {sources}" + (f" ({origin})" if origin else "")
    body = "\n\n".join([*paragraphs, "Consider a personal note too: a thank-you from nurture "
                         "is good, a few lines from you are better."])
    return tell_owner(app, subject, body)


def _name(session: Session, email: str) -> str:
    contact = session.scalar(select(Contact).where(Contact.email == email))
    full = " ".join(p for p in (contact.first_name, contact.last_name) if p) if contact else ""
    return full or email


def _describe(app: Nurture, session: Session, result: ReferralResult, on: date) -> str:
    contact = session.scalar(select(Contact).where(Contact.email == result.email))
    organization = f", {contact.organization}" if contact and contact.organization else ""
    lines = [f"{_name(session, result.email)} ({result.email}{organization}) referred a patient "
             f"on {on.isoformat()}."]
    thanks = session.scalars(select(Touch).join(Touch.enrollment).where(
        Enrollment.contact_id == (contact.id if contact else -1),
        Touch.trigger_key == on.isoformat()).order_by(Touch.id)).first()
    if contact is not None and contact.status != ContactStatus.ACTIVE:
        lines.append(f"No thank-you will be sent: they are {contact.status}.")
    elif thanks is not None and thanks.state in (TouchState.SCHEDULED, TouchState.QUEUED):
        lines.append(f"A thank-you is planned for {_when(app, thanks.due_at)}.")
    elif thanks is not None and thanks.state == TouchState.SENT and thanks.sent_at:
        lines.append(f"A thank-you for that day went out {_when(app, thanks.sent_at)}.")
    else:
        lines.append("No thank-you is planned: they are in no campaign with on_referral.")
    if result.enrolled:
        lines.append(f"They now receive {', '.join(result.enrolled)}.")
    if result.new_contact:
        lines.append("They were not a contact yet: added, marked as needing details (a name and "
                     "an organization).")
    return "\n".join(lines)


def _when(app: Nurture, at: datetime) -> str:
    zone = ZoneInfo(app.settings.practice_timezone)
    local = at.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %Y}, {local:%H:%M} ({zone.key})"
