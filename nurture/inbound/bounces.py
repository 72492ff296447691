"""Delivery reports: is a message a bounce, whose address failed, and is the failure permanent?

Three sources, best first:

1. RFC 3464 ``message/delivery-status`` parts: per-recipient ``Final-Recipient``, ``Action``,
   ``Status`` and ``Diagnostic-Code``, wherever the part sits (some servers wrap it in
   ``multipart/mixed``).
2. Amazon SES / SNS JSON notifications (``notificationType: Bounce``).
3. The plain-text formats of qmail, Exim, old Sendmail, Exchange, Yahoo, DragonFly…: the failed
   recipients come from ``X-Failed-Recipients``, from labelled lines, or from the addresses the
   report's own words name; the SMTP reply and enhanced status codes, and the reason, from the
   text around each recipient.

Mailman's ``flufl.bounce`` detectors were measured as a source for 3 on the 272 sisimai samples:
they changed no result (kind, recipient, status, hard/soft) and raised on 40% of truncated or
corrupted copies of the samples, so they are not used.

*Hard* means the address itself is unreachable for good: user unknown, host or domain unknown,
a domain that accepts no mail (null MX), a mailbox that has moved. Everything else (mailbox full,
blocked, spam, policy, authentication, timeouts, temporary ``4.x.x`` codes…) is soft: it says
something about this message or this moment, not about the address. When the text says why, the
text decides (``550 5.2.1 User unknown`` is hard, ``550 5.1.1 Mailbox full`` is soft); otherwise
the enhanced status code does; otherwise the failure is soft, since a wrongly suppressed contact
is worse than one more counted soft bounce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_string
from email.message import Message
from email.utils import parseaddr

__all__ = ["DeliveryReport", "Failure", "content_type", "judge", "looks_automated_sender",
           "original_message_ids", "part_text", "read_delivery_report", "ses_notification"]


@dataclass(frozen=True)
class Failure:
    """One recipient a delivery report says could not be reached."""

    recipient: str | None
    status: str | None  # enhanced status code, e.g. "5.1.1"
    reason: str  # "userunknown", "mailboxfull", … (see _RULES); "" when nothing says why
    hard: bool


@dataclass(frozen=True)
class DeliveryReport:
    """A message from a mail system about the delivery of one of ours."""

    failures: tuple[Failure, ...]  # empty: the report is about a success (delivered, relayed)
    original_message_ids: tuple[str, ...]  # Message-IDs of the returned message(s)

    @property
    def hard(self) -> bool:
        return any(f.hard for f in self.failures)

    @property
    def main(self) -> Failure | None:
        """The failure to report: the first hard one, else the first one."""
        for failure in self.failures:
            if failure.hard:
                return failure
        return self.failures[0] if self.failures else None


# -- reasons ---------------------------------------------------------------------------------
# Ordered: the first rule whose pattern occurs in the text about a recipient names the reason.
# The soft ones come first, since servers mix their words: "mailbox unavailable: over quota",
# "550 mailbox unavailable, message blocked as spam", "Sender address rejected: Domain not
# found" (our domain, not theirs). They are specific, so that "Recipient address rejected: User
# unknown" is still hard although it says "rejected".

def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


_RULES: list[tuple[str, bool, re.Pattern[str]]] = [
    ("mailboxfull", False, _rx(
        r"mail ?box (is )?(full|over|exceed)", r"mail ?box.{0,30}(is )?full\b", r"quota",
        r"insufficient (disk |system )?(space|storage)", r"not enough (storage|space)",
        r"exceeded (its |the )?storage", r"user is over", r"full mail ?box", r"disk full",
        r"mailfolder is full", r"mail ?box size limit", r"too many messages")),
    ("mesgtoobig", False, _rx(
        r"message (size )?(is )?too (big|large)", r"exceeds? (the )?(maximum|max\w*|size)",
        r"size (limit )?exceed", r"message length exceeds", r"too large")),
    ("suspend", False, _rx(
        r"(account|mail ?box|user|address|recipient)\W+(\w+\W+){0,5}(is |has been )?"
        r"(disabled|suspended|inactive|deactivated|frozen|locked|on hold)",
        r"(disabled|suspended|inactive|deactivated|expired) (account|mail ?box|user|recipient)",
        r"mail ?box (is )?(unavailable|not available) for (receiving|delivery)",
        r"temporar(il)?y (locked|disabled|suspended|blocked)")),
    ("rejected", False, _rx(
        r"sender (address |domain )?(rejected|denied|refused|blocked|invalid|unknown)",
        r"sender verify failed", r"from address (rejected|not allowed)",
        r"after MAIL FROM", r"in reply to MAIL FROM", r"envelope sender",
        r"domain of sender address", r"sender (address |domain )?does not exist",
        r"unknown sender", r"sender's domain")),
    ("blocked", False, _rx(
        r"\bspam", r"black ?list", r"block ?list", r"blocked (using|by|for|due|because)",
        r"(listed|blocked) (at|in|on|by) [\w.]*(spamhaus|spamcop|sorbs|barracuda|dnsbl|rbl)",
        r"reputation", r"relay(ing)? (access )?(denied|not (permitted|allowed))",
        r"(not permitted|unable) to relay", r"virus", r"malware", r"dmarc", r"spf (check )?fail",
        r"dkim", r"ptr record", r"reverse dns", r"rate limit",
        r"too many (connections|recipients)")),
    ("hasmoved", True, _rx(r"has moved", r"address (has )?changed", r"no longer (with|at) ")),
    ("userunknown", True, _rx(
        r"user (is )?unknown", r"unknown (user|recipient|mailbox|local[- ]part|address)",
        r"no such (user|recipient|mailbox|address|account|person)", r"recipient (is )?unknown",
        r"(user|recipient|mail ?box|address|account|e-?mail)\W+(\w+\W+){0,3}"
        r"(does ?n[o']t|did ?not) exist", r"(does ?n[o']t|doesn't) have an? ([\w.-]+ )?account",
        r"invalid (final delivery )?userid",
        r"invalid (recipient|mail ?box|user|address|e-?mail address)",
        r"(mail ?box|recipient|user|address) (was |is )?not found", r"address not found",
        r"not a valid (recipient|mail ?box|user)", r"no mail ?box", r"no (such )?account",
        r"user not (found|exist)", r"not our customer", r"no valid recipients",
        r"account (does not exist|not found|closed|has been (closed|removed|deleted))",
        r"unknown in (local|virtual|relay) recipient table", r"unrout(e)?able address",
        r"bad (destination|recipient) (mailbox|address)", r"mailbox unavailable",
        r"recipient (address )?rejected: (access denied|user)",
        r"recipient address rejected\.? \(in reply to rcpt to command\)",
        r"undeliverable address", r"is not a known user",
        r"not listed in (the )?(public name|domino|directory|address book)",
        r"address (is )?invalid", r"invalid address", r"mailbox not available",
        r"could not be found", r"no such local user", r"addressee unknown")),
    ("hostunknown", True, _rx(
        r"host (or domain name )?(not found|unknown)", r"host [\w.-]+ (not found|unknown)",
        r"unknown host", r"host unknown",
        r"domain (name )?(not found|does not exist|unknown|is not valid)", r"no such domain",
        r"name or service not known", r"unrout(e)?able (mail )?domain", r"domain not found",
        r"illegal host/domain", r"host name lookup failure", r"unknown domain",
        r"no mx (record|host)", r"nxdomain", r"domain (is )?invalid", r"invalid domain",
        r"recipient domain .{0,40}does not exist", r"not a valid domain",
        r"account or domain may not exist",
        r"(couldn't|could not|unable to) find (a |any )?(mail exchanger|host)")),
    ("notaccept", True, _rx(
        r"null mx", r"does not accept (e-?)?mail", r"not accept(ing)? (any )?(e-?)?mail",
        r"accepts no mail", r"no mail (is )?accepted", r"indicated no smtp service",
        r"no mx found")),
]

# What the enhanced status code alone says, when the text says nothing recognisable.
_HARD_STATUS = {"5.1.1": "userunknown", "5.1.2": "hostunknown", "5.1.3": "userunknown",
                "5.1.6": "hasmoved", "5.1.10": "notaccept", "5.3.2": "notaccept",
                "5.7.27": "notaccept"}
_SOFT_STATUS = {"5.2.2": "mailboxfull", "5.2.3": "mesgtoobig", "5.2.1": "suspend",
                "5.2.0": "filtered", "5.7.1": "blocked", "5.4.7": "expired"}


def judge(status: str | None, text: str, context: str = "") -> tuple[str, bool]:
    """The reason and hardness of one failure, from its diagnostic text and status code.

    ``context`` is the text around the diagnostic (the SMTP transcript), read for the command
    the server was answering.
    """
    text = re.sub(r"\s+", " ", text)
    reason = _first_reason(text)
    if reason == "userunknown" and not _trust_user_unknown(status, text, context):
        reason = "filtered"
    hard = reason in _HARD_REASONS
    if status and status.startswith("4."):  # temporary, unless the domain takes no mail at all
        return reason or "temporary", reason == "notaccept"
    if status in _HARD_STATUS and (not reason or hard):
        return _HARD_STATUS[status], True
    if status and _ADDRESS_EXISTS.match(status):
        return (reason if reason and not hard else _SOFT_STATUS.get(status, "filtered")), False
    if reason:
        return reason, hard
    return _SOFT_STATUS.get(status or "", ""), False


def _trust_user_unknown(status: str | None, text: str, context: str) -> bool:
    """Whether "user unknown" words mean the address does not exist.

    Servers check addresses when they answer RCPT TO. The same words said after the message was
    sent (DATA), or with no sign of when, are often a filter's answer: Japanese mobile carriers,
    for one, answer "User unknown" to mail their subscribers' domain filters refuse. Suppressing
    a live contact is worse than one more soft bounce, so the words are believed only with an
    address status code (5.1.x), an RCPT TO answer, or a directory's own wording.
    """
    if (status or "").startswith("5.1."):
        return True
    stage = smtp_stage(text + "\n" + context)
    if stage == "DATA":
        return False
    return stage == "RCPT" or bool(_DIRECTORY.search(text))


_DIRECTORY = _rx(r"recipient name is not recognized", r"invalid (final delivery )?userid",
                 r"recipient ?not ?found by smtp address lookup", r"not present in directory",
                 r"is not a known user", r"no such person at this address")


# RFC 3463 subjects that speak of the mailbox's state (X.2: full, too big; not X.2.1 "disabled",
# which many servers answer for unknown users), of the content (X.6) or of security and policy
# (X.7): the address exists, whatever words surround the code ("User unknown" from a filter).
_ADDRESS_EXISTS = re.compile(r"5\.(2\.[023]|[67]\.\d+)$")
_STAGE = re.compile(
    r"(?P<RCPT>in reply to rcpt to|after rcpt to|>>> rcpt to|rcpt to command|rcpt to:|"
    r"rcpt_to|smtp:rcpt|rejected (the )?(recipient )?address|recipient address rejected)|"
    r"(?P<DATA>end of data|in reply to data|after data|>>> data\s*<<< [45]|final data)|"
    r"(?P<MAIL>in reply to mail from|after mail from|>>> mail from)", re.IGNORECASE)


def smtp_stage(text: str) -> str | None:
    """The SMTP command a transcript says the server answered: "RCPT", "DATA", "MAIL" or None."""
    match = _STAGE.search(re.sub(r"\s+", " ", text))
    return match.lastgroup if match else None


_HARD_REASONS = {reason for reason, hard, _ in _RULES if hard}


def _first_reason(text: str) -> str:
    for reason, _hard, pattern in _RULES:
        if pattern.search(text):
            return reason
    return ""


# -- codes -----------------------------------------------------------------------------------

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_REPLY_AND_ENHANCED = re.compile(r"(?<![\w.])([245]\d\d)[ -]+#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?<![\w.#-])(42[01]|45[0-2]|50[0-4]|55[0-4])(?=[ -]|$)",
                         re.MULTILINE)


def _status_in(text: str) -> str | None:
    """The most specific enhanced status code in ``text``, preferring one beside a reply code."""
    found = [m.group(2) for m in _REPLY_AND_ENHANCED.finditer(text)]
    found += [m.group(0) for m in _ENHANCED.finditer(text) if m.group(1) != "2"]
    specific = [s for s in found if not s.endswith(".0.0")]
    if specific:
        return specific[0]
    if found:
        return found[0]
    reply = _REPLY_CODE.search(text)
    if reply:  # a bare SMTP reply code: 550 → 5.0.0
        return f"{reply.group(1)[0]}.0.0"
    return None


def _best_status(dsn_status: str | None, text: str) -> str | None:
    """A DSN's ``Status`` unless it is the generic x.0.0 and the diagnostic is more specific."""
    from_text = _status_in(text)
    if dsn_status and _ENHANCED.fullmatch(dsn_status):
        if dsn_status.endswith(".0.0") and from_text and from_text[0] == dsn_status[0]:
            return from_text
        return dsn_status
    return from_text


