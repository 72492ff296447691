"""Composing the email of one touch: its context, its library item, its thread, its message.

Sending (:mod:`nurture.outbound.sending`) and previewing (:mod:`nurture.outbound.preview`) both call
:func:`compose_touch`, so a preview is what would be sent, byte for byte apart from the Date.
It runs inside the caller's transaction: the claim's when sending, one that is rolled back when
previewing. It never changes a touch's state; a step with nothing left to show comes back as
``skipped`` and the caller decides what that means.

**Library items** (``content:`` on the step) are chosen by :func:`nurture.content.library.pick` and
recorded in ``content_sent`` in that same transaction, so two workers writing to one contact at
once never pick the same item (the unique key decides; the loser picks again). A retry of the
touch shows the item it was given before. An item is *released* when its touch ends without
being sent (failed for good, cancelled, skipped): the row stays, and the next pick may take it
over. A template error rolls the choice back at once.

**Threads** (``thread:`` on the step): when the earlier step was sent, this one goes out as a
reply to it: ``Re:`` its subject, ``In-Reply-To`` its Message-ID, ``References`` the chain.
When it was never sent, this one starts a thread of its own with its own subject.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..app import Nurture
from ..content.campaigns import Campaign, Content, Step
from ..content.library import Item, library_for, pick
from ..intake.contacts import contact_view
from ..models import Contact, ContentSent, Enrollment, Referral, Touch, TouchState
from .mime import build_message, make_message_id
from .render import RenderedEmail
from .unsubscribe import unsubscribe_mailto, unsubscribe_url

__all__ = ["Composed", "Facts", "Prepared", "Thread", "claim_item", "compose", "compose_touch",
           "facts_of", "find_thread", "prepare_touch", "render_touch", "template_context"]

#: A touch in one of these states did not send its item: the item is free again.
RELEASED = (TouchState.FAILED, TouchState.CANCELLED, TouchState.SKIPPED)


@dataclass(frozen=True)
class Thread:
    """The conversation a reply joins: the subject to answer and the Message-IDs to cite."""

    subject: str | None  # None: the step's own subject (the earlier one's is not known)
    in_reply_to: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Composed:
    """The email of a touch, or why there is none (``skipped``: nothing left to show)."""

    message: EmailMessage | None
    rendered: RenderedEmail | None = None
    item: Item | None = None
    thread: Thread | None = None
    skipped: str | None = None


# The touch, from the database ----------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """Everything a touch's email is made of, read from the database: rendering it needs none,
    so a send renders after its claim has committed, holding no lock."""

    campaign: Campaign
    step: Step
    context: dict[str, Any]
    to_name: str
    to_email: str
    message_id: str
    unsubscribe_mailto: str
    item: Item | None
    thread: Thread | None


Facts = tuple[int, Any, int]  # referral count, last referral date, touches sent


def prepare_touch(app: Nurture, session: Session, touch: Touch,
                  facts: Facts | None = None) -> Prepared | str:
    """The database half of composing ``touch``: its library item (claimed in the caller's
    transaction), the relationship facts (read here unless given, see :func:`facts_of`), the
    thread and the Message-ID. A string says why the touch has nothing to send (no unsent item
    left)."""
    enrollment, contact = touch.enrollment, touch.enrollment.contact
    campaign = app.campaigns[enrollment.campaign_id]
    step = campaign.step(touch.step_id)
    item = None
    if step.content is not None:
        item = claim_item(app, session, contact, touch, step.content)
        if item is None:
            return f"no unsent {step.content.kind} left"
    referral_count, last_referral_date, touches_sent = facts or session.connection().execute(
        _FACTS, {"b_contact": contact.id}).one()
    link = unsubscribe_url(app.settings, contact.id)
    context = template_context(app, contact_view(contact), campaign, step, item, link,
                               referral_count=referral_count,
                               last_referral_date=last_referral_date,
                               touch_count=touches_sent or 0)
    return Prepared(campaign, step, context,
                    to_name=" ".join(p for p in (contact.first_name, contact.last_name) if p),
                    to_email=contact.email,
                    message_id=make_message_id(touch.enrollment_id, touch.step_id,
                                               touch.trigger_key, app.settings.secret_key,
                                               app.settings.sender_domain),
                    unsubscribe_mailto=unsubscribe_mailto(app.settings, contact.id),
                    item=item, thread=find_thread(session, touch, campaign, step))


def render_touch(app: Nurture, prepared: Prepared, date: datetime) -> Composed:
    """The other half: the email itself, from :func:`prepare_touch`'s result alone."""
    rendered, message = compose(app, prepared.campaign, prepared.step, prepared.context,
                                to_name=prepared.to_name, to_email=prepared.to_email,
                                message_id=prepared.message_id,
                                unsubscribe_mailto=prepared.unsubscribe_mailto,
                                thread=prepared.thread, date=date)
    return Composed(message, rendered, prepared.item, prepared.thread)


