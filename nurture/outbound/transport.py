"""How a rendered email leaves nurture: over SMTP, or into an outbox folder.

Besides sending, a transport must say exactly what went wrong: *retry later* (Transient), *never
retry* (Permanent; its ``kind`` says if the address is dead) or *nobody can know* (Uncertain),
which a person resolves, because a wrong guess is a duplicate in a referral source's inbox.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import smtplib
import ssl
import tempfile
from abc import ABC, abstractmethod
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

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


_LINE_START_DOT = re.compile(rb"^\.", re.MULTILINE)
_BARE_EOL = re.compile(rb"\r\n|\r|\n")


def _data_lines(data: bytes) -> bytes:
    """The DATA body as RFC 5321 wants it: CRLF line ends, a leading dot doubled, ending in
    CRLF (the terminating ``.`` line is sent by :meth:`_SmtpStaged.commit`)."""
    data = _LINE_START_DOT.sub(b"..", _BARE_EOL.sub(b"\r\n", data))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class SmtpTransport(Transport):
    """Sends over one SMTP connection, opened on first use and reused for a whole batch.

    ``smtp://[user:password@]host[:port][?starttls=true]`` (port 25) or ``smtps://...`` (465).
    The conversation uses smtplib's public commands (``mail``, ``rcpt``, ``docmd``, ``send``,
    ``getreply``) rather than ``sendmail``, so that the closing ``.`` is a step of its own.
    """

    def __init__(self, url: str, *, timeout: float = Settings.smtp_timeout,
                 local_hostname: str | None = None):
        parts = urlsplit(url.strip())
        self.scheme = parts.scheme.lower()
        query = parse_qs(parts.query, keep_blank_values=True)
        starttls = query.pop("starttls", ["false"])[-1].lower()
        try:
            self.port = parts.port or (465 if self.scheme == "smtps" else 25)
        except ValueError:
            raise TransportConfigError("the mail URL's port is not a port number") from None
        if self.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise TransportConfigError("mail URL must look like smtp://host:port or smtps://...")
        bad_option = query or starttls not in ("true", "false")
        if bad_option or (starttls == "true" and self.scheme == "smtps"):
            raise TransportConfigError("the only mail URL option is ?starttls=true, for smtp://")
        self.host, self.starttls = parts.hostname, starttls == "true"
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "")
        self.timeout, self.local_hostname = timeout, local_hostname
        security = "starttls" if self.starttls else "plain"
        security = "implicit tls" if self.scheme == "smtps" else security
        host = f"[{self.host}]" if ":" in self.host else self.host
        as_user = f", user {self.username}" if self.username else ""
        self.name = f"{self.scheme}://{host}:{self.port} ({security}{as_user})"
        self._smtp: smtplib.SMTP | None = None

    def stage(self, message: EmailMessage) -> Staged:
        """MAIL FROM, RCPT TO, DATA and the message, all but the closing ``.``.

        A reused connection that died meanwhile shows at MAIL FROM (a disconnect, or a late
        421 "idle timeout"); then it reconnects once. Any failure here is before the end of the
        data, so nothing was delivered and the error is never Uncertain.
        """
        sender, recipients, data = envelope(message)
        if not recipients:
            raise PermanentDeliveryError("message has no recipient")
        if self._smtp is not None and self._smtp.sock is None:
            self._smtp = None  # smtplib closes the socket itself after a 421
        reused = self._smtp is not None
        smtp = self._smtp = self._smtp or self._connect()
        if not self._mail_from(smtp, sender, len(data), may_be_stale=reused):
            log.info("connection to %s had gone away; reconnecting", self.name)
            smtp = self._smtp = self._connect()
            self._mail_from(smtp, sender, len(data), may_be_stale=False)
        try:
            accepted = self._rcpt_to(smtp, recipients)
            code, text = smtp.docmd("data")
            if code != 354:
                raise classify_smtp_error(code, text, recipients[0])
            smtp.send(_data_lines(data))
        except DeliveryError:
            self._end_transaction()
            raise
        except OSError as exc:  # disconnects, resets, timeouts (smtplib's errors are OSErrors)
            self._abandon()
            raise TransientDeliveryError(f"{self.name}: {exc}", recipient=recipients[0]) from exc
        return _SmtpStaged(self, smtp, accepted)

    def _mail_from(self, smtp: smtplib.SMTP, sender: str, size: int, *,
                   may_be_stale: bool) -> bool:
        """False: the reused connection was dead before MAIL FROM got through."""
        options = [f"size={size}"] if smtp.does_esmtp and smtp.has_extn("size") else []
        try:
            code, text = smtp.mail(sender, options)
        except OSError as exc:
            self._abandon()
            if may_be_stale:
                return False
            raise TransientDeliveryError(f"{self.name}: {exc}") from exc
        if code == 250:
            return True
        if code == 421:
            self._abandon()
            if may_be_stale:
                return False
        else:
            self._end_transaction()
        error = classify_smtp_error(code, text)
        if isinstance(error, PermanentDeliveryError) and error.kind == "mailbox":
            error.kind = "other"  # a MAIL FROM refusal is about our address, not theirs
        raise error

    def _rcpt_to(self, smtp: smtplib.SMTP, recipients: list[str]) -> list[str]:
        """The recipients the server took; the first refusal is raised if it took none."""
        accepted, refused = [], []
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            if code in (250, 251):
                accepted.append(recipient)
            else:
                refused.append(classify_smtp_error(code, text, recipient))
        if not accepted:
            raise refused[0]
        if refused:  # others take it, so it goes out: retrying would duplicate
            log.warning("%s refused %s", self.name, ", ".join(map(str, refused)))
        return accepted

    def _connect(self) -> smtplib.SMTP:
        """Open, greet, upgrade and log in. Failures here come before any message data."""
        try:
            return self._open()
        except DeliveryError as exc:
            exc.connecting = True
            raise

    def _open(self) -> smtplib.SMTP:
        context = _tls_context() if self.scheme == "smtps" or self.starttls else None
        try:
            if self.scheme == "smtps":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, self.local_hostname,
                                                      timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, self.local_hostname,
                                    timeout=self.timeout)
            try:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self._password)
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPResponseException as exc:  # e.g. 421 greeting, 535 bad password
            raise classify_smtp_error(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientDeliveryError(f"{self.name} hung up: {exc}") from exc
        except smtplib.SMTPException as exc:  # no STARTTLS, no usable AUTH: configuration
            raise PermanentDeliveryError(f"{self.name}: {exc}", kind="policy") from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS handshake
            raise TransientDeliveryError(f"cannot connect to {self.name}: {exc}") from exc
        return smtp

    def _end_transaction(self) -> None:
        """RSET after a refusal, so the connection can carry the next message."""
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (OSError, smtplib.SMTPException):
                self._abandon()

    def _abandon(self) -> None:
        """Drop the connection without the courtesy of QUIT: a message whose data never
        ended is discarded by the server."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._abandon()