# -- reading messages ------------------------------------------------------------------------

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
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", errors="replace")


def content_type(part: Message) -> str:
    """``part``'s MIME type, even when its Content-Type header is mangled."""
    match = re.match(r"[\w.+-]+/[\w.+-]+", part.get_content_type())
    return match.group(0) if match else "text/plain"


def _walk_report(msg: Message) -> Iterator[Message]:
    """Every part, but not the inside of returned messages (message/rfc822)."""
    yield msg
    if content_type(msg) in ("message/rfc822", "message/delivery-status"):
        return
    if msg.is_multipart():
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from _walk_report(sub)


_ORIGINAL_MARKERS = re.compile("|".join((
    r"^[ \t>-]*-+ ?(this is a copy of|original message|the original message|below this line|"
    r"message headers follow|original mail|returned message|the header of the original)",
    r"^[ \t]*(below is a copy of|original message follows|message headers follow|"
    r"the original message headers|your message reads|-+ ?original message)",
    r"^(received|return-path|dkim-signature|x-received|message-id):",
)), re.IGNORECASE | re.MULTILINE)


def _all_text(msg: Message) -> str:
    """Every text part of a report (the returned message's too, when it was pasted as text)."""
    texts = []
    for part in _walk_report(msg):
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


def _report_text(msg: Message) -> str:
    """The human-readable words of a delivery report, without the returned message."""
    text = _all_text(msg)
    match = _ORIGINAL_MARKERS.search(text)
    return text[: match.start()] if match else text


