"""Telling the owner about replies: one plain-text note per reply read from the mailbox (or
reported by a webhook), sent to the sender mailbox, claimed first so that no two workers send
it; what :func:`nurture.inbox.process_message` queued."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .app import Nurture
from .delivery import DeliveryError, Transport, open_transport
from .engine import log_event
from .models import Contact, InboxMessage, Touch
from .notify import owner_message

if TYPE_CHECKING:
    from .inbox import ReplyResult

log = logging.getLogger(__name__)

#: A notification being sent is not sent again by another worker until this has passed.
NOTICE_LEASE = timedelta(minutes=10)


@dataclass
class NoticeReport:
    sent: int = 0
    failed: int = 0
    error: str | None = None  # the last delivery error, without the message's contents


def send_notifications(app: Nurture, transport: Transport | None = None,
                       limit: int = 100) -> NoticeReport:
    """Email the owner about each recorded reply not yet notified, to the sender mailbox.

    Each notification is claimed first (another worker leaves it alone for
    :data:`NOTICE_LEASE`), then sent, then marked sent and its excerpt cleared. One that fails
    is tried again on a later poll; nothing is dropped. A crash between sending and marking
    means a second copy, in our own mailbox, never in a contact's.
    """
    report = NoticeReport()
    now = app.now()
    with app.db.transaction() as session:
        due = session.scalars(select(InboxMessage.id).where(
            InboxMessage.notified_at.is_(None), InboxMessage.notify_after <= now)
            .order_by(InboxMessage.id).limit(limit)).all()
    if not due:
        return report
    settings = app.settings
    with transport or open_transport(settings.smtp_url, settings.outbox_dir,
                                     timeout=settings.smtp_timeout) as mail:
        for row_id in due:
            message = _claim_notice(app, row_id, now)
            if message is None:
                continue
            try:
                mail.send(message)
            except DeliveryError as exc:
                report.failed += 1
                report.error = str(exc)
                log.warning("could not send the reply notification for message %s: %s",
                            row_id, exc)
                with app.db.transaction() as session:
                    log_event(session, app.now(), "reply_notice_failed", why=str(exc),
                              inbox_message_id=row_id)
                if exc.connecting:
                    break
                continue
            with app.db.transaction() as session:
                session.execute(update(InboxMessage).where(InboxMessage.id == row_id).values(
                    notified_at=app.now(), subject=None, excerpt=None))
                log_event(session, app.now(), "reply_notified", inbox_message_id=row_id,
                          message_id=message["Message-ID"])
            report.sent += 1
    return report


def _claim_notice(app: Nurture, row_id: int, now: datetime) -> EmailMessage | None:
    with app.db.transaction() as session:
        got = session.scalar(update(InboxMessage).where(
            InboxMessage.id == row_id, InboxMessage.notified_at.is_(None),
            InboxMessage.notify_after <= now)
            .values(notify_after=now + NOTICE_LEASE).returning(InboxMessage.id))
        if got is None:
            return None
        row = session.get_one(InboxMessage, row_id, populate_existing=True)
        return notice_message(app, session, row)


def reply_note(app: Nurture, session: Session, contact: Contact, result: ReplyResult,
               message_id: str | None = None) -> tuple[str, str]:
    """The owner's note about a reply reported from outside (``POST /hooks/reply``): who, to
    which email when the Message-ID is ours, what stopped. The mailbox holds what they wrote."""
    who = _person(contact)
    touch = session.scalar(select(Touch).where(Touch.message_id == message_id)) \
        if message_id else None
    lines = [f"{who} <{contact.email}> replied (reported by your mail provider or intake form)."]
    if touch is not None:
        lines.append(f"In reply to: {touch.enrollment.campaign_id} / {touch.step_id}: "
                     f"\"{touch.subject or ''}\"")
    lines.append("Stopped: " + (", ".join(result.stopped) + ": nothing more goes out from it"
                                if result.stopped else "nothing was running that stops on a reply"))
    lines += ["", "Answer them yourself: nurture sends nothing in reply.", ""]
    return f"Reply from {who}: answer personally", "\n".join(lines)


def notice_id(app: Nurture, row_id: int) -> str:
    """The notification's Message-ID: derived from its row, so a second copy threads as one."""
    secret = app.settings.secret_key.encode()
    digest = hmac.new(secret, f"notice:{row_id}".encode(), hashlib.sha256).hexdigest()
    return f"<nurture.notice.{row_id}.{digest[:12]}@{app.settings.sender_domain}>"


def notice_message(app: Nurture, session: Session, row: InboxMessage) -> EmailMessage:
    """The plain-text notification of one reply: who, to which step, what they wrote."""
    settings = app.settings
    contact = session.get(Contact, row.contact_id) if row.contact_id else None
    touch = session.get(Touch, row.touch_id) if row.touch_id else None
    detail = json.loads(row.detail or "{}")
    who = _person(contact) if contact else (row.sender or "someone")
    zone = ZoneInfo(settings.practice_timezone or "UTC")
    lines = [f"{who} replied. Please answer personally.", ""]
    if contact is not None:
        org = f", {contact.organization}" if contact.organization else ""
        lines.append(f"Contact:      {who} <{contact.email}>{org}")
        if row.sender and row.sender != contact.email:
            how = {"alias": "one of their other addresses",
                   "domain": "someone at their organization",
                   "message_id": "in reply to our email to them"}.get(row.matched_by or "", "")
            lines.append(f"Written by:   {row.sender}" + (f" ({how})" if how else ""))
        if contact.owner:
            lines.append(f"Relationship: {contact.owner}")
    if touch is not None:
        step = f"{touch.enrollment.campaign_id} / {touch.step_id}"
        sent = touch.sent_at.astimezone(zone).strftime(" (sent %a %d %b %Y)") \
            if touch.sent_at else ""
        lines.append(f"In reply to:  {step}: \"{touch.subject or ''}\"{sent}")
    lines.append(f"Received:     {row.received_at.astimezone(zone):%a %d %b %Y %H:%M %Z}")
    if row.subject:
        lines.append(f"Subject:      {row.subject}")
    stopped = detail.get("stopped") or []
    lines.append("Stopped:      " + (", ".join(stopped) + ": nothing more goes out from it"
                                     if stopped else "nothing was running that stops on a reply"))
    lines += ["", "They wrote:", ""]
    lines += [f"  {line}".rstrip() for line in (row.excerpt or "(no text)").split("\n")]
    lines += ["", "Answer them yourself, from their message in this mailbox: nurture sends "
              "nothing in reply.", ""]
    message = owner_message(app, f"Reply from {who}: answer personally", "\n".join(lines))
    message.replace_header("Message-ID", notice_id(app, row.id))
    message["X-Nurture-Notice"] = "reply"
    return message


def _person(contact: Contact) -> str:
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    return name or contact.email
