"""Referral intake: record it, stop what a referral stops, thank the source, begin long-term care.

One path for every way a referral arrives (the CLI now; CSV and webhooks use the same function).
A referral keeps only who sent it, the date and an optional opaque id from the practice's
records. Nothing about the patient is stored, so nothing about the patient can reach an email.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from .app import Nurture
from .contacts import get_or_create_contact
from .engine import enroll_contact, log_event, plan_touch, stop_contact
from .errors import InputError, Problem
from .models import Enrollment, EnrollmentState, Referral, Touch

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


def add_referral(app: Nurture, email: str, *, on: date | None = None,
                 external_ref: str | None = None, source: str = "manual") -> ReferralResult:
    check_external_ref(external_ref)
    now = app.now()
    on = on or now.astimezone(ZoneInfo(app.settings.practice_timezone)).date()
    with app.db.transaction() as session:
        if external_ref and session.scalar(
                select(Referral.id).where(Referral.external_ref == external_ref)):
            return ReferralResult(email, duplicate=True)
        contact, created = get_or_create_contact(session, email, app.clock)
        result = ReferralResult(contact.email, new_contact=created)
        session.add(Referral(contact_id=contact.id, referred_on=on, external_ref=external_ref,
                             source=source, recorded_at=now))
        thanking = _thanking_enrollments(app, session, contact.id)
        result.stopped = [e.campaign_id for e in stop_contact(app, session, contact, "referral")]
        key = on.isoformat()
        thanked = session.scalar(select(Touch.id).join(Touch.enrollment).where(
            Enrollment.contact_id == contact.id, Touch.trigger_key == key))
        for enrollment in thanking:
            campaign = app.campaigns.get(enrollment.campaign_id)
            rule = campaign.on_referral if campaign else None
            if rule is None:
                continue
            if rule.send and thanked is None:  # one thank-you per source per day
                step = campaign.step(rule.send)
                if plan_touch(app, session, campaign, enrollment, contact, step, now, key):
                    result.thank_you.append(f"{campaign.id}/{step.id}")
                    thanked = True
            if rule.then_enroll and enroll_contact(app, session, app.campaign(rule.then_enroll),
                                                   contact):
                result.enrolled.append(rule.then_enroll)
        log_event(session, now, "referral_recorded", contact_id=contact.id, source=source,
                  referred_on=key, thank_you=result.thank_you, enrolled=result.enrolled)
        return result


def _thanking_enrollments(app: Nurture, session: Session, contact_id: int) -> list[Enrollment]:
    """Whose ``on_referral`` answers this referral (asked before the referral stops any).

    The enrollments that are running. If none is, the
    most recent one with an ``on_referral`` rule, in any state: a source who replied last month,
    or finished the sequence, still deserves a thank-you when they refer.
    """
    mine = session.scalars(select(Enrollment).where(Enrollment.contact_id == contact_id)
                           .order_by(Enrollment.id)).all()
    running = [e for e in mine if e.state == EnrollmentState.ACTIVE]
    if running:
        return running
    rules = [e for e in mine if (c := app.campaigns.get(e.campaign_id)) and c.on_referral]
    return rules[-1:]
