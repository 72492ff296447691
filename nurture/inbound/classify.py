"""What an incoming email is: a bounce, a complaint, an auto-reply, a person's reply, or other.

:func:`classify` is a pure function of the raw message (read by
:func:`nurture.inbound.rawmail.parse_raw_message`, which ignores blank lines and an mbox ``From ``
line
before the headers) and of ``today``, the anchor for relative return dates. The order of the
checks matters, since the kinds share traits:

1. **complaint** that is structurally one: an RFC 5965 feedback report, a Hotmail/Outlook.com
   JMRP report, an Amazon SES complaint, Apple Mail's one-click unsubscribe;
2. **bounce**: a delivery report about a failure (:mod:`nurture.inbound.bounces`), including
plain-text
   notices and mailing-list software refusing a message; a report whose recipients were all
   delivered, relayed, expanded or found deliverable is ``other``; a person forwarding a bounce
   ("Fwd: Returned mail") is not a report, and goes on to step 5;
3. ``other``: anything else from a mail system's own address (MAILER-DAEMON, postmaster), and
   newsletters and list mail (``List-Unsubscribe``/``List-Id``) that answer no message;
4. automatic mail (:mod:`nurture.inbound.autoreplies`: RFC 3834 and vendor headers, ``Precedence``,
   known responders, no-reply senders, automatic subjects in many languages) is never a reply:
   an out-of-office notice is an **auto_reply** (it pauses the contact), anything else
   automatic is ``other`` (it changes nothing);
5. **reply**: anything else with a sender and some text;
6. ``other``: nothing above, or a message that cannot be read at all.

Every Message-ID the message points to (In-Reply-To, References, and for bounces and complaints
the returned message's own Message-ID) is kept, to match it with the touch it answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from email.message import Message
from email.parser import HeaderParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser

from .autoreplies import is_automatic, is_out_of_office, read_return_date
from .bounces import looks_automated_sender, read_delivery_report, ses_notification
from .rawmail import address, content_type, header_text, original_message_ids, parse_raw_message
from .rawmail import part_text as part_text

__all__ = ["KINDS", "Classification", "classify", "header_text", "reply_text"]

KINDS = ("bounce", "complaint", "auto_reply", "reply", "other")


@dataclass(frozen=True)
class Classification:
    """What one email message is, and what nurture needs to act on it."""

    kind: str  # one of KINDS
    hard: bool | None = None  # bounces: True when the address is unreachable for good
    recipient: str | None = None  # failed / complaining recipient, or the replying sender
    status: str | None = None  # enhanced status code, e.g. "5.1.1"
    # bounces: why ("userunknown", "mailboxfull"…); "sender", "blocked" (policy) and
    # "listrejected" are flagged: about us or a policy, never counted against the address
    reason: str | None = None
    # Message-IDs, angle brackets kept: In-Reply-To, References, and for bounces and complaints
    # the returned message's own; JSON key "message_ids".
    in_reply_to: list[str] = field(default_factory=list)
    return_date: date | None = None  # auto-replies: the day the person is back
    subject: str = ""
    sender: str | None = None  # From address, lower-case
    matched: str | None = None  # the first of ``in_reply_to`` that is one of our Message-IDs

    def as_json(self) -> str:
        """One line of JSON with the keys the CLI prints."""
        return json.dumps({
            "kind": self.kind, "hard": self.hard, "recipient": self.recipient,
            "status": self.status, "reason": self.reason,
            "message_ids": list(self.in_reply_to),
            "return_date": self.return_date.isoformat() if self.return_date else None,
            "subject": self.subject, "sender": self.sender,
            "matched_message_id": self.matched,
        }, ensure_ascii=False)


def classify(raw: bytes | Message, *, today: date | None = None,
             ours: Callable[[str], bool] | None = None) -> Classification:
    """Classify one raw RFC 5322 message (or one :func:`nurture.inbound.rawmail.parse_raw_message`
    parsed). Never raises: what cannot be read is ``other``.

    ``today`` anchors relative return dates in out-of-office notices ("back Monday"); without
    it the message's own Date header is the anchor, and without that no date is read.
    ``ours`` tells our Message-IDs (:func:`nurture.outbound.mime.is_our_message_id`): the first
    cited
    one is the classification's ``matched``.
    """
    found = _classify(raw, today=today)
    if ours is None:
        return found
    return replace(found, matched=next((i for i in found.in_reply_to if ours(i)), None))


def _classify(raw: bytes | Message, *, today: date | None = None, use_dateparser: bool = True
              ) -> Classification:
    """:func:`classify`, with the libraries switchable to measure what each adds."""
    try:
        msg = raw if isinstance(raw, Message) else parse_raw_message(raw)
        subject = header_text(msg, "Subject")
        sender = address(header_text(msg, "From"))
        ids = _message_ids(msg)
    except Exception:  # noqa: BLE001 - unreadable input is "other", never a crash
        return Classification("other")
    try:
        return _decide(msg, subject, sender, ids, today, use_dateparser)
    except Exception:  # noqa: BLE001 - a malformed message must not stop an inbox run
        return Classification("other", in_reply_to=ids, subject=subject, sender=sender)


def _decide(msg: Message, subject: str, sender: str | None, ids: list[str], today: date | None,
            use_dateparser: bool) -> Classification:
    complaint = _read_complaint(msg, sender)
    if complaint is not None:
        recipient, returned = complaint
        return Classification("complaint", recipient=recipient,
                              in_reply_to=_merge(ids, returned), subject=subject, sender=sender)

    report = read_delivery_report(msg, subject)
    if report is not None:
        main = report.main
        if main is None:  # delivered, relayed: nothing failed
            return Classification("other", in_reply_to=_merge(ids, report.original_message_ids),
                                  subject=subject, sender=sender)
        return Classification("bounce", hard=report.hard, recipient=main.recipient,
                              status=main.status, reason=main.reason or None,
                              in_reply_to=_merge(ids, report.original_message_ids),
                              subject=subject, sender=sender)

    if looks_automated_sender(msg) or _mass_mailing(msg, ids):
        return Classification("other", in_reply_to=ids, subject=subject, sender=sender)

    if is_automatic(msg, subject, sender):  # never a person's reply
        notice = "\n".join(_strip_quotes(body_text(msg).split("\n")))  # not our quoted words
        if not is_out_of_office(msg, subject, notice):
            # other automatic mail changes nothing
            return Classification("other", in_reply_to=ids, subject=subject, sender=sender)
        back = read_return_date(notice, today or _date_header(msg), use_dateparser=use_dateparser)
        return Classification("auto_reply", recipient=sender, in_reply_to=ids,
                              return_date=back, subject=subject, sender=sender)

    if sender and (body_text(msg).strip() or subject.strip()):
        return Classification("reply", recipient=sender, in_reply_to=ids, subject=subject,
                              sender=sender)
    return Classification("other", in_reply_to=ids, subject=subject, sender=sender)


def _mass_mailing(msg: Message, ids: list[str]) -> bool:
    """A newsletter or list mail (a contact's own newsletter, say) that answers nothing."""
    return not ids and (msg.get("List-Unsubscribe") is not None or msg.get("List-Id") is not None)


# -- reading messages ------------------------------------------------------------------------

def _message_ids(msg: Message) -> list[str]:
    ids: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in msg.get_all(name) or []:
            ids += re.findall(r"<[^<>\s]+>", str(value))
    return list(dict.fromkeys(ids))


def _merge(ids: list[str], more: tuple[str, ...] | list[str]) -> list[str]:
    return list(dict.fromkeys([*ids, *more]))


def _date_header(msg: Message) -> date | None:
    try:
        return parsedate_to_datetime(str(msg.get("Date"))).date()
    except (TypeError, ValueError, IndexError):
        return None


# -- complaints ------------------------------------------------------------------------------

def _read_complaint(msg: Message, sender: str | None) -> tuple[str | None, list[str]] | None:
    """(complaining recipient, returned Message-IDs) when ``msg`` is a complaint, else None."""
    parts = list(msg.walk())
    feedback = [p for p in parts if content_type(p) == "message/feedback-report"]
    is_arf = str(msg.get_param("report-type", "") or "").lower() == "feedback-report"
    if feedback or is_arf:
        fields = _feedback_fields(feedback[0]) if feedback else Message()
        recipient = address(str(fields.get("Original-Rcpt-To") or "")) \
            or address(str(fields.get("Removal-Recipient") or "")) \
            or _returned_header(parts, "X-HmXmrOriginalRecipient") \
            or _returned_header(parts, "To")
        return recipient, list(original_message_ids(msg))
    jmrp = _returned_header(parts, "X-HmXmrOriginalRecipient")
    if jmrp:  # Outlook.com's junk-mail report: the original message with this header
        return jmrp, list(original_message_ids(msg))
    if str(msg.get("X-Apple-Unsubscribe") or "").strip().lower() == "true":
        return sender, []
    if not msg.is_multipart() and '"notificationType"' in part_text(msg)[:5000]:
        data = ses_notification(part_text(msg))
        if data and str(data.get("notificationType", "")).lower() == "complaint":
            people = (data.get("complaint") or {}).get("complainedRecipients") or [{}]
            return address(str(people[0].get("emailAddress") or "")), []
    return None


def _feedback_fields(part: Message) -> Message:
    """The fields of a message/feedback-report part (parsed as a sub-message, or as text)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return HeaderParser().parsestr(part_text(part).strip() + "\n")


def _returned_header(parts: list[Message], name: str) -> str | None:
    """An address from header ``name`` of a returned message (message/rfc822 or headers)."""
    for part in parts:
        ctype = content_type(part)
        if ctype == "message/rfc822" and part.is_multipart():
            for sub in part.get_payload():
                found = address(header_text(sub, name)) if isinstance(sub, Message) else None
                if found:
                    return found
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            found = address(header_text(HeaderParser().parsestr(part_text(part)), name))
            if found:
                return found
    return None


# -- the text of a reply ---------------------------------------------------------------------

def body_text(msg: Message) -> str:
    """The message's main text: its first inline text/plain part, else its HTML as text."""
    html = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if disposition == "attachment":
            continue
        ctype = content_type(part)
        if ctype == "text/plain":
            return part_text(part)
        if ctype == "text/html" and html is None:
            html = part_text(part)
    return html_to_text(html) if html is not None else ""


class _HTMLText(HTMLParser):
    """HTML to plain text, without scripts, styles and quoted history (blockquotes, Gmail
    quotes, Outlook's reply header block); a line where the quoted history began."""

    _SKIP = {"script", "style", "head", "title"}
    _BREAKS = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "blockquote"}
    _QUOTE_MARKS = ("gmail_quote", "divrplyfwdmsg", "appendonsend", "moz-cite-prefix",
                    "yahoo_quoted", "protonmail_quote", "zmail_extra")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0  # depth inside an element whose text is dropped
        self.quoted = False  # the quoted history has begun: drop everything after

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        marks = " ".join(v or "" for k, v in attrs if k in ("class", "id")).lower()
        if tag == "blockquote" or tag == "hr" or any(m in marks for m in self._QUOTE_MARKS):
            self.quoted = True
        if tag in self._SKIP:
            self.skipping += 1
        if tag in self._BREAKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skipping:
            self.skipping -= 1
        if tag in self._BREAKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping and not self.quoted:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body, up to where its quoted history begins."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; be sure anyway
        return re.sub(r"<[^>]+>", " ", html)
    text = "".join(parser.out).replace("\xa0", " ")
    return re.sub(r"\n[ \t]*(\n[ \t]*)+", "\n\n", text).strip()