class _SmtpStaged(Staged):
    def __init__(self, transport: SmtpTransport, smtp: smtplib.SMTP, recipients: list[str]):
        self.transport, self.smtp, self.recipients = transport, smtp, recipients
        self.done = False

    def commit(self) -> None:
        """The closing ``.`` and the server's answer. A connection that dies in between leaves
        the server holding the message or not, and nobody can know which: Uncertain."""
        self.done = True
        try:
            self.smtp.send(b".\r\n")
            code, text = self.smtp.getreply()
        except OSError as exc:
            self.transport._abandon()
            raise UncertainDeliveryError(f"{self.transport.name} went away after the data: "
                                         f"{exc}", recipient=self.recipients[0]) from exc
        if code != 250:  # refused at the end of the data: not delivered
            raise classify_smtp_error(code, text, self.recipients[0])

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.transport._abandon()


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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: making one reads the system's CA certificates
    (about 20 ms, measured in bench/), too slow to repeat for every SMTP connection."""
    return ssl.create_default_context()


def open_transport(settings: Settings) -> Transport:
    """SMTP when a URL is configured, else the outbox folder: a new user's safe default."""
    if settings.smtp_url and settings.smtp_url.strip():
        return SmtpTransport(settings.smtp_url, timeout=settings.smtp_timeout)
    return OutboxTransport(settings.outbox_dir)
