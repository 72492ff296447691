"""What one incoming message does: match, act, notify (no IMAP here; see test_mailbox.py).

Real messages from tests/mail-samples, pointed at touches these tests really sent (their
In-Reply-To, References and returned Message-IDs rewritten), processed on both databases. The
owner's notifications go to a real SMTP server on loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from nurture.app import Nurture
from nurture.cli.context import Context
from nurture.cli.project import status as status_command
from nurture.clock import FakeClock
from nurture.engine import enroll
from nurture.errors import ContactsError
from nurture.inbound.classify import classify
from nurture.inbound.inbox import (
    InboxConfig,
    is_free_mail,
    process_message,
    record_reply,
)
from nurture.intake.contacts import import_contacts
from nurture.models import (
    Contact,
    ContactAlias,
    Enrollment,
    Event,
    InboxMessage,
    Reply,
    SoftBounceCount,
    Touch,
    TouchState,
)
from nurture.outbound.notify import send_notifications
from nurture.outbound.sending import deliver
from nurture.outbound.transport import OutboxTransport
from nurture.report import status
from tests.conftest import REPO, make_settings
from tests.seeding import queue_due

SAMPLES = REPO / "tests" / "mail-samples"
HUMAN = json.loads((SAMPLES / "human" / "labels.json").read_text())
CONFIG = InboxConfig(soft_bounce_limit=3, pause_days=14)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Helpers (test_mailbox.py uses them too) ---------------------------------------------------------
def sample(name: str) -> bytes:
    """A file under tests/mail-samples, e.g. ``human/gmail-web.eml``."""
    return (SAMPLES / name).read_bytes()


def retarget(raw: bytes, message_id: str | None, *, recipient: str | None = None,
             new_id: str | None = None) -> bytes:
    """The sample pointing at ``message_id`` instead of the Message-IDs it cites (None: at
    nothing); its failed or complaining recipient replaced by ``recipient``; its own
    Message-ID replaced by ``new_id`` (to use one sample twice)."""
    found = classify(raw)
    for old in found.in_reply_to:
        raw = raw.replace(old.encode(), (message_id or "<elsewhere@unrelated.example>").encode())
    if message_id is None:
        raw = re.sub(rb"(?mi)^(In-Reply-To|References):.*\r?\n([ \t].*\r?\n)*", b"", raw)
    if recipient and found.recipient:
        raw = re.sub(re.escape(found.recipient.encode()), recipient.encode(), raw, flags=re.I)
    if new_id:
        raw, n = re.subn(rb"(?mi)^Message-ID:.*$", b"Message-ID: " + new_id.encode(), raw,
                         count=1)
        assert n == 1
    return raw


def add_contacts(app: Nurture, rows: list[dict[str, str]]) -> None:
    """Import contacts through the real CSV import."""
    columns = ["email", "first_name", "last_name", "organization", "tags", "timezone", "owner",
               "aliases"]
    lines = [",".join(columns)] + [
        ",".join(row.get(c, {"tags": "prospect", "timezone": "America/New_York"}.get(c, ""))
                 for c in columns) for row in rows]
    path = app.settings.project_dir / "contacts.csv"
    path.write_text("\n".join(lines) + "\n")
    import_contacts(app.db, path, app.clock)


def send_due(app: Nurture) -> list[int]:
    """One tick, then what it queued delivered to the outbox folder: the sent touch ids."""
    return deliver(app, queue_due(app), OutboxTransport(app.settings.outbox_dir)).sent


def touch_ids(app: Nurture) -> dict[str, str]:
    """Contact email → Message-ID of the last touch sent to them."""
    with app.db.transaction() as session:
        rows = session.execute(select(Contact.email, Touch.message_id).join(Touch.enrollment)
                               .join(Enrollment.contact).where(Touch.state == TouchState.SENT)
                               .order_by(Touch.sent_at)).all()
    return {email: message_id for email, message_id in rows}


def state_of(app: Nurture, email: str) -> tuple[str, list[tuple[str, str | None]]]:
    """(contact status, [(enrollment state, stop reason)])."""
    with app.db.transaction() as session:
        contact = session.scalars(select(Contact).where(Contact.email == email)).one()
        enrollments = session.scalars(select(Enrollment).where(
            Enrollment.contact_id == contact.id)).all()
        return contact.status, [(e.state, e.stop_reason) for e in enrollments]


def pending(app: Nurture, email: str) -> list[Touch]:
    with app.db.transaction() as session:
        return list(session.scalars(
            select(Touch).join(Touch.enrollment).join(Enrollment.contact)
            .where(Contact.email == email, Touch.state.in_(["scheduled", "queued"]))))


def body(message: EmailMessage) -> str:
    return message.get_content()  # type: ignore[no-any-return]


@pytest.fixture
def project(tmp_path: Path, database_url: str, clock: FakeClock,
            smtp_sink: Any) -> Iterator[Nurture]:
    app = Nurture.open(make_settings(tmp_path, database_url=database_url,
                                     smtp_url=smtp_sink.url), clock)
    yield app
    app.close()


def outreach(app: Nurture, rows: list[dict[str, str]]) -> dict[str, str]:
    """Import, enroll in referral-outreach, send the first email: email → its Message-ID."""
    add_contacts(app, rows)
    enroll(app, "referral-outreach")
    assert len(send_due(app)) == len(rows)
    return touch_ids(app)


# Human replies -----------------------------------------------------------------------------------
def test_every_human_reply_stops_its_own_enrollment_and_tells_the_owner(
        project: Nurture, smtp_sink: Any) -> None:
    senders = [label["sender"] for label in HUMAN]
    ids = outreach(project, [{"email": s, "first_name": f"P{i}", "last_name": "Source",
                              "organization": f"Org {i}", "owner": "Alex"}
                             for i, s in enumerate(senders)])
    for n, label in enumerate(HUMAN, 1):
        email = label["sender"]
        raw = retarget(sample(f"human/{label['file']}"), ids[email])
        outcome = process_message(project, raw, config=CONFIG)
        assert (outcome.action, outcome.contact, outcome.matched_by) == (
            "reply", email, "message_id"), label["file"]
        assert outcome.detail == {"stopped": ["referral-outreach"]}
        stopped = [s for s in senders if state_of(project, s)[1] == [("stopped", "reply")]]
        assert len(stopped) == n and email in stopped  # that one, and only that one, stopped
        assert pending(project, email) == []
    assert send_notifications(project).sent == len(HUMAN)
    notices = smtp_sink.wait_for(len(HUMAN))
    with project.db.transaction() as session:
        replies = session.scalars(select(Reply).order_by(Reply.id)).all()
        assert [(r.source, r.touch_id is not None) for r in replies] == [("imap", True)] * 16
        assert all(r.message_id for r in replies)
        kept = session.scalars(select(InboxMessage.excerpt).where(
            InboxMessage.excerpt.is_not(None))).all()
    assert kept == []  # what they wrote is not kept once the owner has it
    for label, notice in zip(HUMAN, notices, strict=True):
        text = body(notice)
        assert notice["To"] == "Alex Rivera <alex@riverapt.example>"
        assert notice["Auto-Submitted"] == "auto-generated"
        assert notice["Subject"].startswith("Reply from P") and "answer personally" in \
            notice["Subject"]
        assert "referral-outreach / hello" in text, text
        assert "Relationship: Alex" in text
        assert "Please answer personally" in text
        assert label["new_text_contains"] in " ".join(text.split()), (label["file"], text)
        assert label["quoted_text_absent"] not in text, (label["file"], text)


def test_a_reply_is_recorded_with_its_date_once(project: Nurture, smtp_sink: Any) -> None:
    ids = outreach(project, [{"email": "sam.chen.md@gmail.com", "first_name": "Sam"}])
    raw = retarget(sample("human/gmail-web.eml"), ids["sam.chen.md@gmail.com"])
    assert process_message(project, raw, config=CONFIG).action == "reply"
    assert process_message(project, raw, config=CONFIG).action == "duplicate"
    with project.db.transaction() as session:
        replies = session.scalars(select(Reply)).all()
    assert len(replies) == 1
    assert replies[0].received_at == utc(2026, 3, 4, 18, 2, 4)  # its Date header
    assert replies[0].message_id == \
        "<CAF3kq9xR2vT7pQ0mZ1n8YbW4s5LxJ+e0dP6u9HcQ1aB2cD3eF4@mail.gmail.com>"
    assert send_notifications(project).sent == 1
    assert send_notifications(project).sent == 0  # notified once
    assert len(smtp_sink.messages) == 1


def test_a_reply_without_threading_headers_is_matched_by_sender(project: Nurture) -> None:
    outreach(project, [{"email": "mpatel@lakeviewortho.example", "first_name": "Maya"}])
    raw = retarget(sample("human/outlook-desktop.eml"), None)
    assert classify(raw).in_reply_to == []
    outcome = process_message(project, raw, config=CONFIG)
    assert (outcome.action, outcome.matched_by) == ("reply", "address")
    assert outcome.touch_id is not None  # the last email sent to them: what they answer
    assert state_of(project, "mpatel@lakeviewortho.example")[1] == [("stopped", "reply")]


def test_a_colleague_is_matched_by_alias_or_organization_domain(
        project: Nurture, smtp_sink: Any) -> None:
    outreach(project, [
        {"email": "ebrooks@lakesidefamilymed.example", "first_name": "Ethan",
         "last_name": "Brooks", "organization": "Lakeside Family Medicine"},
        {"email": "drlee@harborsportsmed.example", "first_name": "Dana",
         "aliases": "jwalsh@harborsportsmed.example;dana.lee@gmail.com"},
        {"email": "other@harborsportsmed.example", "first_name": "Other"},
    ])
    # An office manager writing fresh, no threading headers: the organization's domain.
    colleague = retarget(sample("human/colleague.eml"), None)
    outcome = process_message(project, colleague, config=CONFIG)
    assert (outcome.action, outcome.contact, outcome.matched_by) == (
        "reply", "ebrooks@lakesidefamilymed.example", "domain")
    # An alias wins over the domain, which two contacts share here.
    aliased = retarget(sample("human/apple-mail.eml"), None)
    outcome = process_message(project, aliased, config=CONFIG)
    assert (outcome.action, outcome.contact, outcome.matched_by) == (
        "reply", "drlee@harborsportsmed.example", "alias")
    assert state_of(project, "other@harborsportsmed.example")[1] == [("active", None)]
    send_notifications(project)
    first, second = smtp_sink.wait_for(2)
    assert "Written by:   mlopez@lakesidefamilymed.example (someone at their organization)" \
        in body(first)
    assert "Written by:   jwalsh@harborsportsmed.example (one of their other addresses)" \
        in body(second)


def test_a_domain_shared_by_running_contacts_is_not_guessed(project: Nurture) -> None:
    outreach(project, [{"email": "a@lakesidefamilymed.example"},
                       {"email": "b@lakesidefamilymed.example"}])
    outcome = process_message(project, retarget(sample("human/colleague.eml"), None),
                              config=CONFIG)
    assert outcome.action == "unmatched"
    assert [state_of(project, e)[1] for e in ("a@lakesidefamilymed.example",
                                              "b@lakesidefamilymed.example")] == [
        [("active", None)], [("active", None)]]


def test_free_mail_domains_are_never_matched_by_domain(project: Nurture) -> None:
    outreach(project, [{"email": "dr.someone@gmail.com"}])
    raw = retarget(sample("human/gmail-web.eml"), None)  # from sam.chen.md@gmail.com
    outcome = process_message(project, raw, config=CONFIG)
    assert outcome.action == "unmatched"
    assert state_of(project, "dr.someone@gmail.com")[1] == [("active", None)]
    for domain in ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "hotmail.com",
                   "aol.com", "proton.me", "yahoo.co.uk", "hotmail.fr", "GMAIL.COM"):
        assert is_free_mail(domain), domain
    assert not is_free_mail("lakesidefamilymed.example")


def test_unmatched_messages_are_counted_and_change_nothing(project: Nurture) -> None:
    ids = outreach(project, [{"email": "dr.lee@clinic.example"}])
    stranger = retarget(sample("human/german.eml"), None)  # nobody we know, nothing of ours
    outcome = process_message(project, stranger, config=CONFIG)
    assert (outcome.kind, outcome.action, outcome.contact) == ("reply", "unmatched", None)
    bounce = retarget(sample("sisimai/lhost-postfix-13.eml"), None)  # about someone else
    assert process_message(project, bounce, config=CONFIG).action == "unmatched"
    newsletter = (b"From: news@vendor.example\r\nTo: alex@riverapt.example\r\n"
                  b"Subject: Our December news\r\nList-Unsubscribe: <https://vendor.example/u>"
                  b"\r\nMessage-ID: <n1@vendor.example>\r\n\r\nNews.\r\n")
    assert process_message(project, newsletter, config=CONFIG).action == "other"
    assert state_of(project, "dr.lee@clinic.example") == ("active", [("active", None)])
    assert len(ids) == 1 and len(pending(project, "dr.lee@clinic.example")) == 1
    with project.db.transaction() as session:
        counted = dict(session.execute(select(InboxMessage.action, func.count())
                                       .group_by(InboxMessage.action)).all())
        assert session.scalar(select(func.count()).select_from(Reply)) == 0
    assert counted == {"unmatched": 2, "other": 1}


def test_status_counts_the_inbox_by_kind_and_unmatched(project: Nurture,
                                                      smtp_sink: Any) -> None:
    assert (status(project).inbox, status(project).inbox_unmatched) == ({}, 0)
    assert "inbox: nothing read yet\n" in status_output(project)
    ids = outreach(project, [{"email": "dr.lee@clinic.example", "first_name": "Dana"}])
    messages = [retarget(sample("human/outlook-desktop.eml"), ids["dr.lee@clinic.example"]),
                retarget(sample("human/german.eml"), None),  # a stranger: unmatched
                retarget(sample("sisimai/lhost-postfix-13.eml"), None),  # unmatched too
                retarget(sample("autoreplies/french.eml"), None),  # from nobody we know
                b"From: news@vendor.example\r\nSubject: News\r\nList-Unsubscribe: "
                b"<https://vendor.example/u>\r\nMessage-ID: <n1@vendor.example>\r\n\r\nNews.\r\n"]
    assert [process_message(project, raw, config=CONFIG).action for raw in messages] == [
        "reply", "unmatched", "unmatched", "unmatched", "other"]
    assert send_notifications(project).sent == 1
    [note] = smtp_sink.wait_for(1)
    assert process_message(project, note.as_bytes(), config=CONFIG).action == "own"
    report = status(project)
    assert report.inbox == {"reply": 2, "bounce": 1, "auto_reply": 1, "other": 1}
    assert report.inbox_unmatched == 3
    assert ("inbox: 1 auto_reply, 1 bounce, 1 other, 2 reply; 3 matched no contact (left alone)"
            "\n") in status_output(project)


def status_output(app: Nurture) -> str:
    obj = Context(project_dir=app.settings.project_dir, clock=app.clock, _app=app)
    result = CliRunner().invoke(status_command, [], obj=obj)
    assert result.exit_code == 0, result.output
    return result.output


def test_our_own_notification_is_not_a_reply(project: Nurture, smtp_sink: Any) -> None:
    ids = outreach(project, [{"email": "sam.chen.md@gmail.com"}])
    process_message(project, retarget(sample("human/gmail-web.eml"),
                                      ids["sam.chen.md@gmail.com"]), config=CONFIG)
    send_notifications(project)
    notice = smtp_sink.wait_for(1)[0]
    assert process_message(project, smtp_sink.raw[0], config=CONFIG).action == "own"
    assert notice["Message-ID"].startswith("<nurture.notice.")


def test_a_failed_notification_is_sent_at_a_later_poll(project: Nurture, clock: FakeClock,
                                                       smtp_sink: Any) -> None:
    ids = outreach(project, [{"email": "sam.chen.md@gmail.com"}])
    process_message(project, retarget(sample("human/gmail-web.eml"),
                                      ids["sam.chen.md@gmail.com"]), config=CONFIG)
    smtp_sink.set_down()
    report = send_notifications(project)
    assert (report.sent, report.failed) == (0, 1)
    smtp_sink.restart()
    assert send_notifications(project).sent == 0  # claimed a moment ago: not yet
    clock.advance(minutes=11)
    assert send_notifications(project).sent == 1
    assert len(smtp_sink.wait_for(1)) == 1


def test_record_reply_by_hand_still_works(project: Nurture) -> None:
    outreach(project, [{"email": "dr.lee@clinic.example"}])
    result = record_reply(project, "DR.LEE@clinic.example")
    assert result.stopped == ["referral-outreach"]


# Bounces and complaints --------------------------------------------------------------------------
def test_a_hard_bounce_bounces_the_contact(project: Nurture) -> None:
    ids = outreach(project, [{"email": "dr.lee@clinic.example"}, {"email": "pat@gym.example"}])
    raw = retarget(sample("sisimai/lhost-postfix-13.eml"), ids["dr.lee@clinic.example"],
                   recipient="dr.lee@clinic.example")
    outcome = process_message(project, raw, config=CONFIG)
    assert (outcome.kind, outcome.action, outcome.matched_by) == ("bounce", "bounced",
                                                                  "message_id")
    assert state_of(project, "dr.lee@clinic.example") == ("bounced", [("stopped", "bounce")])
    assert pending(project, "dr.lee@clinic.example") == []
    assert state_of(project, "pat@gym.example") == ("active", [("active", None)])


def test_a_hard_bounce_without_our_message_id_is_matched_by_recipient(project: Nurture) -> None:
    outreach(project, [{"email": "dr.lee@clinic.example"}])
    raw = retarget(sample("sisimai/lhost-postfix-13.eml"), None,
                   recipient="dr.lee@clinic.example")
    assert process_message(project, raw, config=CONFIG).matched_by == "address"
    assert state_of(project, "dr.lee@clinic.example")[0] == "bounced"


SOFT = ["sisimai/lhost-sendmail-12.eml", "sisimai/lhost-exchange2007-03.eml",
        "sisimai/lhost-exim-56.eml", "sisimai/lhost-mailru-02.eml"]


def test_soft_bounces_bounce_the_contact_after_three_in_a_row(project: Nurture,
                                                              clock: FakeClock) -> None:
    outreach(project, [{"email": "dr.lee@clinic.example"}])
    email = "dr.lee@clinic.example"

    def bounce(name: str, new_id: str | None = None) -> str:
        raw = retarget(sample(name), touch_ids(project)[email], recipient=email, new_id=new_id)
        assert classify(raw).hard is False
        return process_message(project, raw, config=CONFIG).action

    def next_step() -> None:
        clock.set(pending(project, email)[0].due_at)
        assert len(send_due(project)) == 1

    assert bounce(SOFT[0]) == "soft_bounce"
    assert bounce(SOFT[1]) == "soft_bounce"  # a second report about the same email counts once
    next_step()
    assert bounce(SOFT[2]) == "soft_bounce"
    assert state_of(project, email)[0] == "active"
    next_step()
    assert bounce(SOFT[3]) == "bounced"
    assert state_of(project, email) == ("bounced", [("stopped", "bounce")])


def test_a_sign_of_life_starts_the_soft_bounce_count_again(project: Nurture) -> None:
    ids = outreach(project, [{"email": "kara.obrien@icloud.example"}])
    email = "kara.obrien@icloud.example"
    for n, name in enumerate(SOFT[:2]):
        raw = retarget(sample(name), None, recipient=email, new_id=f"<soft{n}@mx.example>")
        assert process_message(project, raw, config=CONFIG).action == "soft_bounce"
    notice = retarget(sample("autoreplies/no-date-en.eml"), ids[email])
    assert process_message(project, notice, config=CONFIG).action == "paused"
    with project.db.transaction() as session:
        assert session.get(SoftBounceCount, 1) is None
    raw = retarget(sample(SOFT[2]), None, recipient=email)
    assert process_message(project, raw, config=CONFIG).detail["soft_bounces"] == 1
    assert state_of(project, email)[0] == "active"


def test_a_complaint_unsubscribes(project: Nurture) -> None:
    ids = outreach(project, [{"email": "dr.lee@clinic.example"}])
    raw = retarget(sample("sisimai/arf-21.eml"), ids["dr.lee@clinic.example"],
                   recipient="dr.lee@clinic.example")
    outcome = process_message(project, raw, config=CONFIG)
    assert (outcome.kind, outcome.action) == ("complaint", "unsubscribed")
    assert state_of(project, "dr.lee@clinic.example") == ("unsubscribed",
                                                          [("stopped", "unsubscribe")])
    assert pending(project, "dr.lee@clinic.example") == []


# Out-of-office notices ---------------------------------------------------------------------------
@pytest.fixture
def march(tmp_path: Path, database_url: str, smtp_sink: Any) -> Iterator[tuple[Nurture,
                                                                                FakeClock]]:
    """The auto-reply samples were written on Wednesday 4 March 2026."""
    clock = FakeClock(utc(2026, 3, 4, 14))  # 09:00 in New York
    app = Nurture.open(make_settings(tmp_path, database_url=database_url,
                                     smtp_url=smtp_sink.url), clock)
    yield app, clock
    app.close()


def test_an_auto_reply_pauses_until_the_return_date(march: tuple[Nurture, FakeClock]) -> None:
    app, clock = march
    email = "j.becker@praxis-becker.example"
    ids = outreach(app, [{"email": email, "first_name": "Jonas"}])
    before = pending(app, email)[0].due_at
    assert before == utc(2026, 3, 11, 13)  # 5 business days later, 09:00 in New York
    outcome = process_message(app, retarget(sample("autoreplies/german.eml"), ids[email]),
                              config=CONFIG)
    assert (outcome.kind, outcome.action) == ("auto_reply", "paused")
    assert outcome.detail["return_date"] == "2026-03-16"
    assert outcome.detail["moved"] == 1
    (question,) = pending(app, email)
    assert question.due_at == utc(2026, 3, 16, 4)  # midnight in New York, 16 March
    assert state_of(app, email) == ("active", [("active", None)])  # paused, not stopped
    with app.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Reply)) == 0
        assert session.scalars(select(Event.kind).where(Event.kind == "contact_paused")).all()
    clock.set(utc(2026, 3, 16, 13))  # 09:00 on the day they are back: it goes out
    assert send_due(app) == [question.id]


def test_an_auto_reply_without_a_date_pauses_for_the_default(
        march: tuple[Nurture, FakeClock]) -> None:
    app, clock = march
    email = "kara.obrien@icloud.example"
    ids = outreach(app, [{"email": email}])
    outcome = process_message(app, retarget(sample("autoreplies/no-date-en.eml"), ids[email]),
                              config=CONFIG)
    assert outcome.detail["return_date"] is None
    assert pending(app, email)[0].due_at == clock.now() + timedelta(days=14)


def test_a_queued_email_waits_too(march: tuple[Nurture, FakeClock]) -> None:
    """A touch already handed to the queue is held back by the send-time re-check."""
    app, clock = march
    email = "j.becker@praxis-becker.example"
    ids = outreach(app, [{"email": email}])
    clock.set(utc(2026, 3, 11, 13))
    queued = queue_due(app)
    assert [t.state for t in pending(app, email)] == ["queued"]
    process_message(app, retarget(sample("autoreplies/german.eml"), ids[email]), config=CONFIG)
    report = deliver(app, queued, OutboxTransport(app.settings.outbox_dir))
    assert report.sent == [] and report.rescheduled == queued
    assert [(t.state, t.due_at) for t in pending(app, email)] == [
        ("scheduled", utc(2026, 3, 16, 4))]


def test_an_auto_reply_matched_by_sender_when_it_cites_nothing(
        march: tuple[Nurture, FakeClock]) -> None:
    app, _ = march
    email = "p.lambert@cabinetkine-lyon.example"
    outreach(app, [{"email": email, "timezone": "Europe/Paris"}])
    outcome = process_message(app, sample("autoreplies/french.eml"), config=CONFIG)
    assert (outcome.action, outcome.matched_by) == ("paused", "address")
    assert pending(app, email)[0].due_at == utc(2026, 3, 11, 23)  # 12 March, midnight in Paris


def test_a_late_auto_reply_whose_person_is_back_moves_nothing(
        march: tuple[Nurture, FakeClock]) -> None:
    app, clock = march
    email = "j.becker@praxis-becker.example"
    ids = outreach(app, [{"email": email}])
    clock.set(utc(2026, 3, 17, 12))
    outcome = process_message(app, retarget(sample("autoreplies/german.eml"), ids[email]),
                              config=CONFIG)
    assert (outcome.action, outcome.detail["moved"]) == ("paused", 0)


# Aliases in the contacts CSV ---------------------------------------------------------------------
def test_aliases_are_imported_and_checked(project: Nurture) -> None:
    add_contacts(project, [{"email": "drlee@clinic.example",
                            "aliases": "Front.Desk@clinic.example; lee@gmail.com"}])
    add_contacts(project, [{"email": "drlee@clinic.example", "aliases": "lee@gmail.com"}])
    with project.db.transaction() as session:
        assert sorted(session.scalars(select(ContactAlias.email))) == [
            "front.desk@clinic.example", "lee@gmail.com"]
    with pytest.raises(ContactsError) as bad:
        add_contacts(project, [{"email": "other@clinic.example", "aliases": "lee@gmail.com"},
                               {"email": "third@clinic.example",
                                "aliases": "third@clinic.example;drlee@clinic.example"}])
    assert [str(p) for p in bad.value.problems] == [
        f"{project.settings.project_dir / 'contacts.csv'}:3: aliases: "
        "third@clinic.example is the contact's own address",
    ]
    with pytest.raises(ContactsError) as bad:
        add_contacts(project, [{"email": "other@clinic.example", "aliases": "lee@gmail.com"},
                               {"email": "third@clinic.example",
                                "aliases": "drlee@clinic.example"}])
    assert sorted(p.message for p in bad.value.problems) == [
        "drlee@clinic.example is the address of another contact",
        "lee@gmail.com is already an alias of another contact"]
    with project.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 1
