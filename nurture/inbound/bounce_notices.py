"""Failure notices without a standard report: who sends them, how they read, whom they name.

Mobile carriers, older MTAs (qmail, Exim, old Sendmail, Lotus Domino, GroupWise...), webmail
providers and mailing-list software write their failure notices as plain text, in many
languages. Such a message is a notice when it comes from a mail system (``MAILER-DAEMON``,
``postmaster``...) or is titled like one ("Returned mail", "Undeliverable", "Mail", 「配信エラー」),
and its words say a delivery failed. Its failed recipients come from ``X-Failed-Recipients``,
from labelled lines, or from the addresses its own words name; the text about each recipient is
the stretch up to the next recipient's address, so that one's reason never bleeds into another.

Mailing-list software (fml, Mailman, Majordomo, Google Groups, LISTSERV, ezmlm, Sympa) answering
for a list ("you are not a member", "awaits moderator approval") is a refusal too, with or without
``List-Id``: reason ``listrejected``, never hard, since it says nothing about whether the address
works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr

from .bounce_verdict import first_reason, judge, status_in
from .rawmail import address, content_type, header_text, original_message_ids

__all__ = ["BOUNCE_SUBJECT", "FAILURE_WORDS", "Failure", "around", "is_list_answer",
           "is_person_forwarding", "looks_automated_sender", "notice_failures",
           "says_success", "smtp_failure"]


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    """One recipient a delivery report says could not be reached."""

    recipient: str | None
    status: str | None  # enhanced status code, e.g. "5.1.1"
    reason: str  # "userunknown", "mailboxfull", … (see nurture.inbound.bounce_verdict); "" for none
    hard: bool


# A mail system speaking, not a person: who it is from, what it is called, what it says.
_DAEMON_SENDER = re.compile(
    r"^(mailer-daemon|postmaster|post_master|mail(er)?[-_.]?delivery|mdaemon|mail-?daemon|"
    r"bounces?|nobody|double-bounce|returned|mail\.delivery\.system|imss|mail-?admin|mailadm)"
    r"(@|$)|^$", re.IGNORECASE)
_DAEMON_NAME = _rx(r"mail(er)? ?-?(delivery|daemon|deliver)", r"postmaster",
                   r"system administrator", r"mail ?system", r"e-mail interconnect",
                   r"delivery (subsystem|service)", r"mail administrator", r"mailserver$")
BOUNCE_SUBJECT = _rx(
    r"undeliver", r"undelivered", r"delivery (status notification|failure|has failed|failed|"
    r"notification|report)", r"returned mail", r"mail delivery (failed|failure|system|error)",
    r"failure notice", r"non[- ]?delivery", r"delivery status", r"could not (be )?deliver",
    r"mail system error", r"error sending your mail", r"returned to sender", r"mail failure",
    r"delivery problem", r"loop alert", r"warning: could not send", r"nondeliverable",
    r"rejected mail", r"unzustellbar", r"non remis", r"no se puede entregar",
    r"errors from", r"message not delivered", r"^\s*mail\s*$", r"mail not delivered",
    r"failed mail", r"delivery delayed", r"message delayed",
    r"^\s*warning: message .{0,40}delayed", r"^\s*delayed mail", r"failure delivery",
    r"nameserver error report", r"automatically rejected", r"could not be delivered",
    r"配信(不能|エラー|できません|失敗)", r"不達", r"送信(エラー|失敗|できませんでした)",
    r"エラーメール", r"退信", r"无法投递", r"投递失败", r"未能送达", r"не доставлено",
    r"utilisateur non recens", r"échec de (la )?remise", r"não entregue", r"no entregado")
FAILURE_WORDS = _rx(
    r"could not be delivered", r"couldn'?t be delivered", r"cannot be delivered",
    r"could not deliver", r"not be delivered", r"delivery (to .{0,80})?(has )?failed",
    r"failed permanently", r"permanent (error|failure)", r"undeliverable", r"undelivered",
    r"was not delivered", r"delivery has failed", r"unable to deliver", r"user unknown",
    r"error (has )?occurred while attempting to deliver", r"returned to you",
    r"following address(es)? failed", r"did not reach", r"error delivering",
    r"your message .{0,40}(rejected|could not|was not)", r"delivery attempts? .{0,30}failed",
    r"duplicated message-id", r"temporary (failure|error)", r"retry time",
    r"not yet been delivered", r"delivery (is )?delayed", r"has been delayed",
    r"(not|n't) (been )?(able|possible) to deliver", r"was not able to deliver",
    r"message (was )?not delivered", r"not delivered to", r"delivery failed",
    r"could not be reached", r"was automatically rejected", r"failed because",
    r"fatal (delivery )?errors?", r"message not delivered", r"nicht zugestellt",
    r"送達できません|配信できませんでした|届きませんでした|送信できませんでした|配信されませんでした",
    r"宛先不明|存在しません|エラーが発生", r"无法投递|投递失败|退回")
_SUCCESS_WORDS = _rx(
    r"successfully delivered", r"delivered successfully", r"delivery (was )?successful",
    r"has been delivered", r"was delivered to", r"relayed to non-?dsn-?aware",
    r"address (is )?deliverable")

_REPLY_PREFIX = re.compile(r"\s*(re|fwd?|aw|wg|tr|rv|sv|vs|antw|doorst)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"\s*(\[?fwd?|wg|tr|rv|doorst|vs|enc)\s*:", re.IGNORECASE)


def looks_automated_sender(msg: Message) -> bool:
    """True when the message comes from a mail system's own address (MAILER-DAEMON, postmaster…)."""
    raw_from = header_text(msg, "From")
    name, addr = parseaddr(raw_from)
    local = addr.strip().lower().strip('"')
    return bool(_DAEMON_SENDER.search(local) or _DAEMON_NAME.search(name)
                or (not addr and _DAEMON_NAME.search(raw_from)))