def compose_touch(app: Nurture, session: Session, touch: Touch) -> Composed:
    """The message ``touch`` would send now, both halves in the caller's transaction (what
    ``nurture preview`` shows). Records its item, Message-ID and subject on the touch (the
    caller's transaction commits or discards them)."""
    with session.begin_nested():  # a template error below undoes the item's claim
        prepared = prepare_touch(app, session, touch)
        if isinstance(prepared, str):
            return Composed(None, skipped=prepared)
        composed = render_touch(app, prepared, app.now())
    assert composed.rendered is not None
    touch.message_id, touch.subject = prepared.message_id, composed.rendered.subject
    return composed


# A contact's safe relationship facts, in one statement built once (it runs for every email).
# The sent count goes through the contact's enrollments (indexed), not EXISTS per touch: that
# scanned every sent touch in the database (about 1 s per email at a million enrollments).
_MINE = Referral.contact_id == bindparam("b_contact")
_FACTS = select(
    select(func.count(Referral.id)).where(_MINE).scalar_subquery(),
    select(func.max(Referral.referred_on)).where(_MINE).scalar_subquery(),
    select(func.count(Touch.id)).join(Touch.enrollment)
    .where(Enrollment.contact_id == bindparam("b_contact"), Touch.state == TouchState.SENT)
    .scalar_subquery())


def facts_of(session: Session, contact_ids: Collection[int]) -> dict[int, Facts]:
    """:func:`prepare_touch`'s relationship facts for many contacts, in two statements."""
    facts: dict[int, Facts] = {contact_id: (0, None, 0) for contact_id in contact_ids}
    for contact_id, count, last in session.execute(_REFERRALS_OF, {"b_contacts": list(facts)}):
        facts[contact_id] = (count, last, 0)
    for contact_id, sent in session.execute(_SENT_TO, {"b_contacts": list(facts)}):
        facts[contact_id] = (*facts[contact_id][:2], sent)
    return facts


_REFERRALS_OF = (select(Referral.contact_id, func.count(Referral.id),
                        func.max(Referral.referred_on))
                 .where(Referral.contact_id.in_(bindparam("b_contacts", expanding=True)))
                 .group_by(Referral.contact_id))
_SENT_TO = (select(Enrollment.contact_id, func.count(Touch.id)).join(Touch.enrollment)
            .where(Enrollment.contact_id.in_(bindparam("b_contacts", expanding=True)),
                   Touch.state == TouchState.SENT)
            .group_by(Enrollment.contact_id))


def claim_item(app: Nurture, session: Session, contact: Contact, touch: Touch,
               content: Content) -> Item | None:
    """The library item for this touch, recorded for the contact; None when none is left."""
    library = library_for(app.settings.campaigns_dir)
    mine = session.scalar(select(ContentSent).where(ContentSent.touch_id == touch.id))
    if mine is not None:
        item = library.get(mine.item_id)
        if item is not None and item.kind == content.kind:
            return item  # a retry shows what it showed before
        session.delete(mine)  # the item left the library (or the step changed kind)
        session.flush()
    rows = session.execute(select(ContentSent.item_id, Touch.state)
                           .outerjoin(Touch, ContentSent.touch_id == Touch.id)
                           .where(ContentSent.contact_id == contact.id)).all()
    taken = {item_id for item_id, state in rows if state not in RELEASED}
    candidates = library.of_kind(content.kind)
    view = contact_view(contact)
    for _ in candidates:
        item = pick(candidates, view, content.match, taken)
        if item is None:
            return None
        if _record(session, contact, touch, item, app.now()):
            return item
        taken.add(item.id)  # another worker took it for this contact just now
    return None