def _clean_address(value: str) -> str | None:
    value = value.strip()
    if ";" in value:  # "rfc822; user@example.com"
        value = value.split(";", 1)[1]
    address = parseaddr(value.strip())[1] or value.strip().strip("<>")
    address = address.strip().strip("<>").lower()
    return address if "@" in address else None


def _dsn_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    text = part_text(part)  # encoded or otherwise unparsed: split the field groups ourselves
    return [message_from_string(block.strip() + "\n")
            for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if block.strip()]


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


def _from_dsn(msg: Message, report_text: str) -> list[Failure] | None:
    """Failures listed in delivery-status parts; None when there is no such part."""
    parts = [p for p in msg.walk() if content_type(p) == "message/delivery-status"]
    if not parts:
        return None
    failures: list[Failure] = []
    for part in parts:
        for block in _dsn_blocks(part):
            recipient = _clean_address(str(block.get("Final-Recipient")
                                           or block.get("Original-Recipient") or ""))
            action = str(block.get("Action") or "").strip().lower()
            status = str(block.get("Status") or "").strip().split(" ")[0] or None
            if not action and not status:
                continue  # the per-message group (Reporting-MTA, Arrival-Date…)
            if action in ("delivered", "relayed", "expanded") or (
                    not action and status and status.startswith("2.")):
                continue  # a success, not a failure
            diagnostic = re.sub(r"\s+", " ", str(block.get("Diagnostic-Code") or ""))
            diagnostic = diagnostic.split(";", 1)[-1]
            comment = str(block.get("Status") or "").strip()[len(status or ""):]
            if comment.strip(" ()"):  # "5.0.0 (Remote SMTP server has rejected address)"
                diagnostic = f"{diagnostic} {comment}".strip()
            text = diagnostic + "\n" + _around(report_text, recipient)
            best = _best_status(status, diagnostic) or _status_in(text)
            reason, hard = judge(best, diagnostic if _first_reason(diagnostic) else text, text)
            if action == "delayed" and not hard:
                reason = reason or "delayed"
            failures.append(Failure(recipient, best, reason, hard))
    return failures


