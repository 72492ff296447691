"""Short plain-text notes to the practice owner: "Dr. Lee referred a patient", "Dana replied".

They go to ``[sender] email`` over the configured transport (SMTP, or the outbox folder), after
whatever they report has been committed. They are for a person to act on, so they stay plain:
no HTML, no unsubscribe link, and ``Auto-Submitted`` so that vacation responders stay quiet.
Callers pass text that holds nothing about patients: nurture stores nothing about them.
"""

from __future__ import annotations

import logging
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from ..app import Nurture
from ..engine import log_event
from ..errors import NurtureError
from .transport import open_transport

log = logging.getLogger(__name__)

FROM_NAME = "nurture"


def owner_message(app: Nurture, subject: str, body: str) -> EmailMessage:
    """The note as it goes on the wire: Date from the app's clock, a Message-ID of its own on
    the sender's domain (never the ``nurture.ID.HMAC`` form of a touch, so a reply to it is
    not taken for a reply to a campaign email)."""
    settings = app.settings
    if not settings.sender_email.strip():
        raise NurtureError("cannot notify the owner: [sender] email is not set")
    to = settings.sender_email.strip()
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(FROM_NAME, addr_spec=to)
    msg["To"] = Address(" ".join(settings.sender_name.split()), addr_spec=to)
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = format_datetime(app.now())
    msg["Message-ID"] = make_msgid("nurture-note", domain=settings.sender_domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(body if body.endswith("\n") else body + "\n", charset="utf-8",
                    cte="quoted-printable")
    return msg


def notify_owner(app: Nurture, subject: str, body: str) -> str:
    """Send one note to the owner now; its Message-ID. Raises a NurtureError (a DeliveryError
    from the transport) when it could not be sent: the caller decides how loudly to say so."""
    message = owner_message(app, subject, body)
    with open_transport(app.settings) as transport:
        transport.send(message)
    return str(message["Message-ID"])


def tell_owner(app: Nurture, subject: str, body: str) -> str | None:
    """:func:`notify_owner` about something already committed: a failed note never undoes it.
    The failure is logged and kept as an event; returns why, or None when the note went."""
    try:
        notify_owner(app, subject, body)
    except NurtureError as exc:
        log.warning("the owner was not notified (%s): %s", subject, exc)
        with app.db.transaction() as session:
            log_event(session, app.now(), "owner_notification_failed", subject=subject,
                      error=str(exc))
        return str(exc)
    return None