def is_person_forwarding(msg: Message, subject: str) -> bool:
    """A person passing a failure notice on ("Fwd: Returned mail"): a reply, not a bounce.

    Whoever forwards a bounce is reachable at the address they write from, and usually says
    something (a new address, a question), so the owner gets it to read; nothing is suppressed.
    """
    return bool(_FORWARD_PREFIX.match(subject)) and not looks_automated_sender(msg)


def smtp_failure(text: str) -> bool:
    """A 4xx/5xx SMTP reply followed by an enhanced code or words ("550 5.1.1", "554-…")."""
    return bool(_SMTP_FAILURE.search(text))


# Only codes servers use, so "555-0142" is a phone number.
_SMTP_FAILURE = re.compile(
    r"(?<![\w.-])(42[01]|45[0-2]|50[0-4]|55[0-4])[ -]+(#?[45]\.\d|[A-Za-z<'(:])")


def says_success(text: str) -> bool:
    """Whether a notice reports a delivery that worked."""
    return bool(_SUCCESS_WORDS.search(text)) and not FAILURE_WORDS.search(text)


# -- mailing-list software -------------------------------------------------------------------
# Headers list software writes on its own notices (a list's posts carry List-Id too, so that
# header alone is no sign: people's answers and newsletters come through lists).
_LIST_HEADERS = ("X-ML-Server", "X-MLServer", "X-ML-Name", "X-Mailman-Version",
                 "X-List-Administrivia", "X-Majordomo", "X-Listserver", "X-LISTSERV-Version",
                 "X-Ezmlm", "X-Sympa-To")
_LIST_SENDER = re.compile(
    r"^(owner-[^@]+|[^@]+-(owner|request|bounces|admin|approval)|majordomo|listserv|listproc|"
    r"mailman|fml|ezmlm|sympa|[^@]+-help)@|@googlegroups\.com$", re.IGNORECASE)
_LIST_WORDS = _rx(
    r"not a member", r"only members", r"moderat(or|ion)",
    r"held for (approval|review)", r"(not|n't) (be )?allowed to post",
    r"permission to post", r"rejected by the list", r"not subscribed",
    r"list (administrator|owner)", r"post(ing)? (to|in) (this|the) (group|list)",
    r"the group you tried to contact", r"die gruppe, die sie kontaktieren", r"google groups",
    r"majordomo", r"results of your email command", r"only (subscribers|members) (can|may)")


_GROUPS = _rx(r"groups\.google\.com", r"google groups", r"google ?グループ", r"google-gruppe")


def is_list_answer(msg: Message, text: str) -> bool:
    """Whether ``msg`` is mailing-list software answering for a list, not a person."""
    sender = address(header_text(msg, "From")) or ""
    listish = (_LIST_SENDER.search(sender) or any(msg.get(h) is not None for h in _LIST_HEADERS)
               or _GROUPS.search(text[:6000]))
    return bool(listish and _LIST_WORDS.search(re.sub(r"\s+", " ", text[:6000])))


