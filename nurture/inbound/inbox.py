"""Hearing back: replies recorded by hand, and every message read from the sender mailbox.

A reply means a human conversation has started, so the automation steps aside: it stops the
enrollments whose campaign has ``reply`` in ``stop_on``, and the owner is told to answer
personally. :func:`process_message` is what happens to one incoming message (the IMAP side is
:mod:`nurture.inbound.imap`); it is classified (:func:`nurture.inbound.classify.classify`), matched
to a
contact, and acted on, in one transaction:

- **bounce**: hard, the contact is bounced and everything stops; soft, counted (one per touch),
  and the contact is bounced after ``soft_bounce_limit`` in a row. A reply or an out-of-office
  notice from them (they are alive) starts the count again. A failure about our own sender or
  HELO name, a policy refusal (5.7.x: spam, blocklists) or a mailing list's refusal is
  ``flagged``: logged for the owner, never counted against the contact.
- **complaint** (a feedback report about our message): an unsubscribe.
- **auto_reply**: nothing stops; the contact's next sequence emails wait until the return date
  when one can be read, else for ``pause_days`` (never longer than :data:`MAX_PAUSE`).
- **reply**: recorded (``source="imap"``) and stops what a reply stops; the owner gets a
  plain-text notification in the sender mailbox, with the first lines of the reply.
- anything else, and whatever matches no contact, is left alone and counted.

**Matching**, first hit wins: the Message-IDs the message points to (In-Reply-To, References,
a returned message's own) against our touches' Message-IDs; then the address (the sender, or
the failed or complaining recipient) against contacts' addresses, then their aliases; then, for
a person's reply only, the sender's domain against contacts' domains (an office manager
answering for a doctor). Free-mail domains (gmail.com, outlook.com...) and our own never match
by domain, and a domain shared by several contacts matches only when exactly one of them is
in a running campaign.

Every message is recorded once, by Message-ID, in ``inbox_messages``: reading it again (after
a crash, a UIDVALIDITY change, or by two workers at once) changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..app import Nurture
from ..clock import as_utc
from ..engine import log_event, pause_contact, stop_contact, suppress_contact
from ..errors import NotFound
from ..intake.contacts import get_contact
from ..models import (
    Contact,
    ContactAlias,
    ContactStatus,
    Enrollment,
    EnrollmentState,
    InboxMessage,
    Reply,
    SoftBounceCount,
    Touch,
)
from ..settings import Settings
from .bounces import FLAGGED
from .classify import Classification, classify, reply_text
from .rawmail import parse_raw_message

#: What was done with a message (``InboxMessage.action``); "duplicate" is never stored.
ACTIONS = ("reply", "paused", "bounced", "soft_bounce", "flagged", "unsubscribed", "unmatched",
           "other", "own")
#: An out-of-office notice never holds a contact's emails longer than this: a misread year
#: must not silence someone for good (their next notice pauses them again).
MAX_PAUSE = timedelta(days=90)
EXCERPT_LINES = 12

#: Providers whose domain says nothing about an organization: never matched by domain.
FREE_MAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "ymail.com", "rocketmail.com", "icloud.com", "me.com", "mac.com", "aol.com",
    "proton.me", "protonmail.com", "pm.me", "gmx.com", "gmx.net", "gmx.de", "web.de",
    "mail.com", "zoho.com", "yandex.com", "yandex.ru", "fastmail.com", "hey.com", "tutanota.com",
    "tuta.io", "comcast.net", "att.net", "sbcglobal.net", "verizon.net", "bellsouth.net",
    "cox.net", "charter.net", "earthlink.net", "qq.com", "163.com", "mail.ru", "orange.fr",
    "free.fr", "laposte.net", "t-online.de", "libero.it", "btinternet.com",
})
#: Their country variants too: yahoo.co.uk, hotmail.fr, outlook.de, live.ca...
_FREE_MAIL_BRANDS = re.compile(r"^(yahoo|ymail|hotmail|outlook|live|msn|aol|gmx|yandex)\.")


@dataclass(frozen=True)
class InboxConfig:
    """The inbox settings (read from :class:`~nurture.settings.Settings` by
    :func:`nurture.inbound.imap.inbox_config`)."""

    imap_url: str = Settings.imap_url  # empty: no mailbox is read
    poll_interval: int = Settings.inbox_poll_interval  # seconds between polls in the worker
    soft_bounce_limit: int = Settings.inbox_soft_bounce_limit  # in a row: the contact bounces
    pause_days: int = Settings.inbox_pause_days  # an out-of-office without a return date


@dataclass
class ReplyResult:
    email: str
    stopped: list[str] = field(default_factory=list)  # campaign ids


@dataclass(frozen=True)
class Outcome:
    """What :func:`process_message` did with one message."""

    kind: str  # the classification's kind, or "own" (our own notification)
    action: str  # one of ACTIONS, or "duplicate" (already processed: nothing done)
    contact: str | None = None  # the matched contact's address
    touch_id: int | None = None
    matched_by: str | None = None  # message_id, address, alias, domain
    detail: dict[str, Any] = field(default_factory=dict)


# Replies ---------------------------------------------------------------------------------------
def record_reply(app: Nurture, email: str, *, at: datetime | None = None, source: str = "manual",
                 message_id: str | None = None, touch_id: int | None = None) -> ReplyResult:
    """Record that ``email`` replied, and stop what a reply stops, in one transaction."""
    with app.db.transaction() as session:
        contact = get_contact(session, email)
        if contact is None:
            raise NotFound(f"no contact with email {email!r}")
        return record_reply_in(app, session, contact, at=at, source=source,
                               message_id=message_id, touch_id=touch_id)


def record_reply_in(app: Nurture, session: Session, contact: Contact, *,
                    at: datetime | None = None, source: str = "manual",
                    message_id: str | None = None, touch_id: int | None = None) -> ReplyResult:
    """:func:`record_reply` inside the caller's transaction."""
    now = app.now()
    session.add(Reply(contact_id=contact.id, received_at=at or now, source=source,
                      message_id=message_id, touch_id=touch_id, recorded_at=now))
    stopped = stop_contact(app, session, contact, "reply")
    log_event(session, now, "reply_recorded", contact_id=contact.id, source=source,
              stopped=[e.campaign_id for e in stopped])
    return ReplyResult(contact.email, [e.campaign_id for e in stopped])