def _around(text: str, recipient: str | None) -> str:
    """The part of a report's text that speaks about ``recipient`` (all of it when unsure)."""
    if not recipient:
        return text
    at = text.lower().find(recipient)
    if at < 0:
        return text
    rest = text[at + len(recipient):]
    # Up to the next address that is not this recipient, or the end of the paragraph group.
    nxt = re.search(r"^\s*(<|>>> )?(?!" + re.escape(recipient) + r")[\w.+-]+@[\w.-]+",
                    rest, re.MULTILINE | re.IGNORECASE)
    return text[at: at + len(recipient) + (nxt.start() if nxt else len(rest))]


def _from_ses(msg: Message) -> tuple[str, list[Failure]] | None:
    """Amazon SES notifications delivered by SNS email: ("bounce"|"complaint"|"delivery", …)."""
    if msg.is_multipart():
        return None
    body = part_text(msg)
    if '"notificationType"' not in body and '\\"notificationType\\"' not in body:
        return None
    data = ses_notification(body)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    failures = []
    if kind == "bounce":
        bounce = data.get("bounce") or {}
        permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
        for rcpt in bounce.get("bouncedRecipients") or []:
            diagnostic = str(rcpt.get("diagnosticCode") or "")
            status = _best_status(str(rcpt.get("status") or "") or None, diagnostic)
            reason, hard = judge(status, diagnostic)
            if not reason and permanent and str(bounce.get("bounceSubType")) in (
                    "General", "NoEmail"):
                reason, hard = "userunknown", True
            failures.append(Failure(_clean_address(str(rcpt.get("emailAddress") or "")),
                                    status, reason, hard))
    return kind, failures


