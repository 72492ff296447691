"""Sending over SMTP: one connection per batch, the closing dot a step of its own.

The conversation uses smtplib's public commands (``mail``, ``rcpt``, ``docmd``, ``send``,
``getreply``) rather than ``sendmail``, so that the data and its closing ``.`` are two steps
(:meth:`SmtpTransport.stage` and :meth:`_SmtpStaged.commit`): the send path records between
them that the message may now be delivered.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from ..settings import Settings
from .transport import (
    DeliveryError,
    PermanentDeliveryError,
    Staged,
    TransientDeliveryError,
    Transport,
    TransportConfigError,
    UncertainDeliveryError,
    classify_smtp_error,
    envelope,
)

log = logging.getLogger(__name__)

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
                # The closing dot is a write of its own, after the data and a database commit:
                # without this, Nagle's algorithm holds it until the server acknowledges the
                # data, which a delayed ACK puts off by up to 40 ms per email.
                assert smtp.sock is not None  # connected
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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



@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: making one reads the system's CA certificates
    (about 20 ms, measured in bench/), too slow to repeat for every SMTP connection."""
    return ssl.create_default_context()