# One incoming message --------------------------------------------------------------------------
def process_message(app: Nurture, raw: bytes, *, received_at: datetime | None = None,
                    config: InboxConfig | None = None) -> Outcome:
    """Classify one raw message, match it to a contact and act on it, exactly once.

    ``received_at`` is when the mailbox got it (IMAP INTERNALDATE); without it, its Date
    header. A message already processed (same Message-ID) is a ``duplicate`` and changes
    nothing. Notifications are only queued here: :func:`send_notifications` sends them.
    """
    if config is None:
        from .imap import inbox_config

        config = inbox_config(app.settings)
    now = app.now()
    msg = parse_raw_message(raw)  # one parse: leading blank lines and an mbox line ignored
    written = _date_header(msg)
    received = as_utc(received_at) if received_at else (written or now)
    anchor = written.date() if written else _local_day(app.settings, received)
    found = classify(msg, today=anchor)
    own = found.sender is not None and found.sender == app.settings.sender_email.strip().lower()
    kind = "own" if own else found.kind
    with app.db.transaction() as session:
        match = None if own or kind == "other" else _match(app, session, found)
        row = InboxMessage(key=_message_key(msg, raw), kind=kind, action="other",
                           sender=(found.sender or "")[:320] or None, received_at=received,
                           processed_at=now, detail="{}")
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            return Outcome(kind, "duplicate")
        if own:
            row.action = "own"
        elif match is None:
            row.action = "other" if kind == "other" else "unmatched"
            log_event(session, now, "inbox_unmatched" if kind != "other" else "inbox_other",
                      message_kind=kind, sender=found.sender, recipient=found.recipient)
        else:
            contact, touch, by = match
            row.contact_id, row.touch_id, row.matched_by = (
                contact.id, touch.id if touch else None, by)
            session.execute(select(Contact.id).where(Contact.id == contact.id)
                            .with_for_update())  # one message at a time per contact
            detail = _act(app, session, config, row, found, msg, contact, touch)
            row.detail = json.dumps(detail, default=str, sort_keys=True)
        session.flush()
        contact_email = session.get_one(Contact, row.contact_id).email if row.contact_id else None
        return Outcome(kind, row.action, contact_email, row.touch_id, row.matched_by,
                       json.loads(row.detail))


