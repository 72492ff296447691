"""How a rendered email leaves nurture: over SMTP, or into an outbox folder.

Besides sending, a transport must say exactly what went wrong: *retry later* (Transient), *never
retry* (Permanent; its ``kind`` says if the address is dead) or *nobody can know* (Uncertain),
which a person resolves, because a wrong guess is a duplicate in a referral source's inbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from ..errors import NurtureError
from ..settings import Settings
from .mime import WireMessage, wire_bytes

log = logging.getLogger(__name__)


class DeliveryError(NurtureError):
    """A message was not delivered, or may not have been. The subclass says what to do next.

    ``connecting`` is True when the error came while opening the connection (refused, bad
    password, no STARTTLS): it says nothing about the message or its recipient, and the same
    error would meet every message of the batch.
    """

    connecting = False

    def __init__(self, detail: str, *, code: int | None = None, enhanced: str | None = None,
                 recipient: str | None = None):
        self.code, self.enhanced, self.detail, self.recipient = code, enhanced, detail, recipient
        super().__init__(str(self))

    def __str__(self) -> str:
        status = " ".join(str(part) for part in (self.code, self.enhanced) if part is not None)
        to = f" (to {self.recipient})" if self.recipient else ""
        return f"{status} {self.detail}{to}".strip()


class TransientDeliveryError(DeliveryError):
    """Not delivered, and worth trying again later (4xx, refused connection, timeout)."""


class PermanentDeliveryError(DeliveryError):
    """Not delivered; retrying will not help (5xx). ``kind``: "mailbox" when the recipient's
    address is dead (the contact is bounced), "policy" when the server refused *us* (reputation,
    authentication: fix our side, keep the contact), or "other" (a full mailbox, too big...)."""

    def __init__(self, detail: str, *, kind: str = "other", code: int | None = None,
                 enhanced: str | None = None, recipient: str | None = None):
        self.kind = kind
        super().__init__(detail, code=code, enhanced=enhanced, recipient=recipient)


class UncertainDeliveryError(DeliveryError):
    """The connection died after DATA, before the server's answer: it may have been delivered."""


class TransportConfigError(NurtureError, ValueError):
    """The mail URL is malformed. The message never quotes the URL: it may hold a password."""


_ENHANCED = re.compile(r"^#?([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown (user|recipient|mailbox)|no such (user|recipient|mailbox)"
    r"|(user|recipient|mailbox|address) (not found|does not exist|doesn't exist)"
    r"|invalid (recipient|mailbox)", re.IGNORECASE)
_POLICY_TEXT = re.compile(r"block|blacklist|spam|reputation|policy|authenticat", re.IGNORECASE)
_AUTH_CODES = {530, 534, 535, 538}  # RFC 4954: authentication required / failed


def classify_smtp_error(code: int, message: bytes | str,
                        recipient: str | None = None) -> DeliveryError:
    """Turn an SMTP reply into the error that says what to do next.

    The RFC 3463 enhanced code wins over the basic code because it is the more specific: ``452
    4.2.2`` and ``552 5.2.2`` both say "mailbox full", and only the second is permanent. A full
    mailbox is not a bounce (the address is alive), nor are X.1.7/X.1.8, which are about *our*
    sender address. Without an enhanced code, only wording like "user unknown" bounces.
    """
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.strip().splitlines()] or [""]
    found = _ENHANCED.match(lines[0])
    enhanced = ".".join(found.groups()) if found else None
    # Servers repeat the enhanced code on every line of a multi-line reply; say it once.
    detail = " ".join(_ENHANCED.sub("", line).strip() for line in lines).strip()
    if (enhanced or str(code))[0] != "5":  # 4xx, or garbled: a bounded retry costs little
        return TransientDeliveryError(detail, code=code, enhanced=enhanced, recipient=recipient)
    if enhanced is not None:
        _, subject, item = enhanced.split(".")
        if (subject == "1" and item not in ("7", "8")) or (subject, item) == ("2", "1"):
            kind = "mailbox"  # X.1.x bad address; X.2.1 mailbox disabled
        else:
            kind = "policy" if subject == "7" else "other"
    elif _UNKNOWN_USER.search(detail):
        kind = "mailbox"
    else:
        kind = "policy" if code in _AUTH_CODES or _POLICY_TEXT.search(detail) else "other"
    return PermanentDeliveryError(detail, kind=kind, code=code, enhanced=enhanced,
                                  recipient=recipient)