def ses_notification(body: str) -> dict | None:
    """The Amazon SES notification (bounce, complaint, delivery) an SNS email carries."""
    start = body.find("{")
    end = body.rfind("}")
    if start < 0 or end < start:
        return None
    candidate = body[start:end + 1]
    for text in (candidate, re.sub(r"\r?\n ", "", candidate), re.sub(r"!\r?\n ", "", candidate)):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("Message"), str):  # SNS envelope
            for inner in (data["Message"], re.sub(r"!\n ", "", data["Message"])):
                try:
                    data = json.loads(inner)
                    break
                except ValueError:
                    continue
        if isinstance(data, dict) and ("notificationType" in data or "eventType" in data):
            return data
    return None


# A mail system speaking, not a person: who it is from, what it is called, what it says.
_DAEMON_SENDER = re.compile(
    r"^(mailer-daemon|postmaster|post_master|mail(er)?[-_.]?delivery|mdaemon|"
    r"mail-?daemon|bounces?|nobody|double-bounce|returned)(@|$)|^$", re.IGNORECASE)
_DAEMON_NAME = _rx(r"mail(er)? ?-?(delivery|daemon|deliver)", r"postmaster",
                   r"system administrator", r"mail ?system", r"e-mail interconnect")
_BOUNCE_SUBJECT = _rx(
    r"undeliver", r"undelivered", r"delivery (status notification|failure|has failed|failed|"
    r"notification)", r"returned mail", r"mail delivery (failed|failure|system|error)",
    r"failure notice", r"non[- ]?delivery", r"delivery status", r"could not (be )?deliver",
    r"mail system error", r"error sending your mail", r"returned to sender", r"mail failure",
    r"delivery problem", r"loop alert", r"warning: could not send", r"nondeliverable",
    r"rejected mail", r"unzustellbar", r"non remis", r"no se puede entregar",
    r"errors from", r"message not delivered")
_FAILURE_WORDS = _rx(
    r"could not be delivered", r"couldn't be delivered", r"delivery (to .{0,80})?(has )?failed",
    r"failed permanently", r"permanent (error|failure)", r"undeliverable",
    r"was not delivered", r"delivery has failed", r"unable to deliver", r"user unknown",
    r"error (has )?occurred while attempting to deliver", r"returned to you",
    r"following address(es)? failed", r"did not reach", r"error delivering",
    r"your message .{0,40}(rejected|could not|was not)", r"delivery attempts? .{0,30}failed",
    r"duplicated message-id", r"temporary (failure|error)", r"retry time",
    r"not yet been delivered", r"delivery (is )?delayed")


def looks_automated_sender(msg: Message) -> bool:
    """True when the message comes from a mail system's own address (MAILER-DAEMON, postmaster…)."""
    raw_from = str(msg.get("From") or "")
    name, address = parseaddr(raw_from)
    local = address.strip().lower()
    return bool(_DAEMON_SENDER.search(local) or _DAEMON_NAME.search(name)
                or (not address and _DAEMON_NAME.search(raw_from)))


