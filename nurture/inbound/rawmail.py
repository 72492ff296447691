"""Reading raw mail: one parser for every place a message enters, and its parts as text.

:func:`parse_raw_message` is the only way nurture turns bytes into a message: the IMAP poller
(through :func:`nurture.inbound.inbox.process_message`), ``nurture inbox classify`` and
:func:`nurture.inbound.classify.classify` all go through it. Some servers and tools hand over
messages
with blank lines before the headers, or as an mbox file whose first line is a ``From `` envelope
line; Python's parser then finds no headers at all (the whole message becomes a body), so both
are stripped first, as other mail libraries do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import parseaddr

__all__ = ["address", "all_text", "content_type", "header_text", "original_message_ids",
           "parse_raw_message", "part_text", "report_text", "strip_envelope", "walk_report"]

# Blank lines (spaces and tabs allowed), then at most one mbox "From " envelope line.
_LEADING = re.compile(rb"\A(?:[ \t]*\r?\n)*(?:From [^\r\n]*\r?\n(?:[ \t]*\r?\n)*)?")


def strip_envelope(data: bytes) -> bytes:
    """``data`` without blank lines before its headers and without an mbox ``From `` line."""
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark some tools write
        data = data[3:]
    match = _LEADING.match(data)
    return data[match.end():] if match and match.end() else data


def parse_raw_message(data: bytes | str) -> Message:
    """The message in ``data`` (RFC 5322 bytes), leading blank lines and mbox line ignored.

    Never raises on malformed input: Python's parser keeps what it can (compat32 policy, which
    leaves undecodable headers as they came).
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return message_from_bytes(strip_envelope(data), policy=policy.compat32)


# -- headers ---------------------------------------------------------------------------------

def header_text(msg: Message, name: str) -> str:
    """A header's value with RFC 2047 words decoded and folding undone; "" when absent."""
    raw = msg.get(name)
    if raw is None:
        return ""
    try:
        if isinstance(raw, Header):  # compat32 wraps raw 8-bit bytes in an "unknown-8bit" Header
            raw = "".join(_eight_bit(chunk) if isinstance(chunk, bytes) else chunk
                          for chunk, _charset in decode_header(raw))
        value = _unescape(str(raw))
    except (HeaderParseError, LookupError, UnicodeError, ValueError, TypeError):
        value = str(raw)
    try:
        text = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError, TypeError):
        text = value  # a broken encoded word: keep it as it came
    return re.sub(r"\s*\r?\n\s*", " ", text).strip()


def _unescape(value: str) -> str:
    """Raw 8-bit header bytes (RFC 6532 UTF-8, or a legacy charset) as text."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return _eight_bit(value.encode("utf-8", "surrogateescape"))


def _eight_bit(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def address(value: str) -> str | None:
    """The lower-case address in a header value (``"Name" <a@b>``, ``rfc822; a@b``), or None."""
    value = value.strip()
    if ";" in value and "<" not in value.split(";", 1)[0]:  # "rfc822; user@example.com"
        value = value.split(";", 1)[1]
    found = parseaddr(value.strip())[1] or value.strip().strip("<>")
    found = found.strip().strip("<>\"'").lower()
    return found if "@" in found else None


# -- parts -----------------------------------------------------------------------------------

def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part; never raises."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - malformed transfer encodings come from the internet
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError):  # unknown or mangled charset names
        return payload.decode("utf-8", errors="replace")


def content_type(part: Message) -> str:
    """``part``'s MIME type, even when its Content-Type header is mangled."""
    match = re.match(r"[\w.+-]+/[\w.+-]+", part.get_content_type())
    return match.group(0) if match else "text/plain"


def walk_report(msg: Message) -> Iterator[Message]:
    """Every part, but not the inside of attached messages (message/rfc822)."""
    yield msg
    if content_type(msg) in ("message/rfc822", "message/delivery-status"):
        return
    if msg.is_multipart():
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from walk_report(sub)


def all_text(msg: Message) -> str:
    """Every text part outside attached messages (a returned message pasted as text included)."""
    texts = []
    for part in walk_report(msg):
        ctype = content_type(part)
        broken = ctype.startswith("multipart/")  # a multipart without a usable boundary
        if part.is_multipart() or (ctype not in ("text/plain", "text/html") and not broken):
            continue
        text = part_text(part)
        if ctype == "text/html":
            text = re.sub(r"(?s)<(style|script).*?</\1>|<[^>]+>", " ", text)
            text = re.sub(r"&nbsp;|&#160;", " ", text)
        texts.append(text)
    return "\n".join(texts)


_ORIGINAL_MARKERS = re.compile("|".join((
    r"^[ \t>-]*-+ ?(this is a copy of|original message|the original message|below this line|"
    r"message headers follow|original mail|returned message|the header of the original|"
    r"start of returned message)",
    r"^[ \t]*(below is a copy of|original message follows|message headers follow|"
    r"the original message headers|your message reads|-+ ?original message|"
    r"a copy of the original message below)",
    r"^(received|return-path|dkim-signature|x-received|message-id):",
)), re.IGNORECASE | re.MULTILINE)


def report_text(msg: Message) -> str:
    """The words of a report itself, without the returned message that follows them."""
    text = all_text(msg)
    match = _ORIGINAL_MARKERS.search(text)
    return text[: match.start()] if match else text


_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "text/rfc822-header")
_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def original_message_ids(msg: Message, text: str = "") -> tuple[str, ...]:
    """Message-IDs of the message(s) a report returns: attached, or quoted in its text."""
    ids: list[str] = []
    for part in msg.walk():
        ctype = content_type(part)
        if ctype == "message/rfc822" and part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message) and sub.get("Message-ID"):
                    ids += re.findall(r"<[^<>\s]+>", str(sub.get("Message-ID")))
        elif ctype in _ORIGINAL_TYPES:
            ids += _MESSAGE_ID.findall(part_text(part))
    if not ids and text:
        ids = _MESSAGE_ID.findall(text)
    return tuple(dict.fromkeys(ids))
