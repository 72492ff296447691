"""The send path on real parts: claim, re-check, render, send, record.

Real SQLite and PostgreSQL, a real Redis with a real RQ worker, a real SMTP server (with its
refusals and outages). Only the clock is fake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select, text, update

from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.engine import enroll
from nurture.inbound.inbox import record_reply
from nurture.intake.referrals import add_referral
from nurture.models import Contact, Enrollment
from nurture.outbound.mime import make_message_id
from nurture.outbound.sending import DeliveryReport, deliver
from nurture.outbound.smtp import SmtpTransport
from nurture.outbound.transport import Staged, TransientDeliveryError
from nurture.outbound.unsubscribe import unsubscribe
from nurture.report import status
from nurture.ticking import tick
from nurture.worker import jobs
from tests.test_engine import (
    RecordingDispatcher,
    add_contact,
    all_touches,
    connection_fixture,  # noqa: F401 (a fixture)
    enrollments,
    events,
    one_touch,
    open_app_fixture,  # noqa: F401 (a fixture)
    project_fixture,  # noqa: F401 (a fixture)
    requeue_grace,
    rq_tick,
    run_worker,
    send_due,
    utc,
)


def queue_first_steps(app: Nurture, *emails: str) -> list[int]:
    """Import and enroll these contacts, then tick: their first touches are queued."""
    for email in emails:
        add_contact(app, email)
    enroll(app, "referral-outreach")
    dispatcher = RecordingDispatcher()
    tick(app, dispatcher)
    assert len(dispatcher.touch_ids) == len(emails)
    return dispatcher.touch_ids


def deliver_now(app: Nurture, touch_ids: list[int]) -> DeliveryReport:
    with SmtpTransport(app.settings.smtp_url) as transport:
        return deliver(app, touch_ids, transport)


def the_job(app: Nurture, connection: redis.Redis) -> Job:
    (job_id,) = {t.job_id for t in all_touches(app) if t.job_id}
    return Job.fetch(job_id, connection=connection)


def refused_for_now(app: Nurture, connection: redis.Redis, smtp_sink: Any) -> Job:
    """One due email whose mailbox is full (452 4.2.2): worked once, so RQ holds its retry."""
    add_contact(app, "full@clinic.example")
    enroll(app, "referral-outreach")
    smtp_sink.reject["full@clinic.example"] = (452, "4.2.2 mailbox full")
    rq_tick(app, connection)
    run_worker(app, connection)
    return the_job(app, connection)


def retry_now(app: Nurture, connection: redis.Redis, job: Job) -> None:
    """Do now what RQ's scheduler does when a retry's interval is over: put the job back."""
    job.refresh()  # enqueue_job saves the job: it must not write back stale fields
    queue = Queue(app.settings.worker_queue, connection=connection)
    queue.scheduled_job_registry.remove(job)
    queue.enqueue_job(job)


# Claim compare-and-set ------------------------------------------------------------------------
def test_delivering_the_same_touches_twice_sends_once(project: Nurture, smtp_sink: Any) -> None:
    """A job run twice (a retried RQ job) finds its rows claimed or sent and skips them."""
    ids = queue_first_steps(project, "a@clinic.example", "b@gym.example")
    first = deliver_now(project, ids)
    second = deliver_now(project, ids)
    assert (sorted(first.sent), first.skipped) == (sorted(ids), [])
    assert (second.sent, sorted(second.skipped)) == ([], sorted(ids))
    assert len(smtp_sink.messages) == 2
    assert {t.state for t in all_touches(project) if t.id in ids} == {"sent"}


def test_two_workers_racing_on_the_same_touches_send_each_once(
        open_app: Callable[..., Nurture], smtp_sink: Any) -> None:
    """Two workers (own engines and connections) delivering one batch never both send a row."""
    a, b = open_app(), open_app()
    ids = queue_first_steps(a, *(f"c{n}@clinic.example" for n in range(6)))
    start = threading.Barrier(2)
    reports: dict[str, DeliveryReport] = {}
    errors: list[BaseException] = []

    def work(name: str, app: Nurture) -> None:
        try:
            with SmtpTransport(app.settings.smtp_url) as transport:
                start.wait()
                reports[name] = deliver(app, ids, transport)
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=("a", a)),
               threading.Thread(target=work, args=("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    sent_a, sent_b = set(reports["a"].sent), set(reports["b"].sent)
    assert sent_a.isdisjoint(sent_b) and sent_a | sent_b == set(ids)
    assert set(reports["a"].skipped) == sent_b and set(reports["b"].skipped) == sent_a
    assert len(smtp_sink.messages) == len(ids)
    assert len({m["Message-ID"] for m in smtp_sink.messages}) == len(ids)


def test_a_contacts_second_email_in_one_batch_counts_the_first(
        tmp_path: Path, open_app: Callable[..., Nurture], smtp_sink: Any) -> None:
    """The batch is prepared ahead, but a contact's second email in it must see the first as
    sent: ``touch_count`` (and the other facts) are read when it is claimed."""
    folder = tmp_path / "counting"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.yaml").write_text(
            f"id: {name}\nname: {name}\nsteps:\n  - id: hello\n"
            f"    subject: \"{name} after {{{{ touch_count }}}}\"\n"
            "    template: appreciation.mjml\n")
    app = open_app(paths_campaigns=str(folder))
    add_contact(app, "twice@clinic.example")
    for campaign in ("one", "two"):
        assert enroll(app, campaign, emails=["twice@clinic.example"]).enrolled
    dispatcher = RecordingDispatcher()
    tick(app, dispatcher)
    assert len(dispatcher.touch_ids) == 2  # one batch

    report = deliver_now(app, dispatcher.touch_ids)

    assert sorted(report.sent) == sorted(dispatcher.touch_ids)
    assert sorted(m["Subject"].split(" after ")[1] for m in smtp_sink.messages) == ["0", "1"]


# Re-check at send time ------------------------------------------------------------------------
def test_stops_recorded_after_the_tick_but_before_the_worker_send_nothing(
        project: Nurture, connection: redis.Redis, smtp_sink: Any) -> None:
    """A reply, referral or unsubscribe between tick and worker cancels the queued touch."""
    stops = {"reply@clinic.example": lambda: record_reply(project, "reply@clinic.example"),
             "referral@clinic.example": lambda: add_referral(project, "referral@clinic.example"),
             "unsub@clinic.example": lambda: unsubscribe(project, "unsub@clinic.example")}
    for email in (*stops, "quiet@clinic.example"):
        add_contact(project, email)
    enroll(project, "referral-outreach")
    assert rq_tick(project, connection).enqueued == 4
    for stop in stops.values():
        stop()
    run_worker(project, connection)
    assert [m["To"].addresses[0].addr_spec for m in smtp_sink.messages] == [
        "quiet@clinic.example"]  # the only one nobody stopped
    hellos = {t.enrollment.contact.email: (t.state, t.reason, t.sent_at)
              for t in all_touches(project) if t.step_id == "hello"}
    assert hellos == {"reply@clinic.example": ("cancelled", "stopped by reply", None),
                      "referral@clinic.example": ("cancelled", "stopped by referral", None),
                      "unsub@clinic.example": ("cancelled", "stopped by unsubscribe", None),
                      "quiet@clinic.example": ("sent", None, project.now())}


class Interrupted(SmtpTransport):
    """The real SMTP transport, with the caller's work run while a message is staged (the
    server holds all of it but the closing dot)."""

    def __init__(self, url: str, while_staged: Callable[[], None]):
        super().__init__(url)
        self.while_staged = while_staged

    def stage(self, message: EmailMessage) -> Staged:
        staged = super().stage(message)
        self.while_staged()
        return staged


def test_a_reply_recorded_while_the_batch_sends_stops_the_rows_after_it(
        project: Nurture, smtp_sink: Any) -> None:
    """A reply recorded while the email before is on its way wins over the batch: the claim
    of the replier's row fails, the server gets nothing of it, and the batch goes on."""
    first, stopped, third = queue_first_steps(
        project, "a@clinic.example", "bo@clinic.example", "cleo@clinic.example")
    replies = []

    def reply_from_b() -> None:
        if not replies:
            replies.append(record_reply(project, "bo@clinic.example"))

    with Interrupted(project.settings.smtp_url, reply_from_b) as transport:
        report = deliver(project, [first, stopped, third], transport)
    assert report.sent == [first, third] and report.skipped == [stopped]
    assert [m["To"].addresses[0].addr_spec for m in smtp_sink.wait_for(2)] == [
        "a@clinic.example", "cleo@clinic.example"]
    assert smtp_sink.mail_commands == 2
    assert one_touch(project, stopped).state == "cancelled"


