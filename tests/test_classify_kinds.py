"""Each kind of mail issue 17 names, through the public classifier
(nurture.inbound.classify.classify) and the delivery-report reader
(nurture.inbound.bounces.read_delivery_report) for per-recipient verdicts. The messages are
written out here, each shaped like the real ones in tests/mail-samples."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.cli.inbox import inbox
from nurture.inbound.bounces import judge, read_delivery_report
from nurture.inbound.classify import classify, reply_text
from nurture.inbound.rawmail import parse_raw_message

SAMPLES = Path(__file__).parent / "mail-samples"
TOUCH = "<nurture.42.abc123def456@riverapt.example>"
REPLY = (b"From: Sam Chen <sam@clinic.example>\r\nTo: dana@riverapt.example\r\n"
         b"Subject: Re: Hello\r\nMessage-ID: <r1@clinic.example>\r\n"
         b"In-Reply-To: " + TOUCH.encode() + b"\r\n\r\nThursday works for me.\r\n")


def mail(head: str, body: str) -> bytes:
    return (head.strip() + "\n\n" + body.lstrip("\n")).encode("utf-8")


# -- raw bytes before the headers ------------------------------------------------------------

@pytest.mark.parametrize("prefix", [b"\r\n", b"\n\n\n", b" \r\n\t\r\n", b"\xef\xbb\xbf",
                                    b"From sam@clinic.example  Thu Mar  5 09:00:00 2026\n",
                                    b"\r\nFrom MAILER-DAEMON Thu Mar  5 09:00:00 2026\r\n\r\n"])
def test_blank_lines_and_an_mbox_line_before_the_headers_are_ignored(prefix: bytes) -> None:
    found = classify(prefix + REPLY)
    assert (found.kind, found.sender, found.in_reply_to) == ("reply", "sam@clinic.example",
                                                             [TOUCH])
    assert reply_text(prefix + REPLY) == "Thursday works for me."
    assert parse_raw_message(prefix + REPLY)["Message-ID"] == "<r1@clinic.example>"


def test_the_cli_reads_a_file_that_starts_with_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "reply.eml"
    path.write_bytes(b"\r\n\r\n" + REPLY)
    result = CliRunner().invoke(inbox, ["classify", str(path)])
    assert result.exit_code == 0, result.output
    assert '"kind": "reply"' in result.output and '"sam@clinic.example"' in result.output


def test_a_bounce_in_an_mbox_file_is_still_a_bounce() -> None:
    raw = (SAMPLES / "sisimai" / "lhost-postfix-13.eml").read_bytes()
    found = classify(b"From MAILER-DAEMON  Fri Feb 13 02:47:48 2015\n" + raw)
    assert (found.kind, found.hard) == ("bounce", True)


# -- delivery reports that report success ----------------------------------------------------

DSN_HEAD = """From: Mail Delivery System <MAILER-DAEMON@mx.clinic.example>
To: dana@riverapt.example
Subject: {subject}
Content-Type: multipart/report; report-type=delivery-status; boundary="b"
"""


def dsn(per_recipient: str, words: str = "Delivery report.", subject: str = "Delivery report"
        ) -> bytes:
    return mail(DSN_HEAD.format(subject=subject),
                f"--b\nContent-Type: text/plain\n\n{words}\n\n--b\n"
                f"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.clinic.example\n"
                f"\n{per_recipient}\n--b--\n")


@pytest.mark.parametrize("block", [
    "Final-Recipient: rfc822; sam@clinic.example\nAction: delivered\nStatus: 2.0.0",
    "Final-Recipient: rfc822; sam@clinic.example\nAction: relayed\nStatus: 2.0.0",
    "Final-Recipient: rfc822; list@clinic.example\nAction: expanded\nStatus: 2.0.0",
    "Final-Recipient: rfc822; sam@clinic.example\nAction: deliverable\nStatus: 2.1.5",
    "Final-Recipient: rfc822; sam@clinic.example\nStatus: 2.1.5",  # an address verification
])
def test_a_report_of_success_is_not_a_bounce(block: str) -> None:
    raw = dsn(block, "Your message was successfully delivered.", "Delivery Status Notification")
    assert classify(raw).kind == "other"
    report = read_delivery_report(parse_raw_message(raw), "Delivery Status Notification")
    assert report is not None and report.failures == ()


def test_a_report_with_no_per_recipient_block_is_read_by_its_words() -> None:
    raw = dsn("", "Delivery to the following recipient failed permanently:\n\n"
                  "  sam@clinic.example\n\n550 5.1.1 The email account that you tried to reach "
                  "does not exist.", "Delivery Status Notification (Failure)")
    found = classify(raw)
    assert (found.kind, found.recipient, found.status, found.hard) == (
        "bounce", "sam@clinic.example", "5.1.1", True)


# -- failure notices without a delivery-status part ------------------------------------------

@pytest.mark.parametrize(("head", "body", "hard"), [
    ("From: postmaster@mail.clinic.example\nSubject: Mail",  # a carrier's bare notice
     "Your mail to <sam@clinic.example> could not\n   be delivered:\n"
     "the user\n unknown.", True),
    ("From: no-reply@mx.clinic.example\nSubject: Returned mail",
     "Message could not be delivered to sam@clinic.example.\nReason: mailbox full", False),
    ("From: MAILER-DAEMON@clinic.example\nSubject: Undeliverable",
     "Delivery has failed to these recipients:\n\n\"sam@clinic.example\"\n"
     "Remote server returned 550 5.1.10 RESOLVER.ADR.RecipientNotFound", True),
    ("From: postmaster@docomo.example\nSubject: =?UTF-8?B?44Oh44O844Or6YWN5L+h44Ko44Op44O8?=",
     "次のアドレスへのメールは配信できませんでした。\n<sam@clinic.example>\n宛先不明です。", True),
    ("From: MAILER-DAEMON@mx.clinic.example\nSubject: 退信",
     "您的邮件无法投递。\n<sam@clinic.example>:\n邮箱已满", False),
])
def test_plain_text_notices(head: str, body: str, hard: bool) -> None:
    found = classify(mail(head, body))
    assert (found.kind, found.recipient, found.hard) == ("bounce", "sam@clinic.example", hard)


def test_mailing_list_software_answering_for_a_list_is_a_soft_refusal() -> None:
    notices = [  # fml, Mailman, Majordomo, Google Groups; none with List-Id
        ("From: neko-admin@lists.example\nX-MLServer: fml [fml 4.0.3 release]\n"
         "Subject: rejected: you are not a member (neko ML)",
         "You are not a member of this mailing list <neko@lists.example>."),
        ("From: gpc-talk-bounces@lists.example\nX-Mailman-Version: 2.1.5\n"
         "Subject: Your post to pt-news needs approval",
         "Your post to pt-news requires the approval of a list moderator.\n"
         "Only members can post without approval."),
        ("From: Majordomo@lists.example\nSubject: Majordomo results",
         "**** The following command was not processed: you are not a member of list pt-news"),
        ("From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
         "Subject: Delivery Status Notification (Failure)",
         "We're writing to let you know that the group you tried to contact (pt-news) may not "
         "exist, or you may not have permission to post messages to the group.\n"
         "Visit https://groups.google.com/support/"),
    ]
    for head, body in notices:
        found = classify(mail(head + f"\nIn-Reply-To: {TOUCH}", body))
        assert (found.kind, found.hard, found.reason) == ("bounce", False, "listrejected"), head


def test_a_person_forwarding_a_bounce_is_a_reply_and_suppresses_nobody() -> None:
    """Whoever forwards a bounce ("Fwd: Returned mail") wrote to us from an address that works,
    usually to say something: the owner reads it; no address is bounced."""
    attached = (SAMPLES / "sisimai" / "lhost-postfix-13.eml").read_text(encoding="latin-1")
    raw = mail("From: Sam Chen <sam@clinic.example>\nTo: dana@riverapt.example\n"
               "Subject: Fwd: Returned mail: see transcript for details\n"
               'Content-Type: multipart/mixed; boundary="f"',
               "--f\nContent-Type: text/plain\n\nDana, my old address bounced you. Use this one."
               "\n\n--f\nContent-Type: message/rfc822\n\n" + attached + "\n--f--\n")
    found = classify(raw)
    assert (found.kind, found.sender, found.hard) == ("reply", "sam@clinic.example", None)
    assert "Use this one." in reply_text(raw)


# -- automatic mail --------------------------------------------------------------------------

PERSON = f"From: Pat Lee <pat@clinic.example>\nIn-Reply-To: {TOUCH}\n"


@pytest.mark.parametrize(("head", "body"), [
    ("Precedence: bulk\nSubject: Re: Hello", "Thank you for your message. Ticket #4411 opened."),
    ("Precedence: junk\nSubject: Re: Hello", "Your message has been received."),
    ("Precedence: list\nSubject: Re: Hello", "Thanks, we have received your request."),
    ("X-Autorespond: yes\nSubject: Re: Hello", "Thank you for contacting us."),
    ("X-Mailer: Zendesk Mailer\nSubject: [Request received] Hello", "We will get back soon."),
    ("Subject: [AUTO GENERATED] Your request", "This mailbox is not monitored."),
])
def test_automatic_mail_is_never_a_reply_and_changes_nothing(head: str, body: str) -> None:
    assert classify(mail(PERSON + head, body)).kind == "other"


@pytest.mark.parametrize(("head", "body"), [
    ("X-Autoreply: yes\nSubject: Re: Hello", "I am on vacation until March 16."),
    ("Subject: Auto: Hello", "I am out of the office until Monday."),
    ("Subject: 自動返信: こんにちは", "3月16日まで不在にしております。"),
    ("Subject: 自动回复: 您好", "我正在休假，3月16日回来。"),
    ("Subject: Automatische Antwort: Hallo", "Ich bin bis 13.03. nicht im Büro."),
    ("Precedence: bulk\nSubject: Re: Hello", "I'm away on annual leave, back on 16 March."),
])
def test_out_of_office_notices_are_auto_replies(head: str, body: str) -> None:
    assert classify(mail(PERSON + head, body), today=date(2026, 3, 4)).kind == "auto_reply"


def test_a_no_reply_sender_is_never_a_reply() -> None:
    raw = mail(f"From: Clinic <no-reply@clinic.example>\nIn-Reply-To: {TOUCH}\n"
               "Subject: Re: Hello", "Please use our contact form.")
    assert classify(raw).kind == "other"


# -- hard or soft, in order ------------------------------------------------------------------

@pytest.mark.parametrize(("status", "text", "verdict"), [
    ("5.1.1", "550 5.1.1 <sam@clinic.example>: Recipient address rejected", ("userunknown", True)),
    ("4.2.2", "452 4.2.2 Mailbox full", ("mailboxfull", False)),
    ("4.1.1", "450 4.1.1 <sam@clinic.example>: User unknown in local recipient table",
     ("userunknown", True)),  # 4.x.x, but the words leave no doubt
    ("4.4.1", "Connection timed out", ("temporary", False)),
    ("5.2.2", "552 5.2.2 The email account that you tried to reach is over quota",
     ("mailboxfull", False)),
    ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", ("blocked", False)),
    ("5.7.1", "554 5.7.1 <sam@clinic.example>: Recipient address rejected: Access denied",
     ("blocked", False)),
    (None, "Name service error for name=clinic.example type=MX: Host not found, try again",
     ("dnstemporary", False)),
    ("5.1.1", "550 5.1.1 <dana@riverapt.example>: Sender address rejected: Domain not found",
     ("sender", False)),  # our address: never the recipient's fault
    ("5.0.0", "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
     ("sender", False)),
    ("5.0.0", "550 Requested action not taken (in reply to RCPT TO command)", ("rejected", True)),
    ("5.3.0", "554 5.3.0 Mailer error (in reply to RCPT TO command)", ("", False)),
    (None, "550 Unrouteable address", ("userunknown", True)),
    (None, "This user doesn't have a clinic.example account", ("userunknown", True)),
    (None, "550 mailbox unavailable", ("userunknown", True)),
    (None, "550 Invalid recipient <sam@clinic.example>", ("userunknown", True)),
])
def test_the_evidence_is_read_in_order(status: str | None, text: str,
                                       verdict: tuple[str, bool]) -> None:
    assert judge(status, text) == verdict


def test_each_recipient_of_a_report_gets_its_own_verdict() -> None:
    raw = mail("From: MAILER-DAEMON@mx.clinic.example\nSubject: Undelivered Mail Returned to "
               "Sender",
               "The following addresses failed:\n\n"
               '"sam@clinic.example": 550 5.1.1 User unknown (in reply to RCPT TO command)\n'
               "<pat@clinic.example>: 552 5.2.2 Mailbox full\n"
               "lee@clinic.example: 450 4.4.1 Connection timed out, will retry\n")
    report = read_delivery_report(parse_raw_message(raw), "Undelivered Mail Returned to Sender")
    assert report is not None
    got = {f.recipient: (f.status, f.hard) for f in report.failures}
    assert got == {"sam@clinic.example": ("5.1.1", True), "pat@clinic.example": ("5.2.2", False),
                   "lee@clinic.example": ("4.4.1", False)}
    found = classify(raw)
    assert (found.recipient, found.hard, found.reason) == ("sam@clinic.example", True,
                                                           "userunknown")


def test_x_auto_response_suppress_alone_is_not_an_auto_reply() -> None:
    """Exchange puts it on ordinary mail too (colleague.eml has it); it counts only in pairs."""
    head = b"From: Pat <pat@x.example>\nSubject: Re: Hello\nX-Auto-Response-Suppress: All\n"
    assert classify(head + b"\nSure, Tuesday works.\n").kind == "reply"
    assert classify(head + b"Return-Path: <>\n\nI am away.\n").kind == "auto_reply"


def test_out_of_office_with_bounce_words_is_not_a_bounce() -> None:
    """Exchange sends out-of-office notices with an empty Return-Path, like bounces."""
    raw = (b"Return-Path: <>\nFrom: Meera Patel <mpatel@lakeviewortho.example>\n"
           b"To: dana@riverapt.example\nSubject: Automatic reply: Hello\n"
           b"X-Auto-Response-Suppress: All\nIn-Reply-To: " + TOUCH.encode() + b"\n\n"
           b"I am away until March 9 and my mailbox is full, so check your spam folder for\n"
           b"my answer. Urgent: frontdesk@lakeviewortho.example or 550-0142.\n")
    result = classify(raw, today=date(2026, 3, 4))
    assert (result.kind, result.return_date) == ("auto_reply", date(2026, 3, 9))


def test_person_forwarding_a_bounce_is_a_reply() -> None:
    raw = (b"From: Sam Chen <sam@clinic.example>\nTo: dana@riverapt.example\n"
           b"Subject: Fwd: Undeliverable: Hello\nIn-Reply-To: " + TOUCH.encode() + b"\n\n"
           b"Dana, my old address bounced your note - use this one from now on.\n\n"
           b"---------- Forwarded message ---------\nFrom: postmaster@clinic.example\n"
           b"550 5.1.1 <sam.chen@clinic.example>: Recipient address rejected: User unknown\n")
    result = classify(raw)
    assert (result.kind, result.sender) == ("reply", "sam@clinic.example")
    assert "use this one from now on" in reply_text(raw)
    assert "Recipient address rejected" not in reply_text(raw)


def test_list_posts_are_not_list_software_answers() -> None:
    """List-Id is on every post a list sends: a person answering through a list is a reply,
    a list's newsletter that speaks of its moderators is no bounce."""
    reply = mail(f"From: Pat Lee <pat@clinic.example>\nIn-Reply-To: {TOUCH}\n"
                 "List-Id: <pt-news.lists.example>\nSubject: Re: Hello",
                 "Happy to talk; our list moderator can add you too.")
    assert classify(reply).kind == "reply"
    news = mail("From: PT News <news@lists.example>\nList-Id: <pt-news.lists.example>\n"
                "List-Unsubscribe: <mailto:leave@lists.example>\nSubject: March news",
                "A word from the list owner and our moderators: welcome, new members!")
    assert classify(news).kind == "other"