def _act(app: Nurture, session: Session, config: InboxConfig, row: InboxMessage,
         found: Classification, msg: Message, contact: Contact,
         touch: Touch | None) -> dict[str, Any]:
    """Do what the message means for ``contact``; set ``row.action``; return the details."""
    now = app.now()
    about = {"contact_id": contact.id, "touch_id": row.touch_id}
    if found.kind == "complaint":
        row.action = "unsubscribed"
        suppress_contact(app, session, contact, ContactStatus.UNSUBSCRIBED,
                         "complaint (feedback report) read from the mailbox")
        return {"complaint_from": found.recipient}
    if found.kind == "bounce" and found.hard:
        row.action = "bounced"
        why = " ".join(filter(None, ["hard bounce", found.status, "read from the mailbox"]))
        suppress_contact(app, session, contact, ContactStatus.BOUNCED, why)
        return {"status": found.status, "hard": True}
    if found.kind == "bounce" and found.reason in FLAGGED:  # about us or a policy, not them
        row.action = "flagged"
        log_event(session, now, "bounce_flagged", **about, status=found.status,
                  reason=found.reason)
        return {"status": found.status, "hard": False, "reason": found.reason}
    if found.kind == "bounce":
        count = _count_soft_bounce(session, contact, row.touch_id, now)
        row.action = "soft_bounce"
        if count >= config.soft_bounce_limit:
            row.action = "bounced"
            suppress_contact(app, session, contact, ContactStatus.BOUNCED,
                             f"{count} soft bounces in a row")
        log_event(session, now, "soft_bounce", **about, status=found.status, count=count)
        return {"status": found.status, "hard": False, "soft_bounces": count}
    session.execute(delete(SoftBounceCount).where(SoftBounceCount.contact_id == contact.id))
    if found.kind == "auto_reply":
        row.action = "paused"
        until = _pause_until(app, config, contact, found.return_date)
        moved = pause_contact(app, session, contact, until) if until > now else 0
        return {"return_date": found.return_date, "until": until, "moved": moved}
    # A person's reply.
    result = record_reply_in(app, session, contact, at=row.received_at, source="imap",
                             message_id=_message_id(msg), touch_id=row.touch_id)
    row.action = "reply"
    row.subject = (found.subject or "")[:400] or None
    row.excerpt = _excerpt(reply_text(msg))
    row.notify_after = now
    return {"stopped": result.stopped}


def _count_soft_bounce(session: Session, contact: Contact, touch_id: int | None,
                       now: datetime) -> int:
    """Count a soft bounce; several reports about one touch count once."""
    counter = session.get(SoftBounceCount, contact.id)
    if counter is None:
        counter = SoftBounceCount(contact_id=contact.id, count=0, updated_at=now)
        session.add(counter)
    if touch_id is None or touch_id != counter.last_touch_id:
        counter.count += 1
        counter.last_touch_id = touch_id
    counter.updated_at = now
    return counter.count


def _pause_until(app: Nurture, config: InboxConfig, contact: Contact,
                 back: date | None) -> datetime:
    """The start of the return day in the contact's zone, else ``pause_days`` from now."""
    now = app.now()
    if back is None:
        until = now + timedelta(days=config.pause_days)
    else:
        zone = app.zone_for(contact.timezone)
        until = as_utc(datetime.combine(back, time(0, 0), tzinfo=zone))
    return min(until, now + MAX_PAUSE)