def test_claim_rechecks_the_rows_and_skips_with_a_reason(
        project: Nurture, smtp_sink: Any) -> None:
    """State changed behind the engine's back (no cancel ran) is still caught at claim time."""
    emails = ["bounced@clinic.example", "unsub@clinic.example", "stopped@clinic.example"]
    ids = queue_first_steps(project, *emails)
    with project.db.transaction() as session:
        session.execute(text("UPDATE contacts SET status = 'bounced' "
                             "WHERE email = 'bounced@clinic.example'"))
        session.execute(text("UPDATE contacts SET status = 'unsubscribed' "
                             "WHERE email = 'unsub@clinic.example'"))
        session.execute(update(Enrollment).where(Enrollment.contact_id.in_(
            select(Contact.id).where(Contact.email == "stopped@clinic.example")))
            .values(state="stopped", stop_reason="reply"))
    report = deliver_now(project, ids)
    assert (report.sent, sorted(report.skipped)) == ([], sorted(ids))
    reasons = {t.enrollment.contact.email: (t.state, t.reason) for t in all_touches(project)}
    assert reasons == {"bounced@clinic.example": ("skipped", "contact is bounced"),
                       "unsub@clinic.example": ("skipped", "contact is unsubscribed"),
                       "stopped@clinic.example": ("skipped", "enrollment stopped (reply)")}
    assert sorted(e["why"] for e in events(project, "touch_skipped")) == sorted(
        reason for _, reason in reasons.values())
    assert smtp_sink.messages == []


