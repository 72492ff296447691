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
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from nurture.errors import NurtureError
from nurture.render import WireMessage, wire_bytes

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
    """Where finished messages go. A context manager, so that connections get closed."""

    name: str
    #: Work of the caller's to do while a server considers a message, set by the caller:
    #: transports that wait for an answer (SMTP) run it at most once per message, after the
    #: message has gone and before the answer is read. It must not depend on that answer.
    while_waiting: Callable[[], None] | None = None

    @abstractmethod
    def send(self, message: EmailMessage) -> None:
        """Deliver one message, or raise a :class:`DeliveryError` subclass."""

    def announce(self, message: EmailMessage) -> None:  # noqa: B027 (nothing to say ahead)
        """Say that ``message`` is likely to be sent next, so a transport that waits for its
        server can start on it while the caller does other work. Nothing of the message's
        content goes; if the next :meth:`send` is of another message, or none, the
        announcement is simply withdrawn. Never raises."""

    def close(self) -> None:  # noqa: B027 (a transport without connections has nothing to do)
        """Release any connection; the transport may still be used afterwards."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP that remembers whether DATA was issued: past it, a failure is ambiguous.

    It also runs :attr:`Transport.while_waiting` once the message's data has gone, while the
    server considers it (its answer waits in the socket meanwhile).
    """

    data_started = False
    while_waiting: Callable[[], None] | None = None
    announced: tuple[str, tuple[str, ...]] | None = None  # a MAIL sent ahead, its answer unread

    def announce(self, sender: str, size: int) -> None:
        """Send the MAIL command :meth:`smtplib.SMTP.sendmail` will give for a message of
        ``size`` bytes from ``sender``, without reading the server's answer (see
        :meth:`mail`)."""
        options = (f"size={size}",) if self.does_esmtp and self.has_extn("size") else ()
        listed = "".join(f" {option}" for option in options)
        self.putcmd("mail", f"FROM:{smtplib.quoteaddr(sender)}{listed}")  # as smtplib's mail()
        self.announced = (sender, options)

    def mail(self, sender, options=()):  # type: ignore[no-untyped-def]
        """Answer of the announced MAIL if it is this one; otherwise end the announced
        transaction (RSET) and begin this one."""
        if self.announced is not None and self.announced == (sender, tuple(options)):
            self.announced = None
            return self.getreply()
        self.withdraw()
        return super().mail(sender, options)

    def withdraw(self) -> None:
        """Read the answer to an announced MAIL and end its transaction (before another MAIL
        or QUIT)."""
        if self.announced is not None:
            self.announced = None
            if self.getreply()[0] == 250:
                self.rset()

    def data(self, msg):  # type: ignore[no-untyped-def]
        self.data_started = True
        return super().data(msg)

    def send(self, s):  # type: ignore[no-untyped-def]
        super().send(s)
        work = self.while_waiting
        if work is not None and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.while_waiting = None
            try:
                work()
            except Exception:  # noqa: BLE001 - the caller's bug must not cloud this send
                log.exception("work done while waiting for %s failed", self._host)


class _SMTPS(_SMTP, smtplib.SMTP_SSL):
    """Implicit TLS, with the same DATA bookkeeping."""


SMTP_TIMEOUT = 30.0  # seconds; the default of the smtp_timeout setting