def _record(session: Session, contact: Contact, touch: Touch, item: Item, now: datetime) -> bool:
    released = select(Touch.id).where(Touch.state.in_(RELEASED))
    taken_over = session.execute(
        update(ContentSent).where(ContentSent.contact_id == contact.id,
                                  ContentSent.item_id == item.id,
                                  ContentSent.touch_id.in_(released))
        .values(touch_id=touch.id, kind=item.kind, at=now)
        .returning(ContentSent.id)).first()
    if taken_over is not None:
        return True
    try:
        with session.begin_nested():
            session.add(ContentSent(contact_id=contact.id, item_id=item.id, kind=item.kind,
                                    touch_id=touch.id, at=now))
    except IntegrityError:
        return False
    return True


def find_thread(session: Session, touch: Touch, campaign: Campaign, step: Step) -> Thread | None:
    """The conversation ``step`` replies to, if its earlier step was sent in this enrollment."""
    chain: list[str] = []
    subject, current, before = None, step, None
    while current.thread:
        query = (select(Touch.message_id, Touch.subject, Touch.sent_at)
                 .where(Touch.enrollment_id == touch.enrollment_id,
                        Touch.step_id == current.thread, Touch.state == TouchState.SENT,
                        Touch.message_id.is_not(None))
                 .order_by(Touch.sent_at.desc()).limit(1))
        if before is not None:
            query = query.where(Touch.sent_at <= before)
        parent = session.execute(query).first()
        if parent is None:
            break
        chain.insert(0, parent.message_id)
        subject = parent.subject if subject is None else subject
        before = parent.sent_at
        try:
            current = campaign.step(current.thread)
        except KeyError:
            break
    if not chain:
        return None
    if not subject:  # a send recorded without its subject (settled by `nurture resolve`)
        return Thread(None, chain[-1], tuple(chain))
    return Thread(subject if subject.casefold().startswith("re:") else f"Re: {subject}",
                  chain[-1], tuple(chain))


# The email, from its parts (no database) ------------------------------------------------------
def template_context(app: Nurture, contact: dict[str, Any], campaign: Campaign, step: Step,
                     item: Item | None, unsubscribe_link: str, *, referral_count: int,
                     last_referral_date: Any, touch_count: int) -> dict[str, Any]:
    """Everything a template may see (:data:`nurture.outbound.render.CONTEXT_KEYS`), and nothing
    else."""
    return {
        "contact": contact,
        "sender": app.sender_view(),
        "owner": app.sender_view(),
        "practice": app.practice_view(),
        "item": item.view() if item else None,
        "campaign": {"id": campaign.id, "name": campaign.name},
        "step": {"id": step.id, "layout": step.layout},
        "unsubscribe_url": unsubscribe_link,
        "referral_count": referral_count,
        "last_referral_date": last_referral_date,
        "touch_count": touch_count,
    }


def compose(app: Nurture, campaign: Campaign, step: Step, context: dict[str, Any], *,
            to_name: str, to_email: str, message_id: str, unsubscribe_mailto: str,
            thread: Thread | None, date: datetime) -> tuple[RenderedEmail, EmailMessage]:
    """Render the step for ``context`` and wrap it into the message as it goes on the wire."""
    settings = app.settings
    rendered = app.renderer.render(step.template, step.subject, context,
                                   field=f"{campaign.id}.steps.{step.id}", layout=step.layout)
    if thread is not None and thread.subject:
        rendered = replace(rendered, subject=thread.subject)
    message = build_message(rendered, from_name=settings.sender_name,
                            from_email=settings.sender_email, to_name=to_name, to_email=to_email,
                            message_id=message_id, date=date,
                            unsubscribe_url=str(context["unsubscribe_url"]),
                            unsubscribe_mailto=unsubscribe_mailto,
                            in_reply_to=thread.in_reply_to if thread else None,
                            references=thread.references if thread else ())
    return rendered, message