def test_contact_deleted_while_queued_is_not_sent_and_the_batch_goes_on(
        project: Nurture, smtp_sink: Any) -> None:
    """Deleting a contact removes their enrollments and touches with them: the queued id then
    claims nothing, and the rest of the batch is sent."""
    ids = queue_first_steps(project, "gone@clinic.example", "kept@clinic.example")
    with project.db.transaction() as session:
        session.execute(text("DELETE FROM contacts WHERE email = 'gone@clinic.example'"))
    report = deliver_now(project, ids)
    assert len(report.sent) == 1 and len(report.skipped) == 1 and report.failed == []
    assert [m["To"].addresses[0].addr_spec for m in smtp_sink.messages] == [
        "kept@clinic.example"]
    assert {t.enrollment.contact.email for t in all_touches(project)} == {"kept@clinic.example"}


def test_a_row_that_cannot_be_rendered_is_handed_back_then_failed(
        project: Nurture, smtp_sink: Any) -> None:
    """Rendering happens after the claim committed. An error there (here: an address that would
    need SMTPUTF8) hands the row back, queued, with the attempt counted, and the batch goes on;
    after the last attempt it fails. Nothing is sent for it, and it is never left `sending`."""
    ids = queue_first_steps(project, "zoe@clinic.example", "kept@clinic.example")
    with project.db.transaction() as session:  # written behind the import's back
        session.execute(text("UPDATE contacts SET email = 'zoë@clinic.example' "
                             "WHERE email = 'zoe@clinic.example'"))
    report = deliver_now(project, ids)
    assert len(report.sent) == 1 and report.failed == []
    (zoe,) = [t for t in all_touches(project) if t.enrollment.contact.email.startswith("zo")]
    assert (zoe.state, zoe.attempts, zoe.lease_until) == ("queued", 1, None)
    assert "SMTPUTF8" in (zoe.reason or "")
    for _ in range(project.settings.worker_max_attempts - 1):
        report = deliver_now(project, [zoe.id])
    assert report.failed == [zoe.id]
    assert one_touch(project, zoe.id).state == "failed"
    assert [m["To"].addresses[0].addr_spec for m in smtp_sink.messages] == ["kept@clinic.example"]