class SmtpTransport(Transport):
    """Sends over one SMTP connection, opened on first use and reused for a whole batch.

    ``smtp://[user:password@]host[:port][?starttls=true]`` (port 25) or ``smtps://...`` (465).
    """

    def __init__(self, url: str, *, timeout: float = SMTP_TIMEOUT,
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
        self._smtp: _SMTP | None = None

    def send(self, message: EmailMessage) -> None:
        """Send one message, reconnecting once if the reused connection died in the meantime.

        That is safe only while nothing of this message has reached the server: a dead connection
        shows at MAIL FROM (as a disconnect, or a late 421 "idle timeout"), before DATA. Once DATA
        is issued the server may hold the message, so a failure is Uncertain, never retried.
        """
        if isinstance(message, WireMessage):
            sender, recipients = message.envelope_from, [message.envelope_to]
        else:
            headers = [str(value) for h in ("To", "Cc", "Bcc") for value in message.get_all(h, [])]
            recipients = [address for _, address in getaddresses(headers) if address]
            sender = getaddresses([str(message.get("From", ""))])[0][1]
        if not recipients:
            raise PermanentDeliveryError("message has no recipient")
        data = wire_bytes(message)
        if self._smtp is not None and self._smtp.sock is None:
            self._smtp = None  # smtplib closes the socket itself after a 421
        envelope = (sender, recipients, data)
        if not self._transmit(*envelope, may_be_stale=self._smtp is not None):
            log.info("connection to %s had gone away; reconnecting", self.name)
            self._transmit(*envelope, may_be_stale=False)

    def announce(self, message: EmailMessage) -> None:
        """Send the message's MAIL FROM now, on the open connection, and read the answer in
        the next :meth:`send`: the server considers it while the caller works (the claim of
        the row), one round trip fewer to wait for per email. The caller need not hold the
        message's claim yet: MAIL FROM delivers nothing. A connection that fails here is
        dropped, and the next send opens a new one, as for any stale connection."""
        smtp = self._smtp
        if smtp is None or smtp.sock is None or smtp.announced is not None:
            return
        if isinstance(message, WireMessage):
            sender = message.envelope_from
        else:
            sender = getaddresses([str(message.get("From", ""))])[0][1]
        try:
            smtp.announce(sender, len(wire_bytes(message)))
        except (OSError, smtplib.SMTPException):
            self._abandon()

    def _transmit(self, sender: str, recipients: list[str], data: bytes, *,
                  may_be_stale: bool) -> bool:
        """Send once. False: the reused connection was dead before MAIL FROM got through."""
        recipient = recipients[0]
        smtp = self._smtp = self._smtp or self._connect()
        smtp.data_started, smtp.while_waiting = False, self.while_waiting
        try:
            refused = smtp.sendmail(sender, recipients, data)
        except smtplib.SMTPRecipientsRefused as exc:
            address, (code, text) = next(iter(exc.recipients.items()))
            raise classify_smtp_error(code, text, address) from exc
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code == 421 and may_be_stale:
                self._abandon()
                return False
            error = classify_smtp_error(exc.smtp_code, exc.smtp_error, recipient)
            if isinstance(error, PermanentDeliveryError) and error.kind == "mailbox":
                error.kind = "other"  # a MAIL FROM refusal is about our address, not theirs
            raise error from exc
        except smtplib.SMTPResponseException as exc:  # the server answered: no ambiguity
            raise classify_smtp_error(exc.smtp_code, exc.smtp_error, recipient) from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. a UTF-8 address, server without it
            raise PermanentDeliveryError(str(exc), recipient=recipient) from exc
        except OSError as exc:  # disconnects, resets, timeouts (smtplib's errors are OSErrors)
            self._abandon()
            if smtp.data_started:
                raise UncertainDeliveryError(f"{self.name} went away after DATA: {exc}",
                                             recipient=recipient) from exc
            if may_be_stale:
                return False
            raise TransientDeliveryError(f"{self.name}: {exc}", recipient=recipient) from exc
        if refused:  # others accepted it, so it went out: retrying would duplicate
            log.warning("%s refused %s of %s", self.name, refused, recipients)
        return True

    def _connect(self) -> _SMTP:
        """Open, greet, upgrade and log in. Failures here come before any message data."""
        try:
            return self._open()
        except DeliveryError as exc:
            exc.connecting = True
            raise

    def _open(self) -> _SMTP:
        context = _tls_context() if self.scheme == "smtps" or self.starttls else None
        try:
            if self.scheme == "smtps":
                smtp: _SMTP = _SMTPS(self.host, self.port, self.local_hostname,
                                     timeout=self.timeout, context=context)
            else:
                smtp = _SMTP(self.host, self.port, self.local_hostname, timeout=self.timeout)
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

    def _abandon(self) -> None:
        """Drop a broken connection without the courtesy of QUIT."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.withdraw()
                self._smtp.quit()
            self._abandon()


class OutboxTransport(Transport):
    """Writes each message to ``<directory>/<Message-ID>.eml``: delivery for trying things out.

    The bytes are what SMTP would carry, so a file opens in any mail client. Naming files by
    Message-ID makes a repeated send overwrite rather than duplicate, and temp file + fsync +
    rename means nobody ever reads half a message.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.name = f"outbox folder {self.directory}"

    def send(self, message: EmailMessage) -> None:
        data = wire_bytes(message)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self.directory / _eml_name(message, data))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to {self.name}: {exc}") from exc


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


def open_transport(smtp_url: str | None, outbox_dir: Path, *,
                   timeout: float = SMTP_TIMEOUT) -> Transport:
    """SMTP when a URL is configured, else the outbox folder: a new user's safe default.
    ``timeout`` bounds each wait on the SMTP server (the smtp_timeout setting)."""
    if smtp_url and smtp_url.strip():
        return SmtpTransport(smtp_url, timeout=timeout)
    return OutboxTransport(outbox_dir)
