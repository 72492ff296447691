"""Delivery reports: is a message a bounce, whose address failed, and is the failure permanent?

Three sources, best first:

1. RFC 3464 ``message/delivery-status`` parts: per-recipient ``Final-Recipient``, ``Action``,
   ``Status`` and ``Diagnostic-Code``, wherever the part sits (some servers wrap it in
   ``multipart/mixed``, or in a message/rfc822 wrapper).
2. Amazon SES / SNS JSON notifications (``notificationType: Bounce``).
3. Plain-text notices (:mod:`nurture.bounce_notices`), and a delivery-status report that has no
   per-recipient block, read by its words.

A report whose recipients were all delivered, relayed, expanded or found deliverable (``Action``,
or a ``2.x.x`` status), such as an address-verification report, is no bounce: it has no failures
and never counts against a contact. A person forwarding a bounce ("Fwd: Returned mail") is not a
report either: see :func:`nurture.bounce_notices.is_person_forwarding`.

Whether each failure is hard or soft is :func:`nurture.bounce_verdict.judge`'s call. Each
recipient of a multi-recipient report gets its own verdict, from the words about it alone.

Mailman's ``flufl.bounce`` detectors were measured as a source for 3 on the 272 sisimai samples:
they changed no result (kind, recipient, status, hard/soft) and raised on 40% of truncated or
corrupted copies of the samples, so they are not used (its test messages are in the corpus).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email import message_from_string
from email.message import Message
from typing import Any

from .bounce_notices import (
    BOUNCE_SUBJECT,
    Failure,
    around,
    is_list_answer,
    is_person_forwarding,
    is_reply_subject,
    looks_automated_sender,
    notice_failures,
    reads_like_failure,
    says_success,
)
from .bounce_verdict import FLAGGED, best_status, first_reason, judge, status_in
from .rawmail import (
    address,
    all_text,
    content_type,
    original_message_ids,
    part_text,
    report_text,
)

__all__ = ["FLAGGED", "DeliveryReport", "Failure", "judge", "looks_automated_sender",
           "read_delivery_report", "ses_notification"]


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


def read_delivery_report(msg: Message, subject: str) -> DeliveryReport | None:
    """The delivery report ``msg`` is, or None when it is not one."""
    if is_person_forwarding(msg, subject):
        return None
    report_type = str(msg.get_param("report-type", "") or "").lower()
    text = report_text(msg)

    ses = _from_ses(msg)
    if ses is not None:
        kind, failures = ses
        if kind == "bounce":
            return DeliveryReport(tuple(failures), original_message_ids(msg))
        if kind == "delivery":
            return DeliveryReport((), original_message_ids(msg))
        return None  # complaints are read by the caller

    ids = original_message_ids(msg, all_text(msg))
    dsn = _from_dsn(msg, text)
    if dsn is not None:
        failures, successes = dsn
        if failures:
            return DeliveryReport(tuple(failures), ids)
        if successes:
            return DeliveryReport((), ids)  # delivered, relayed, expanded, deliverable
    dsn_shaped = dsn is not None or report_type == "delivery-status"

    # No per-recipient verdict: the words decide. A notice must come from a mail system, be
    # titled like a failure notice, carry a delivery-status part, or be mailing-list software,
    # and say it failed. An empty Return-Path alone is no sign: out-of-office notices have one
    # too, and some mention "spam" or "mailbox full".
    daemon = looks_automated_sender(msg)
    by_subject = bool(BOUNCE_SUBJECT.search(subject)) and not is_reply_subject(subject)
    if is_list_answer(msg, text) and (daemon or not is_reply_subject(subject)):
        failures, _named = notice_failures(msg, text)
        failures = [Failure(f.recipient, f.status, "listrejected", False) for f in failures]
        return DeliveryReport(tuple(failures or [Failure(None, None, "listrejected", False)]),
                              ids)
    if not (daemon or by_subject or dsn_shaped):
        return None
    if says_success(text):
        return DeliveryReport((), ids) if dsn_shaped or daemon else None
    failures, named = notice_failures(msg, text)
    says_failure = reads_like_failure(text)
    if not (daemon and (named or by_subject or says_failure)
            or says_failure and (by_subject or dsn_shaped)):
        return None  # a mail system's notice of something else; a person's "Delivery problem"
    if not failures:  # clearly a failure notice, but no recipient can be read from it
        status = status_in(text)
        reason, hard = judge(status, text)
        failures = [Failure(None, status, reason, hard)]
    return DeliveryReport(tuple(failures), ids)


# -- RFC 3464 delivery-status parts ----------------------------------------------------------
_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded", "deliverable")


def _dsn_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    text = part_text(part)  # encoded or otherwise unparsed: split the field groups ourselves
    return [message_from_string(block.strip() + "\n")
            for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if block.strip()]


def _from_dsn(msg: Message, text: str) -> tuple[list[Failure], int] | None:
    """(failures, number of successes) in the delivery-status parts; None without such a part."""
    parts = [p for p in msg.walk() if content_type(p) == "message/delivery-status"]
    if not parts:
        return None
    blocks = []
    for part in parts:
        for block in _dsn_blocks(part):
            recipient = address(str(block.get("Final-Recipient")
                                    or block.get("Original-Recipient") or ""))
            action = str(block.get("Action") or "").strip().lower().split(" ")[0]
            status = str(block.get("Status") or "").strip().split(" ")[0] or None
            if action or status:  # not the per-message group (Reporting-MTA, Arrival-Date…)
                blocks.append((block, recipient, action, status))
    recipients = [b[1] for b in blocks if b[1]]
    failures: list[Failure] = []
    successes = 0
    for block, recipient, action, status in blocks:
        if action in _SUCCESS_ACTIONS or (status or "").startswith("2."):
            successes += 1
            continue
        diagnostic = re.sub(r"\s+", " ", str(block.get("Diagnostic-Code") or ""))
        diagnostic = diagnostic.split(";", 1)[-1]
        comment = str(block.get("Status") or "").strip()[len(status or ""):]
        if comment.strip(" ()"):  # "5.0.0 (Remote SMTP server has rejected address)"
            diagnostic = f"{diagnostic} {comment}".strip()
        words = diagnostic + "\n" + around(text, recipient, recipients)
        best = best_status(status, diagnostic) or status_in(words)
        reason, hard = judge(best, diagnostic if first_reason(diagnostic) else words, words,
                             recipient)
        if action == "delayed" and not hard:
            reason = reason or "delayed"
        failures.append(Failure(recipient, best, reason, hard))
    if failures and all(f.recipient is None and not f.reason for f in failures):
        named, _ = notice_failures(msg, text)  # a bare block ("Status: 5.0.0"): words say more
        failures = named or failures
    return failures, successes


# -- Amazon SES ------------------------------------------------------------------------------
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
            status = best_status(str(rcpt.get("status") or "") or None, diagnostic)
            reason, hard = judge(status, diagnostic)
            if not reason and permanent and str(bounce.get("bounceSubType")) in (
                    "General", "NoEmail"):
                reason, hard = "userunknown", True
            failures.append(Failure(address(str(rcpt.get("emailAddress") or "")),
                                    status, reason, hard))
    return kind, failures


def ses_notification(body: str) -> dict[str, Any] | None:
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