def test_campaign_removed_from_disk_is_skipped_at_claim(
        open_app: Callable[..., Nurture], tmp_path: Any, smtp_sink: Any) -> None:
    """A touch whose campaign file was deleted is skipped with a reason, not sent."""
    from tests.conftest import REPO

    folder = tmp_path / "campaigns-here"
    folder.mkdir()
    for name in ("referral-outreach.yaml", "partner-care.yaml"):
        (folder / name).write_text((REPO / "campaigns" / name).read_text())
    app = open_app(paths_campaigns=str(folder))
    (touch_id,) = queue_first_steps(app, "a@clinic.example")
    (folder / "referral-outreach.yaml").unlink()
    (folder / "partner-care.yaml").write_text(  # still valid without referral-outreach
        (REPO / "campaigns" / "partner-care.yaml").read_text() + "\n")
    assert deliver_now(app, [touch_id]).skipped == [touch_id]
    touch = one_touch(app, touch_id)
    assert touch.state == "skipped" and "no longer exists" in (touch.reason or "")
    assert smtp_sink.messages == []


# Send window at claim -----------------------------------------------------------------------
def test_touch_claimed_after_the_window_closed_waits_for_the_next_opening(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """Claimed outside the window: back to scheduled at the next opening, no attempt used."""
    clock.set(utc(2026, 12, 7, 20, 59))  # Monday 15:59 in New York, the window ends at 16:00
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    clock.advance(minutes=2)  # the worker got to it at 16:01
    report = deliver_now(project, [touch_id])
    assert (report.rescheduled, report.sent) == ([touch_id], [])
    touch = one_touch(project, touch_id)
    assert (touch.state, touch.due_at, touch.attempts, touch.job_id) == (
        "scheduled", utc(2026, 12, 8, 14), 0, None)  # Tuesday 09:00 in New York
    assert smtp_sink.messages == []
    clock.set(utc(2026, 12, 8, 13, 59))
    assert send_due(project).sent == []  # not yet
    clock.set(utc(2026, 12, 8, 14))
    assert send_due(project).sent == [touch_id]
    (message,) = smtp_sink.messages
    assert parsedate_to_datetime(message["Date"]) == utc(2026, 12, 8, 14)
    assert one_touch(project, touch_id).attempts == 1


# Expired lease: a late success still counts --------------------------------------------------
class SlowServer(SmtpTransport):
    """The real SMTP transport to a server that answers only after ``before_answer`` ran."""

    def __init__(self, url: str, before_answer: Callable[[], None]):
        super().__init__(url)
        self.before_answer = before_answer

    def stage(self, message: EmailMessage) -> Staged:
        staged, before_answer = super().stage(message), self.before_answer

        class Slow(Staged):
            def commit(self) -> None:
                before_answer()
                staged.commit()

            def abort(self) -> None:
                staged.abort()

        return Slow()


def test_a_claim_whose_lease_ran_out_before_transmitting_is_sent_once_later(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """A row still `sending` when its lease runs out reached nobody: the tick plans it again
    (not `uncertain`), the slow worker's transmission is called off, and the next claim sends
    it once."""
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    dispatcher = RecordingDispatcher()

    def lease_runs_out_meanwhile() -> None:
        clock.advance(seconds=project.settings.worker_lease_seconds + 1)
        assert tick(project, dispatcher).uncertain == 0  # planned again, and queued
        assert one_touch(project, touch_id).state == "queued"

    with Interrupted(project.settings.smtp_url, lease_runs_out_meanwhile) as transport:
        report = deliver(project, [touch_id], transport)
    assert report.skipped == [touch_id] and report.sent == []
    ((job_id, touch_ids),) = dispatcher.jobs.items()
    with SmtpTransport(project.settings.smtp_url) as transport:
        report = deliver(project, touch_ids, transport, job_id)
    assert report.sent == [touch_id]
    assert len(smtp_sink.wait_for(1)) == 1
    assert smtp_sink.mail_commands == 2  # the first transmission never ended
    assert one_touch(project, touch_id).state == "sent"


def test_send_that_outlived_its_lease_is_recorded_sent_when_it_succeeds(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """A claim marked `uncertain` by a tick is marked sent when its slow send succeeds after all."""
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    ticks = []

    def lease_runs_out_meanwhile() -> None:
        clock.advance(seconds=project.settings.worker_lease_seconds + 1)
        ticks.append(tick(project, RecordingDispatcher()))
        assert one_touch(project, touch_id).state == "uncertain"

    with SlowServer(project.settings.smtp_url, lease_runs_out_meanwhile) as transport:
        report = deliver(project, [touch_id], transport)
    assert [t.uncertain for t in ticks] == [1]
    assert report.sent == [touch_id]
    touch = one_touch(project, touch_id)
    assert (touch.state, touch.reason, touch.sent_at) == ("sent", None, clock.now())
    assert len(smtp_sink.messages) == 1
    assert status(project).attention == []
    # The sequence moves on from the late success.
    assert [(t.step_id, t.state) for t in all_touches(project)] == [
        ("hello", "sent"), ("question", "scheduled")]


# SMTP outcomes ------------------------------------------------------------------------------
def test_unknown_mailbox_bounces_the_contact_and_stops_everything(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """550 5.1.1: the touch fails, the contact is bounced, every enrollment stops, nothing more."""
    add_contact(project, "gone@clinic.example")
    enroll(project, "referral-outreach")
    enroll(project, "partner-care", emails=["gone@clinic.example"])
    smtp_sink.reject["gone@clinic.example"] = (550, "5.1.1 <gone@clinic.example>: user unknown")
    report = send_due(project)
    assert len(report.failed) == 1 and report.sent == []
    failed = one_touch(project, report.failed[0])
    assert failed.state == "failed" and "5.1.1" in (failed.reason or "")
    with project.db.transaction() as session:
        contact = session.query(Contact).one()
        assert contact.status == "bounced"
    assert enrollments(project) == {
        ("gone@clinic.example", "referral-outreach"): ("stopped", "bounce"),
        ("gone@clinic.example", "partner-care"): ("stopped", "bounce")}
    assert sorted(e["reason"] for e in events(project, "enrollment_stopped")) == ["bounce"] * 2
    assert [(t.step_id, t.state) for t in all_touches(project)] == [
        ("hello", "failed"), ("check-in-1", "cancelled")]
    del smtp_sink.reject["gone@clinic.example"]
    for week in range(1, 10):  # nothing is sent to them again
        clock.set(utc(2026, 12, 7, 14) + timedelta(weeks=week))
        assert send_due(project).sent == []
    assert smtp_sink.messages == []


def test_full_mailbox_is_retried_by_rq_and_then_sent_once(
        project: Nurture, clock: FakeClock, connection: redis.Redis, smtp_sink: Any) -> None:
    """452 4.2.2: the row goes back to queued, the job fails with a transient error and RQ
    schedules a retry, which sends it once."""
    add_contact(project, "full@clinic.example")
    enroll(project, "referral-outreach")
    smtp_sink.reject["full@clinic.example"] = (452, "4.2.2 mailbox full")
    rq_tick(project, connection)
    job = the_job(project, connection)
    jobs.bind(project)  # the job function itself fails with a transient error...
    try:
        with pytest.raises(TransientDeliveryError, match="temporary failure"):
            jobs.send_touches(*job.args)
    finally:
        jobs.bind(None)
    (touch,) = all_touches(project)
    assert (touch.state, touch.attempts) == ("queued", 1)
    assert "4.2.2" in (touch.reason or "")
    run_worker(project, connection)  # ...so under RQ, the job is scheduled for a retry
    assert one_touch(project, touch.id).state == "queued"
    job.refresh()
    assert job.get_status() == "scheduled"
    assert job.retries_left == project.settings.worker_max_attempts - 2
    assert job.id in Queue(project.settings.worker_queue,
                           connection=connection).scheduled_job_registry
    # Ticks meanwhile leave the row to RQ's retry: its job is scheduled, not lost.
    clock.advance(requeue_grace(project) + timedelta(seconds=1))
    assert rq_tick(project, connection).requeued == 0
    del smtp_sink.reject["full@clinic.example"]
    retry_now(project, connection, job)
    run_worker(project, connection)
    assert len(smtp_sink.messages) == 1
    touch = one_touch(project, touch.id)
    assert (touch.state, touch.attempts) == ("sent", 3)
    assert job.get_status() == "finished"
    retry_now(project, connection, job)  # even if RQ ran it once more
    run_worker(project, connection)
    assert len(smtp_sink.messages) == 1


def test_a_retry_waits_its_full_backoff_even_past_the_lease(
        open_app: Callable[..., Nurture], clock: FakeClock, connection: redis.Redis,
        smtp_sink: Any) -> None:
    """RQ's Retry decides when a temporarily refused row is tried again: a backoff longer than
    the lease is not cut short by the tick, and the retry then sends it once."""
    project = open_app(worker_retry_intervals="900", worker_lease_seconds=60)
    job = refused_for_now(project, connection, smtp_sink)
    assert job.get_status() == "scheduled"
    (touch,) = all_touches(project)
    assert (touch.state, touch.lease_until) == ("queued", None)
    clock.advance(seconds=project.settings.worker_lease_seconds
                  + project.settings.worker_requeue_grace + 1)
    report = rq_tick(project, connection)
    assert (report.requeued, report.enqueued) == (0, 0)  # still RQ's to retry
    del smtp_sink.reject["full@clinic.example"]
    retry_now(project, connection, job)
    run_worker(project, connection)
    assert one_touch(project, touch.id).state == "sent"
    assert len(smtp_sink.messages) == 1


def test_policy_refusal_fails_the_touch_but_keeps_the_contact(
        project: Nurture, smtp_sink: Any) -> None:
    """554 5.7.1 is about us, not the address: the touch fails, the contact stays active."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    smtp_sink.reject["a@clinic.example"] = (554, "5.7.1 message refused by policy")
    report = send_due(project)
    assert len(report.failed) == 1
    touch = one_touch(project, report.failed[0])
    assert touch.state == "failed" and "5.7.1" in (touch.reason or "")
    with project.db.transaction() as session:
        assert session.query(Contact).one().status == "active"
    assert enrollments(project) == {("a@clinic.example", "referral-outreach"): ("active", None)}
    assert [(line.touch_id, line.state) for line in status(project).attention] == [
        (touch.id, "failed")]
    assert smtp_sink.messages == []


def test_server_down_is_transient_and_the_retry_after_restart_sends_once(
        project: Nurture, connection: redis.Redis, smtp_sink: Any) -> None:
    """An SMTP outage leaves the row queued for RQ's retry; after the restart it goes once."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    rq_tick(project, connection)
    smtp_sink.set_down()
    run_worker(project, connection)
    (touch,) = all_touches(project)
    assert touch.state == "queued" and touch.sent_at is None
    job = the_job(project, connection)
    assert job.get_status() == "scheduled"
    smtp_sink.restart()
    retry_now(project, connection, job)
    run_worker(project, connection)
    retry_now(project, connection, job)  # a duplicate run of the job sends nothing more
    run_worker(project, connection)
    assert rq_tick(project, connection).enqueued == 0
    assert len(smtp_sink.messages) == 1
    assert one_touch(project, touch.id).state == "sent"


# Time comes from the clock ------------------------------------------------------------------
def test_date_header_and_sent_at_come_from_the_injected_clock(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """The Date header and sent_at are the engine's clock, not the machine's, years away."""
    when = utc(2031, 3, 4, 15, 17, 23)  # a Tuesday, 10:17 in New York
    clock.set(when)
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    deliver_now(project, [touch_id])
    (message,) = smtp_sink.messages
    assert parsedate_to_datetime(message["Date"]) == when
    assert abs(datetime.now(UTC) - when) > timedelta(days=365)
    touch = one_touch(project, touch_id)
    assert touch.sent_at == when and touch.sent_at.tzinfo is not None
    (event,) = [e for e in events(project, "touch_sent")]
    assert event["message_id"] == touch.message_id
    # The next step is planned from that instant: five business days later, same local time.
    assert all_touches(project)[-1].due_at == utc(2031, 3, 11, 14, 17, 23)  # EDT by then


# Message-ID ---------------------------------------------------------------------------------
def test_message_id_is_derived_from_the_row_on_the_senders_domain(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """The Message-ID depends only on the row: the same touch rendered twice carries the same."""
    ids = queue_first_steps(project, "a@clinic.example", "b@gym.example")
    for address in ("a@clinic.example", "b@gym.example"):
        smtp_sink.reject[address] = (451, "4.3.0 try again later")
    assert sorted(deliver_now(project, ids).retry) == sorted(ids)  # rendered, not delivered
    first_render = {t.id: t.message_id for t in all_touches(project)}
    smtp_sink.reject.clear()
    clock.advance(minutes=5)
    assert sorted(deliver_now(project, ids).sent) == sorted(ids)  # rendered again, delivered
    by_to = {m["To"].addresses[0].addr_spec: m["Message-ID"] for m in smtp_sink.messages}
    settings = project.settings
    for touch in all_touches(project):
        if touch.id not in ids:
            continue
        expected = make_message_id(touch.enrollment_id, touch.step_id, touch.trigger_key,
                                   settings.secret_key, settings.sender_domain)
        assert touch.message_id == first_render[touch.id] == expected
        assert by_to[touch.enrollment.contact.email] == expected
        assert expected.endswith("@riverapt.example>")
    assert len(set(by_to.values())) == 2


# The re-check leaves sent rows alone -------------------------------------------------------------
def test_enrollment_stopped_after_sending_keeps_the_sent_row(
        project: Nurture, smtp_sink: Any) -> None:
    """A stop cancels only what is unsent: the row already sent stays sent with its Message-ID."""
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    deliver_now(project, [touch_id])
    record_reply(project, "a@clinic.example")
    touches = all_touches(project)
    assert [(t.step_id, t.state) for t in touches] == [("hello", "sent"),
                                                      ("question", "cancelled")]
    assert touches[0].message_id == smtp_sink.messages[0]["Message-ID"]
    with project.db.transaction() as session:
        assert session.query(Enrollment).one().stop_reason == "reply"
    assert deliver_now(project, [touch_id]).skipped == [touch_id]  # a stray re-run of the job
    assert len(smtp_sink.messages) == 1


# Ambiguity is surfaced, never papered over --------------------------------------------------------
def test_connection_lost_after_data_leaves_the_touch_uncertain_and_never_resent(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """The server hung up after DATA (it has the message): `uncertain`, reported, not resent."""
    (touch_id,) = queue_first_steps(project, "a@clinic.example")
    smtp_sink.hang_up_after_data = True
    report = deliver_now(project, [touch_id])
    assert (report.uncertain, report.sent, report.retry) == ([touch_id], [], [])
    smtp_sink.hang_up_after_data = False
    for _ in range(3):
        clock.advance(hours=1)
        assert send_due(project).sent == []
        assert deliver_now(project, [touch_id]).skipped == [touch_id]
    assert len(smtp_sink.messages) == 1
    assert one_touch(project, touch_id).state == "uncertain"
    assert [(line.touch_id, line.state) for line in status(project).attention] == [
        (touch_id, "uncertain")]


def test_transient_failures_past_max_attempts_fail_the_touch(
        project: Nurture, clock: FakeClock, connection: redis.Redis, smtp_sink: Any) -> None:
    """When RQ's retries run out, the next tick fails the row (reported) instead of looping."""
    job = refused_for_now(project, connection, smtp_sink)
    limit = project.settings.worker_max_attempts
    for _ in range(limit - 1):
        retry_now(project, connection, job)
        run_worker(project, connection)
    job.refresh()
    assert job.get_status() == "failed"
    (touch,) = all_touches(project)
    assert (touch.state, touch.attempts) == ("queued", limit)
    clock.advance(requeue_grace(project) + timedelta(seconds=1))
    report = rq_tick(project, connection)
    assert (report.failed, report.requeued, report.enqueued) == (1, 0, 0)
    touch = one_touch(project, touch.id)
    assert touch.state == "failed" and f"{limit} attempts" in (touch.reason or "")
    assert [(line.touch_id, line.state) for line in status(project).attention] == [
        (touch.id, "failed")]
    assert smtp_sink.messages == []


def test_hard_bounce_that_arrives_after_the_lease_ran_out_still_bounces_the_contact(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """A definite refusal that comes after the lease expired settles the `uncertain` row: the
    touch failed and the dead address is bounced, as the success path records a late success."""
    (touch_id,) = queue_first_steps(project, "gone@clinic.example")
    smtp_sink.reject["gone@clinic.example"] = (550, "5.1.1 user unknown")

    def lease_runs_out_meanwhile() -> None:
        clock.advance(seconds=project.settings.worker_lease_seconds + 1)
        assert tick(project, RecordingDispatcher()).uncertain == 1

    with SlowServer(project.settings.smtp_url, lease_runs_out_meanwhile) as transport:
        report = deliver(project, [touch_id], transport)
    assert report.failed == [touch_id]
    assert one_touch(project, touch_id).state == "failed"
    with project.db.transaction() as session:
        assert session.query(Contact).one().status == "bounced"
    assert enrollments(project) == {("gone@clinic.example", "referral-outreach"):
                                    ("stopped", "bounce")}