# Matching ------------------------------------------------------------------------------------
def _match(app: Nurture, session: Session,
           found: Classification) -> tuple[Contact, Touch | None, str] | None:
    """(contact, the touch answered if known, how it was matched), or None."""
    if found.in_reply_to:
        touches = {t.message_id: t for t in session.scalars(
            select(Touch).where(Touch.message_id.in_(found.in_reply_to)))}
        for message_id in found.in_reply_to:  # In-Reply-To first, then References
            if message_id in touches:
                touch = touches[message_id]
                return touch.enrollment.contact, touch, "message_id"
    address = found.recipient if found.kind in ("bounce", "complaint") else found.sender
    if not address:
        return None
    address = address.strip().lower()
    contact = session.scalar(select(Contact).where(Contact.email == address))
    if contact is not None:
        return contact, _last_touch(session, contact), "address"
    contact = session.scalar(select(Contact).join(ContactAlias, ContactAlias.contact_id
                                                  == Contact.id)
                             .where(ContactAlias.email == address))
    if contact is not None:
        return contact, _last_touch(session, contact), "alias"
    if found.kind == "reply":
        contact = _by_domain(app, session, address)
        if contact is not None:
            return contact, _last_touch(session, contact), "domain"
    return None


def is_free_mail(domain: str) -> bool:
    domain = domain.strip().lower().rstrip(".")
    return domain in FREE_MAIL or bool(_FREE_MAIL_BRANDS.match(domain))


def _by_domain(app: Nurture, session: Session, address: str) -> Contact | None:
    """The one contact at the sender's organization domain, if exactly one can be told."""
    domain = address.rpartition("@")[2]
    if not domain or is_free_mail(domain) or domain == app.settings.sender_domain.lower():
        return None
    candidates = list(session.scalars(select(Contact).where(
        Contact.email.endswith(f"@{domain}", autoescape=True))))
    if len(candidates) > 1:
        running = set(session.scalars(select(Enrollment.contact_id).where(
            Enrollment.contact_id.in_([c.id for c in candidates]),
            Enrollment.state == EnrollmentState.ACTIVE)))
        candidates = [c for c in candidates if c.id in running]
    return candidates[0] if len(candidates) == 1 else None


def _last_touch(session: Session, contact: Contact) -> Touch | None:
    """The last email sent to the contact: what a reply without threading headers answers."""
    return session.scalar(select(Touch).join(Touch.enrollment)
                          .where(Enrollment.contact_id == contact.id, Touch.sent_at.is_not(None))
                          .order_by(Touch.sent_at.desc(), Touch.id.desc()).limit(1))


# Reading the raw message -----------------------------------------------------------------------
def _message_id(msg: Message) -> str | None:
    try:
        found = re.search(r"<[^<>\s]+>", str(msg.get("Message-ID") or ""))
    except Exception:  # noqa: BLE001 - a broken header is no Message-ID
        return None
    return found.group(0) if found and len(found.group(0)) <= 250 else None


def _message_key(msg: Message, raw: bytes) -> str:
    """The message's identity across mailboxes and re-scans: its Message-ID, else its bytes."""
    message_id = _message_id(msg)
    return message_id or f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _date_header(msg: Message) -> datetime | None:
    try:
        written = parsedate_to_datetime(str(msg.get("Date")))
    except (TypeError, ValueError, IndexError):
        return None
    return written if written.tzinfo is not None else written.replace(tzinfo=ZoneInfo("UTC"))


def _local_day(settings: Settings, moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(settings.practice_timezone or "UTC")).date()


def _excerpt(text: str) -> str:
    lines = text.strip().split("\n")
    cut = lines[:EXCERPT_LINES]
    return "\n".join(cut) + ("\n[...]" if len(lines) > len(cut) else "")
