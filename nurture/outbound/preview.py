"""``nurture preview``: the emails of a campaign, written to files exactly as they would be sent.

For a real contact (``--contact EMAIL``) each step goes through :func:`nurture.outbound.compose.
compose_touch`, the function the sender calls, inside a transaction that is always rolled
back: the same touch (so the same Message-ID), the same library item the send would pick, the
same thread, the same counts. Nothing is recorded. A step the contact has no touch for yet gets a
temporary one with the key the real one will have: round one of the sequence, or for a
triggered step (a thank-you) a referral recorded today. The Message-ID derives from that key
(:func:`nurture.outbound.mime.make_message_id`), so the preview is the later send apart from the
Date.
Only for a contact not enrolled yet can it differ: the enrollment is made up for the preview.

For ``--sample`` nobody in the database is involved: the sample contact of ``nurture
validate``, the first library item it would be given, and the same rendering and message code.
A step with ``thread:`` is shown as the reply it usually is, as if the earlier steps were sent.

Each step gives ``CAMPAIGN.STEP.html``, ``.txt`` and ``.eml``: the HTML part, the text part and
the whole message, byte for byte what the outbox transport would write (apart from the Date).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..app import Nurture
from ..content.campaigns import Campaign, Step, round_key
from ..content.library import library_for, pick
from ..errors import NotFound, NurtureError
from ..intake.contacts import get_contact
from ..intake.referrals import referral_day
from ..models import Enrollment, EnrollmentState, Touch, TouchState
from .compose import Composed, Thread, compose, compose_touch, template_context
from .mime import make_message_id, wire_bytes
from .samples import sample_context
from .unsubscribe import unsubscribe_mailto, unsubscribe_url

__all__ = ["Preview", "preview"]


@dataclass(frozen=True)
class Preview:
    """One step's preview: the files written, or why the step would be skipped."""

    step: str
    subject: str = ""
    files: tuple[Path, ...] = ()  # .html, .txt, .eml
    item: str = ""  # the library item shown, if any
    skipped: str = ""


def preview(app: Nurture, campaign_id: str, step_id: str | None = None, *,
            email: str | None = None, out: Path) -> list[Preview]:
    """Write the preview of one step (or every step) for a contact, or the sample contact when
    ``email`` is None, into ``out``."""
    campaign = app.campaign(campaign_id)
    try:
        steps = [campaign.step(step_id)] if step_id else list(campaign.steps)
    except KeyError:
        known = ", ".join(s.id for s in campaign.steps)
        raise NotFound(f"campaign {campaign.id!r} has no step {step_id!r} (known: {known})"
                       ) from None
    try:
        if email is None:
            composed = [(step, _sample(app, campaign, step)) for step in steps]
        else:
            with app.db.sessions() as session:
                try:
                    composed = _for_contact(app, session, campaign, steps, email)
                finally:
                    session.rollback()  # a preview changes nothing
    except ValueError as exc:  # e.g. no sender address configured
        raise NurtureError(f"cannot build the message: {exc}") from None
    return [_write(out, campaign, step, result) for step, result in composed]


def _for_contact(app: Nurture, session: Session, campaign: Campaign, steps: list[Step],
                 email: str) -> list[tuple[Step, Composed]]:
    contact = get_contact(session, email)
    if contact is None:
        raise NotFound(f"no contact with email {email!r}")
    enrollment = session.scalar(select(Enrollment).where(
        Enrollment.contact_id == contact.id, Enrollment.campaign_id == campaign.id))
    if enrollment is None:  # not enrolled: as if they were, for the length of the preview
        app.campaign_row(session, campaign)
        enrollment = Enrollment(contact_id=contact.id, campaign_id=campaign.id,
                                state=EnrollmentState.ACTIVE, enrolled_at=app.now())
        session.add(enrollment)
        session.flush()
    results = []
    for step in steps:
        touch = session.scalar(select(Touch).where(
            Touch.enrollment_id == enrollment.id, Touch.step_id == step.id)
            .order_by(Touch.id.desc()).limit(1))
        if touch is None:
            key = referral_day(app).isoformat() if step.trigger_only else round_key(1)
            touch = Touch(enrollment_id=enrollment.id, step_id=step.id, trigger_key=key,
                          state=TouchState.SCHEDULED, due_at=app.now(), created_at=app.now())
            session.add(touch)
            session.flush()
        results.append((step, compose_touch(app, session, touch)))
    return results


def _sample(app: Nurture, campaign: Campaign, step: Step) -> Composed:
    thread = None
    if step.thread:  # as if the earlier step had been sent to the sample contact
        parent = _sample(app, campaign, campaign.step(step.thread))
        if parent.message is not None and parent.rendered is not None:
            subject, parent_id = parent.rendered.subject, str(parent.message["Message-ID"])
            thread = Thread(subject if subject.casefold().startswith("re:") else f"Re: {subject}",
                            parent_id,
                            (*(parent.thread.references if parent.thread else ()), parent_id))
    sample = sample_context(practice=app.practice_view(), sender=app.sender_view())
    contact = sample["contact"]
    item = None
    if step.content is not None:
        library = library_for(app.settings.campaigns_dir)
        item = pick(library.of_kind(step.content.kind), contact, step.content.match)
        if item is None:
            return Composed(None, skipped=f"the library has no {step.content.kind}s")
    link = unsubscribe_url(app.settings, 0)
    context = template_context(app, contact, campaign, step, item, link,
                               referral_count=sample["referral_count"],
                               last_referral_date=sample["last_referral_date"],
                               touch_count=sample["touch_count"])
    message_id = make_message_id(0, step.id, "", app.settings.secret_key,
                                 app.settings.sender_domain)
    rendered, message = compose(
        app, campaign, step, context, to_name=f"{contact['first_name']} {contact['last_name']}",
        to_email=contact["email"], message_id=message_id,
        unsubscribe_mailto=unsubscribe_mailto(app.settings, 0), thread=thread, date=app.now())
    return Composed(message, rendered, item, thread)


def _write(out: Path, campaign: Campaign, step: Step, composed: Composed) -> Preview:
    if composed.message is None or composed.rendered is None:
        return Preview(step.id, skipped=composed.skipped or "nothing to send")
    out.mkdir(parents=True, exist_ok=True)
    files = tuple(out / f"{campaign.id}.{step.id}.{ext}" for ext in ("html", "txt", "eml"))
    files[0].write_text(composed.rendered.html, encoding="utf-8")
    files[1].write_text(composed.rendered.text, encoding="utf-8")
    files[2].write_bytes(wire_bytes(composed.message))  # exactly as the outbox or SMTP gets it
    return Preview(step.id, composed.rendered.subject, files,
                   composed.item.id if composed.item else "")