_LANGUAGES = ["en", "de", "fr", "es"]
_MAX_LINES = 20

# What mail clients put between a reply and the message it answers, and under a reply.
_QUOTE_START = re.compile(
    r"^(>|-{2,} ?original message ?-{2,}|-{5,} ?forwarded message|_{10,}|"
    r"(from|von|de|van) ?: .+|"
    r"on .{5,120} wrote:?|.{0,120}\bwrote:$|le .{5,120} a écrit ?:|el .{5,120} escribió:?|"
    r"am .{5,120} schrieb .{0,80}|.{0,120} schrieb:?$|\S+ escribió:$)",
    re.IGNORECASE)
_SIGNOFF = re.compile(
    r"^(sent from my \w+|sent from (outlook|yahoo|mail) for|get outlook for \w+|"
    r"enviado desde mi|envoyé de mon|von meinem \w+ gesendet|gesendet von)",
    re.IGNORECASE)


def reply_text(raw: bytes | Message) -> str:
    """The new words of a reply, without quoted history and signatures: at most 20 lines.

    For the owner's notification: what the person wrote, not what we sent them.
    """
    return _reply_text(raw)


def _reply_text(raw: bytes | Message, *, use_library: bool = True) -> str:
    try:
        msg = raw if isinstance(raw, Message) else parse_raw_message(raw)
        text = body_text(msg).replace("\r\n", "\n").replace("\ufeff", "")
    except Exception:  # noqa: BLE001 - unreadable input has no text
        return ""
    latest = None
    if use_library:
        from mailparser_reply import EmailReplyParser

        try:
            latest = EmailReplyParser(languages=_LANGUAGES).parse_reply(text)
        except Exception:  # noqa: BLE001 - a third-party parser choking is not fatal
            latest = None
    lines = _strip_quotes((latest if latest is not None else text).split("\n"))
    return "\n".join(lines[:_MAX_LINES]).strip()


def _strip_quotes(lines: list[str]) -> list[str]:
    """Lines up to the quoted history or a mobile sign-off, trailing blanks dropped."""
    kept: list[str] = []
    for line in lines:
        stripped = line.strip()
        if _QUOTE_START.match(stripped) or _SIGNOFF.match(stripped) or stripped == "--":
            break
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return kept
