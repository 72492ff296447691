"""The message as it goes on the wire, and its Message-ID.

:func:`build_message` writes the bytes itself (a :class:`WireMessage` carries them): that is
several times cheaper than having the email package parse, fold and serialize every header of
every email, and a test round-trips every shipped email through the email package's parser.
The Message-ID of a touch is derived from what identifies its send (:func:`make_message_id`),
so a retry, a resend and a preview all carry the same one, and replies can be matched to it.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP
from email.quoprimime import body_encode
from email.utils import format_datetime, formataddr
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .render import RenderedEmail, one_line

__all__ = ["WireMessage", "build_message", "is_our_message_id", "make_message_id",
           "wire_bytes"]

def make_message_id(enrollment_id: int, step_id: str, trigger_key: str, secret: str,
                    domain: str) -> str:
    """The Message-ID of a touch, from what identifies its send (the touch's unique key).

    Not from the row's id: a preview of a step not planned yet (``nurture preview``) must carry
    the Message-ID the real send will, and a resend (``nurture resolve --resend``) the one
    already sent, so that a copy that did arrive threads as the same message. The key is
    written out, so two touches never share one; the HMAC makes it unguessable without the
    secret key.
    """
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise ValueError(f"{domain!r} is not a domain a Message-ID can use")
    parts = [str(enrollment_id), step_id, *([trigger_key] if trigger_key else [])]
    if not all(re.fullmatch(r"[A-Za-z0-9-]+", part) for part in parts):
        raise ValueError(f"{parts!r} cannot be written into a Message-ID")
    digest = hmac.new(secret.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()
    return f"<nurture.{'.'.join(parts)}.{digest[:12]}@{domain}>"


_OUR_ID = re.compile(r"<nurture\.([A-Za-z0-9.-]+)\.([0-9a-f]{12})@([A-Za-z0-9.-]+)>")


def is_our_message_id(message_id: str, secret: str, domain: str) -> bool:
    """Whether ``message_id`` was made by :func:`make_message_id` with this secret and domain:
    checked without a database, so a forged or foreign id is never taken for ours."""
    found = _OUR_ID.fullmatch(message_id.strip())
    if found is None or found.group(3).lower() != domain.lower():
        return False
    parts = found.group(1).split(".")
    digest = hmac.new(secret.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest[:12], found.group(2))


def _one_click_url(url: str) -> str:
    """RFC 8058 one-click needs https; plain http is accepted for a local development host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or host.endswith(".localhost") or (
            ipaddress.ip_address(host).is_loopback)
    except ValueError:
        local = False
    if not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise ValueError(f"unsubscribe URL {url!r} must be an https:// URL (RFC 8058)")
    return _ascii_token(url, "unsubscribe URL")


class _VerbatimHeader(UnstructuredHeader):
    """URIs and Message-IDs, folded only between them and never RFC 2047-encoded (the email
    package would encode a token longer than a line, and break List-Unsubscribe or threading).
    The folding lives on the header, so any generator policy keeps it."""

    def fold(self, *, policy: Any) -> str:
        return _fold_words(str(self.name), str(self), policy.linesep)  # type: ignore[attr-defined]


def _fold_words(name: str, value: str, linesep: str = "\r\n") -> str:
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split():
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines, line = [*lines, line], ""
        line += f" {word}"
    return linesep.join([*lines, line]) + linesep


_VERBATIM = ("List-Unsubscribe", "In-Reply-To", "References")
_HEADERS = HeaderRegistry()
for _name in _VERBATIM:
    _HEADERS.map_to_type(_name.lower(), _VerbatimHeader)  # type: ignore[arg-type]
#: SMTP: ``as_bytes()`` is exactly what an SMTP server or an ``.eml`` file receives (CRLF).
_POLICY = SMTP.clone(header_factory=_HEADERS)


def _ascii_token(value: str, what: str, pattern: str = r"[^\s<>,]+") -> str:
    if not (value.isascii() and re.fullmatch(pattern, value)):
        raise ValueError(f"{what} {value!r} is not valid in a header")
    return value


def _msg_id(value: str, what: str) -> str:
    return _ascii_token(value, what, r"<[^\s<>]+>")


class WireMessage(EmailMessage):
    """A composed email that also carries its exact wire bytes and envelope.

    Writing the bytes directly is several times cheaper than having the email package parse,
    fold and serialize every header of every email (measured in ``bench/``). The transports
    send :attr:`wire` as it is; the headers and parts are there for whoever reads the message,
    and serialize back to the same bytes.
    """

    wire: bytes
    envelope_from: str
    envelope_to: str


def wire_bytes(message: EmailMessage) -> bytes:
    """What goes on the wire for ``message``: its own bytes if it was composed here."""
    return message.wire if isinstance(message, WireMessage) else message.as_bytes(policy=_POLICY)


_CRLF = "\r\n"
M = TypeVar("M", bound=EmailMessage)
Headers = list[tuple[str, Any]]  # (name, value folded with CRLF, or a header object)


def _text(value: str) -> str:
    """An unstructured header value: ASCII as it is, anything else RFC 2047-encoded.

    A short printable ASCII value is what the email package would give back anyway (most
    subjects are), without its parsing and folding machinery."""
    if len(value) <= 75 and value.isascii() and value.isprintable():
        return value
    return Header(value).encode(linesep=_CRLF)


def _address(name: str, address: str) -> str:
    if not re.fullmatch(r"[^\s<>]+@[^\s<>@]+", address):
        raise ValueError(f"{address!r} is not an email address")
    if not address.isascii():
        raise ValueError(f"{address!r} would need SMTPUTF8, which nurture does not use")
    return formataddr((one_line(name), address), charset="utf-8")


def _write(headers: Headers) -> str:
    return "".join(value.fold(policy=_POLICY) if isinstance(value, _VerbatimHeader)
                   else f"{name}: {value}{_CRLF}" for name, value in headers)


def _quoted_printable(body: str) -> str:
    """``body`` as UTF-8 quoted-printable (RFC 2045), every line ending in CRLF.

    ``binascii.b2a_qp`` (C) is two to three times faster than the email package's pure-Python
    encoder, but now and then writes a 77-character line where the RFC allows 76; such a body
    is encoded again the slow way.
    """
    data = b"".join(line + b"\r\n" for line in body.encode("utf-8").splitlines())
    fast = binascii.b2a_qp(data, istext=True).decode("ascii")
    if all(len(line) <= 76 for line in fast.split(_CRLF)):
        return fast
    return body_encode(data.replace(b"\r\n", b"\n").decode("latin-1"), 76, eol=_CRLF)


def _part(subtype: str, body: str) -> tuple[EmailMessage, str]:
    """One quoted-printable part, and its text. Lines end in CRLF, the last one too."""
    encoded = _quoted_printable(body)
    headers = [("Content-Type", f'text/{subtype}; charset="utf-8"'),
               ("Content-Transfer-Encoding", "quoted-printable")]
    return _message(EmailMessage, headers, encoded), f"{_write(headers)}{_CRLF}{encoded}"


def _message(cls: type[M], headers: Headers, payload: Any) -> M:
    message = cls(policy=_POLICY)
    for name, value in headers:
        message.set_raw(name, value)
    message.set_payload(payload)
    return message


def build_message(rendered: RenderedEmail, *, from_name: str, from_email: str, to_name: str,
                  to_email: str, message_id: str, date: datetime, unsubscribe_url: str,
                  unsubscribe_mailto: str, reply_to: str | None = None,
                  in_reply_to: str | None = None, references: Sequence[str] = ()) -> WireMessage:
    """The email as it goes on the wire: ``multipart/alternative``, text first, then HTML.

    ``date`` is the caller's clock (never the system's) and must be timezone-aware. The bytes
    use CRLF, non-ASCII names and subjects are RFC 2047-encoded (no server needs SMTPUTF8), and
    both parts are quoted-printable, safe on any relay. Equal input gives equal bytes: the MIME
    boundary is derived from the content (a preview matches the send).
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    unsubscribe = [f"<{_one_click_url(unsubscribe_url)}>"]
    if unsubscribe_mailto:
        mailto = unsubscribe_mailto.removeprefix("mailto:")
        unsubscribe.append(f"<mailto:{_ascii_token(mailto, 'unsubscribe address')}>")
    from_email, to_email = from_email.strip(), to_email.strip()
    headers: Headers = [("From", _address(from_name, from_email)),
                        ("To", _address(to_name, to_email))]
    if reply_to:
        headers.append(("Reply-To", _text(reply_to)))
    headers += [("Subject", _text(one_line(rendered.subject))),
                ("Date", format_datetime(date)),
                ("Message-ID", _msg_id(message_id, "Message-ID"))]
    if in_reply_to:
        headers.append(("In-Reply-To", _HEADERS("In-Reply-To", _msg_id(in_reply_to,
                                                                         "In-Reply-To"))))
    if references:
        headers.append(("References", _HEADERS("References", " ".join(
            _msg_id(ref, "reference") for ref in references))))
    # "=_" never occurs in quoted-printable text, so the boundary cannot clash with a body.
    digest = hashlib.sha256("\0".join([message_id, rendered.subject, rendered.text,
                                        rendered.html]).encode()).hexdigest()
    boundary = f"=_nurture_{digest[:32]}"
    headers += [("List-Unsubscribe", _HEADERS("List-Unsubscribe", ", ".join(unsubscribe))),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                # Exchange may still send out-of-office notices (they pause the contact until
                # the return date) and delivery reports; other automatic replies change
                # nothing here, and RFC 3834 asks responders not to answer mail a program sent.
                ("X-Auto-Response-Suppress", "AutoReply"),
                ("MIME-Version", "1.0"),
                ("Content-Type", f'multipart/alternative;{_CRLF} boundary="{boundary}"')]
    (text, text_wire), (html, html_wire) = _part("plain", rendered.text), _part("html",
                                                                              rendered.html)
    wire = "".join([_write(headers), _CRLF, f"--{boundary}{_CRLF}", text_wire, _CRLF,
                    f"--{boundary}{_CRLF}", html_wire, _CRLF, f"--{boundary}--{_CRLF}"])
    message = _message(WireMessage, headers, [text, html])
    message.wire, message.envelope_from, message.envelope_to = (wire.encode("ascii"),
                                                                from_email, to_email)
    return message