class Transport(ABC):
    """Where finished messages go. A context manager, so that connections get closed.

    Sending is two steps, so that the caller can record, between them, that a message is about
    to become deliverable: :meth:`stage` hands over everything but the final commitment (SMTP:
    the envelope and the data, all but the closing ``.``; the outbox: a temporary file), and
    :meth:`Staged.commit` makes it delivered. A process that dies between the two has delivered
    nothing: an SMTP server discards data that never ended, and a temporary file is ignored.
    """

    name: str

    @abstractmethod
    def stage(self, message: EmailMessage) -> Staged:
        """Hand over all of ``message`` but the last step, or raise a :class:`DeliveryError`
        subclass (nothing was delivered: never :class:`UncertainDeliveryError`)."""

    def send(self, message: EmailMessage) -> None:
        """Deliver one message at once (for mail that needs no record in between)."""
        self.stage(message).commit()

    def close(self) -> None:  # noqa: B027 (a transport without connections has nothing to do)
        """Release any connection; the transport may still be used afterwards."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Staged(ABC):
    """A message handed over to a transport, not yet delivered (see :class:`Transport`)."""

    @abstractmethod
    def commit(self) -> None:
        """Deliver it, or raise a :class:`DeliveryError` subclass; only here may that be an
        :class:`UncertainDeliveryError` (the connection died before the server answered)."""

    @abstractmethod
    def abort(self) -> None:
        """Make sure it is never delivered. Never raises."""


def envelope(message: EmailMessage) -> tuple[str, list[str], bytes]:
    """The SMTP envelope (sender, recipients) and the wire bytes of ``message``."""
    if isinstance(message, WireMessage):
        return message.envelope_from, [message.envelope_to], message.wire
    headers = [str(value) for h in ("To", "Cc", "Bcc") for value in message.get_all(h, [])]
    recipients = [address for _, address in getaddresses(headers) if address]
    sender = getaddresses([str(message.get("From", ""))])[0][1]
    return sender, recipients, wire_bytes(message)


class OutboxTransport(Transport):
    """Writes each message to ``<directory>/<Message-ID>.eml``: delivery for trying things out.

    The bytes are what SMTP would carry, so a file opens in any mail client. Naming files by
    Message-ID makes a repeated send overwrite rather than duplicate. A staged message is a
    hidden temporary file, written and synced; committing renames it into place, so nobody
    ever reads half a message.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.name = f"outbox folder {self.directory}"

    def stage(self, message: EmailMessage) -> Staged:
        data = wire_bytes(message)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                _remove(Path(temp))
                raise
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to {self.name}: {exc}") from exc
        return _OutboxStaged(self, Path(temp), self.directory / _eml_name(message, data))


class _OutboxStaged(Staged):
    def __init__(self, transport: OutboxTransport, temp: Path, final: Path):
        self.transport, self.temp, self.final = transport, temp, final

    def commit(self) -> None:
        try:
            os.replace(self.temp, self.final)
        except OSError as exc:
            self.abort()
            raise TransientDeliveryError(f"cannot write to {self.transport.name}: {exc}") from exc

    def abort(self) -> None:
        _remove(self.temp)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def _eml_name(message: EmailMessage, data: bytes) -> str:
    """A safe file name from the Message-ID; a hash keeps apart ids that sanitise alike."""
    message_id = str(message.get("Message-ID", "")).strip().strip("<>")
    if not message_id:
        return f"no-message-id-{hashlib.sha256(data).hexdigest()[:32]}.eml"
    safe = _UNSAFE.sub("_", message_id).lstrip(".")
    if safe != message_id or len(safe) > 150:
        safe = f"{safe[:100]}-{hashlib.sha256(message_id.encode()).hexdigest()[:12]}"
    return f"{safe}.eml"


def open_transport(settings: Settings) -> Transport:
    """SMTP when a URL is configured, else the outbox folder: a new user's safe default."""
    if settings.smtp_url and settings.smtp_url.strip():
        from .smtp import SmtpTransport  # it builds on this module

        return SmtpTransport(settings.smtp_url, timeout=settings.smtp_timeout)
    return OutboxTransport(settings.outbox_dir)