# -- failed recipients and the words about each ----------------------------------------------
_RECIPIENT_LINE = re.compile(
    r"^\s*(?:final-recipient|original-recipient|recipient address|recipient|"
    r"undeliverable address)\s*:\s*(.+)$",
    re.IGNORECASE | re.MULTILINE)
_SENDER_LABEL = _rx(r"\b(from|sender|reply-to|return-path|envelope-from|mail from)\s*:?\s*<?\s*$")
_ADDRESS = re.compile(r"[\w.+=-]+@[\w-]+(\.[\w-]+)+")


def notice_failures(msg: Message, text: str) -> tuple[list[Failure], bool]:
    """Failures of a plain-text notice, and whether a header or a labelled field named the
    recipients (rather than any address found in the text)."""
    candidates = [a for a in (address(v) for v in
                              ",".join(map(str, msg.get_all("X-Failed-Recipients") or []))
                              .split(",")) if a]
    # Not the notice's own addressee (us), not the returned message's sender (us again) nor
    # its Message-ID (which looks like an address); in the order the text names them.
    ours = _own_addresses(msg)
    lowered = text.lower()
    recipients = sorted((a for a in candidates if a not in ours and a in lowered),
                        key=lowered.find)
    if not recipients:
        labelled = (address(m) for m in _RECIPIENT_LINE.findall(text))
        recipients = list(dict.fromkeys(a for a in labelled if a and a not in ours))
    named = bool(recipients)
    if not recipients:
        recipients = _addresses_in(text, ours)
    failures = []
    for recipient in recipients:
        chunk = around(text, recipient, recipients)
        status = status_in(chunk) or (status_in(text) if len(recipients) == 1 else None)
        reason, hard = judge(status, chunk, text, recipient)
        if not reason and (len(recipients) == 1 or not named):
            reason, hard = judge(status, text, "", recipient)
        failures.append(Failure(recipient, status, reason, hard))
    return failures, named


def around(text: str, recipient: str | None, others: list[str] | tuple[str, ...] = ()) -> str:
    """The words of a report about ``recipient``: from each place it is named up to the next
    other recipient (or the next line that starts with another address); all the text when it
    is not named."""
    if not recipient:
        return text
    lowered = text.lower()
    starts = []
    at = lowered.find(recipient)
    while at >= 0:
        starts.append(at)
        at = lowered.find(recipient, at + len(recipient))
    if not starts:
        return text
    rivals = [o for o in others if o and o != recipient and recipient not in o]
    pieces = []
    for start in starts:
        rest = lowered[start + len(recipient):]
        ends = [rest.find(o) for o in rivals if rest.find(o) >= 0]
        line = _NEXT_ADDRESS_LINE.search(rest)
        if line and recipient not in line.group(0):
            ends.append(line.start())
        end = min(ends) if ends else len(rest)
        pieces.append(text[start: start + len(recipient) + end])
    return "\n".join(pieces)


_NEXT_ADDRESS_LINE = re.compile(r"^\s*(?:<|>>> |\* |\"|')?[\w.+-]+@[\w.-]+", re.MULTILINE)


def _own_addresses(msg: Message) -> set[str]:
    """Addresses in a report that are the sender's, not a failed recipient's."""
    own = {address(header_text(msg, h)) for h in ("From", "To", "Return-Path")}
    for part in msg.walk():
        if content_type(part) == "message/rfc822" and part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    own.add(address(header_text(sub, "From")))
    for message_id in original_message_ids(msg):
        own.add(message_id.strip("<>").lower())
    own.discard(None)
    return own  # type: ignore[return-value]


def _addresses_in(text: str, ours: set[str]) -> list[str]:
    """Addresses in a notice's own words, other than the sender's and mail systems'."""
    found: list[str] = []
    for match in _ADDRESS.finditer(text):
        addr = match.group(0).lower().strip(".")
        line = text[text.rfind("\n", 0, match.start()) + 1: match.start()]
        if _SENDER_LABEL.search(line):  # "From: …", "MAIL FROM: …": the sender, not a recipient
            continue
        if addr not in ours and addr not in found and not _DAEMON_SENDER.search(addr):
            found.append(addr)
    return found[:5]


def reads_like_failure(text: str) -> bool:
    """Words, a known reason or an SMTP failure reply saying a delivery failed."""
    flat = re.sub(r"\s+", " ", text)
    return bool(FAILURE_WORDS.search(flat) or first_reason(flat) or smtp_failure(text))


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX.match(subject))