def read_delivery_report(msg: Message, subject: str) -> DeliveryReport | None:
    """The delivery report ``msg`` is, or None when it is not one."""
    report_type = str(msg.get_param("report-type", "") or "").lower()
    text = _report_text(msg)

    ses = _from_ses(msg)
    if ses is not None:
        kind, failures = ses
        if kind == "bounce":
            return DeliveryReport(tuple(failures), original_message_ids(msg))
        if kind == "delivery":
            return DeliveryReport((), original_message_ids(msg))
        return None  # complaints are read by the caller

    dsn = _from_dsn(msg, text)
    if dsn is not None and (dsn or report_type == "delivery-status"):
        if not dsn and _FAILURE_WORDS.search(text):
            dsn = _from_text(msg, text)[0]  # an empty or broken DSN beside words
        return DeliveryReport(tuple(dsn), original_message_ids(msg, _all_text(msg)))

    # Not a standard report: it must come from a mail system, or be titled like a failure
    # notice, and say it failed. An empty Return-Path alone is no sign: out-of-office notices
    # have one too, and some mention "spam" or "mailbox full".
    daemon = looks_automated_sender(msg)
    by_subject = bool(_BOUNCE_SUBJECT.search(subject)) and not _REPLY_PREFIX.match(subject)
    if not (daemon or by_subject):
        return None
    failures, named = _from_text(msg, text)
    says_failure = bool(_FAILURE_WORDS.search(text) or _first_reason(text)
                        or _SMTP_FAILURE.search(text))
    if not ((daemon and (named or by_subject or says_failure)) or (by_subject and says_failure)):
        return None  # a mail system's notice of something else; a person's "Delivery problem"
    if not failures:  # clearly a failure notice, but no recipient can be read from it
        status = _status_in(text)
        reason, hard = judge(status, text)
        failures = [Failure(None, status, reason, hard)]
    return DeliveryReport(tuple(failures), original_message_ids(msg, _all_text(msg)))


_REPLY_PREFIX = re.compile(r"\s*(re|fwd?|aw|wg|tr|rv)\s*:", re.IGNORECASE)
# An SMTP failure reply: a 4xx/5xx code followed by an enhanced code or words ("550 5.1.1",
# "554-Transaction failed", "550 <x@y>"); only codes servers use, so "555-0142" is a phone number.
_SMTP_FAILURE = re.compile(
    r"(?<![\w.-])(42[01]|45[0-2]|50[0-4]|55[0-4])[ -]+(#?[45]\.\d|[A-Za-z<'(:])")


def _from_text(msg: Message, text: str) -> tuple[list[Failure], bool]:
    """Failures of a non-standard (plain-text) report, and whether a header or a labelled
    field named the recipients (rather than any address found in the text)."""
    candidates = [a for a in (_clean_address(v) for v in
                              ",".join(map(str, msg.get_all("X-Failed-Recipients") or []))
                              .split(",")) if a]
    # Not the report's own addressee (us), not the returned message's sender (us again) nor its
    # Message-ID (which looks like an address); in the order the text names them.
    ours = _own_addresses(msg)
    lowered = text.lower()
    recipients = sorted((a for a in candidates if a not in ours and a in lowered),
                        key=lowered.find)
    if not recipients:
        labelled = (_clean_address(m) for m in _RECIPIENT_LINE.findall(text))
        recipients = list(dict.fromkeys(a for a in labelled if a and a not in ours))
    named = bool(recipients)
    if not recipients:
        recipients = _addresses_in_failure_text(text, ours)
    failures = []
    for recipient in recipients:
        chunk = _around(text, recipient)
        status = _status_in(chunk) or (_status_in(text) if len(recipients) == 1 else None)
        reason, hard = judge(status, chunk, text)
        if not reason and len(recipients) == 1:
            reason, hard = judge(status, text)
        failures.append(Failure(recipient, status, reason, hard))
    return failures, named


def _own_addresses(msg: Message) -> set[str]:
    """Addresses in a report that are the sender's, not a failed recipient's."""
    own = {_clean_address(str(msg.get(h) or "")) for h in ("From", "To", "Return-Path")}
    for part in msg.walk():
        if content_type(part) == "message/rfc822" and part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    own.add(_clean_address(str(sub.get("From") or "")))
    for message_id in original_message_ids(msg):
        own.add(message_id.strip("<>").lower())
    own.discard(None)
    return own  # type: ignore[return-value]


_RECIPIENT_LINE = re.compile(r"^\s*(?:final-recipient|original-recipient|recipient address)"
                             r"\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_SENDER_LABEL = _rx(r"\b(from|sender|reply-to|return-path|envelope-from)\s*:?\s*<?\s*$")


def _addresses_in_failure_text(text: str, ours: set[str]) -> list[str]:
    """Addresses in a report's own words, other than the sender's and mail systems'."""
    found: list[str] = []
    for match in re.finditer(r"[\w.+=-]+@[\w-]+(\.[\w-]+)+", text):
        address = match.group(0).lower().strip(".")
        line = text[text.rfind("\n", 0, match.start()) + 1: match.start()]
        if _SENDER_LABEL.search(line):  # "From: …", "MAIL FROM: …": the sender, not a recipient
            continue
        if address not in ours and address not in found:
            found.append(address)
    return found[:5]
