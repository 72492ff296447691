"""The engine's invariants on real parts: enroll, tick, stop, recover, campaign edits, migrations.

Real SQLite and PostgreSQL, a real Redis with a real RQ worker, a real SMTP server. Only the
clock is fake. The helpers at the top are shared with ``tests/test_sending.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, SimpleWorker
from rq.job import Job
from sqlalchemy import select, update

from nurture import engine
from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.content.library import load_library
from nurture.db import current_revision, head_revision, make_engine, open_database, upgrade
from nurture.engine import enroll, pause_contact, resolve_touch
from nurture.errors import NurtureError
from nurture.inbound.inbox import record_reply
from nurture.intake.contacts import import_contacts
from nurture.intake.referrals import add_referral
from nurture.models import Contact, Enrollment, Event, Touch, TouchState
from nurture.outbound.mime import make_message_id
from nurture.outbound.sending import DeliveryReport, deliver
from nurture.outbound.transport import UncertainDeliveryError, open_transport
from nurture.outbound.unsubscribe import unsubscribe
from nurture.report import status
from nurture.ticking import tick
from nurture.worker import jobs
from tests.conftest import REPO, make_settings
from tests.smtp_sink import free_port
from tests.test_library import Collect


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Helpers --------------------------------------------------------------------------------------
class RecordingDispatcher:
    """A dispatcher that only remembers what it was handed (a job it never saw counts as lost)."""

    def __init__(self) -> None:
        self.jobs: dict[str, list[int]] = {}

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        assert job_id not in self.jobs, "a job id was enqueued twice"
        self.jobs[job_id] = list(touch_ids)

    def lost(self, job_ids: Any, unleased: object = ()) -> set[str]:
        return {job_id for job_id in job_ids if job_id not in self.jobs}

    @property
    def touch_ids(self) -> list[int]:
        return [touch_id for ids in self.jobs.values() for touch_id in ids]


def add_contact(app: Nurture, email: str, *, first: str = "Dana", org: str = "Springfield Clinic",
                tags: str = "prospect", tz: str = "America/New_York") -> None:
    """Import one contact through the real CSV import."""
    path = app.settings.project_dir / f"contact-{email}.csv"
    path.write_text("email,first_name,last_name,organization,role,tags,interests,timezone\n"
                    f"{email},{first},Lee,{org},physician,{tags},,{tz}\n")
    import_contacts(app.db, path, app.clock)


def merge(reports: list[DeliveryReport]) -> DeliveryReport:
    total = DeliveryReport()
    for report in reports:
        for f in fields(DeliveryReport):
            value = getattr(report, f.name)
            if isinstance(value, list):
                getattr(total, f.name).extend(value)
            elif value is not None:
                setattr(total, f.name, value)
    return total


def send_due(app: Nurture, dispatcher: RecordingDispatcher | None = None) -> DeliveryReport:
    """One tick, then every job it queued delivered in-process (a worker without RQ)."""
    dispatcher = dispatcher if dispatcher is not None else RecordingDispatcher()
    before = set(dispatcher.jobs)
    tick(app, dispatcher)
    with open_transport(app.settings) as transport:
        return merge([deliver(app, ids, transport)
                      for job_id, ids in dispatcher.jobs.items() if job_id not in before])


def all_touches(app: Nurture) -> list[Touch]:
    with app.db.transaction() as session:
        return list(session.scalars(select(Touch).order_by(Touch.id)))


def one_touch(app: Nurture, touch_id: int) -> Touch:
    with app.db.transaction() as session:
        return session.get_one(Touch, touch_id)


def enrollments(app: Nurture) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(email, campaign) → (state, stop_reason)."""
    with app.db.transaction() as session:
        return {(e.contact.email, e.campaign_id): (e.state, e.stop_reason)
                for e in session.scalars(select(Enrollment))}


def events(app: Nurture, kind: str) -> list[dict[str, Any]]:
    with app.db.transaction() as session:
        return [e.data for e in session.scalars(select(Event).where(Event.kind == kind)
                                                .order_by(Event.id))]


def run_worker(app: Nurture, connection: redis.Redis) -> None:
    """A real RQ worker in burst mode on the app's queue, bound to the app."""
    queue = Queue(app.settings.worker_queue, connection=connection)
    jobs.bind(app)
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        jobs.bind(None)


def requeue_grace(app: Nurture) -> timedelta:
    """How long a queued row whose job is gone waits before a tick requeues it."""
    seconds = getattr(app.settings, "worker_requeue_grace", None)
    if seconds is not None:
        return timedelta(seconds=seconds)
    return engine.REQUEUE_GRACE  # type: ignore[attr-defined,no-any-return]


def rq_tick(app: Nurture, connection: redis.Redis) -> Any:
    return tick(app, jobs.RQDispatcher(app, connection))


@pytest.fixture(name="open_app")
def open_app_fixture(tmp_path: Path, database_url: str, clock: FakeClock,
             smtp_sink: Any) -> Iterator[Callable[..., Nurture]]:
    """Open a project on the test database that mails the SMTP sink; settings may be overridden."""
    opened: list[Nurture] = []

    def _open(**overrides: Any) -> Nurture:
        values = dict(database_url=database_url, smtp_url=smtp_sink.url)
        values.update(overrides)
        project = Nurture.open(make_settings(tmp_path, **values), clock)
        opened.append(project)
        return project

    yield _open
    for project in opened:
        project.close()


@pytest.fixture(name="project")
def project_fixture(open_app: Callable[..., Nurture]) -> Nurture:
    return open_app()


@pytest.fixture(name="connection")
def connection_fixture(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


# A folder of our own campaigns, to tell apart what stops on reply, on referral, or on nothing.
TALK = """\
id: talk
name: Stops on a reply only
stop_on: [reply]
steps:
  - id: hello
    subject: "Hello {{ contact.first_name or 'there' }}"
    template: appreciation.mjml
  - id: question
    wait: 1 week
    subject: "A question"
    template: open-question.mjml
"""
QUIET = """\
id: quiet
name: Stops on nothing
stop_on: []
steps:
  - id: hello
    subject: "News for {{ contact.first_name or 'you' }}"
    template: check-in.mjml
  - id: later
    wait: 1 week
    subject: "Later news"
    template: check-in.mjml
"""
OUTREACH = """\
id: outreach
name: Stops on a referral
stop_on: [reply, referral]
on_referral: {send: thanks, then_enroll: care}
steps:
  - id: hello
    subject: "Thank you for what you do"
    template: appreciation.mjml
  - id: question
    wait: 1 week
    subject: "A question for you"
    template: open-question.mjml
  - id: thanks
    trigger_only: true
    subject: "Thank you, {{ contact.first_name or 'truly' }}"
    template: thank-you.mjml
"""
CARE = """\
id: care
name: Long-term care
stop_on: []
on_referral: {send: thanks}
steps:
  - id: check-in
    wait: 6 weeks
    subject: "How have things been?"
    template: partner-check-in.mjml
  - id: thanks
    trigger_only: true
    subject: "Thank you again, {{ contact.first_name or 'truly' }}"
    template: thank-you.mjml
"""


@pytest.fixture
def own_campaigns(tmp_path: Path, open_app: Callable[..., Nurture]) -> Nurture:
    folder = tmp_path / "own-campaigns"
    folder.mkdir()
    for name, body in {"talk": TALK, "quiet": QUIET, "outreach": OUTREACH, "care": CARE}.items():
        (folder / f"{name}.yaml").write_text(body)
    return open_app(paths_campaigns=str(folder))


# Migrations ---------------------------------------------------------------------------------
def test_fresh_database_is_migrated_on_first_open_and_not_again(database_url: str) -> None:
    """A fresh database gets the whole schema on first open; opening again applies nothing."""
    fresh = make_engine(database_url)
    assert current_revision(fresh) is None
    fresh.dispose()
    first = open_database(database_url)
    try:
        assert head_revision() is not None
        assert current_revision(first.engine) == head_revision()
        with first.transaction() as session:  # the tables are really there
            assert session.scalar(select(Touch.id)) is None
        assert upgrade(first.engine) is False
    finally:
        first.close()
    again = open_database(database_url)
    try:
        assert current_revision(again.engine) == head_revision()
        assert upgrade(again.engine) is False
    finally:
        again.close()


# Enrolling ----------------------------------------------------------------------------------
def test_enroll_defaults_to_campaign_audience(project: Nurture) -> None:
    """Without tags or emails, enroll picks the contacts with the campaign's audience tags."""
    add_contact(project, "a@clinic.example", tags="prospect")
    add_contact(project, "b@gym.example", tags="prospect;trainer")
    add_contact(project, "c@other.example", tags="partner")
    result = enroll(project, "referral-outreach")
    assert result.enrolled == ["a@clinic.example", "b@gym.example"]
    assert {email for email, _ in enrollments(project)} == {"a@clinic.example", "b@gym.example"}
    assert [t.step_id for t in all_touches(project)] == ["hello", "hello"]


def test_enroll_by_tag_or_email_selects_only_those(project: Nurture) -> None:
    """--tag and --email choose contacts instead of the audience; unknown emails are reported."""
    add_contact(project, "a@clinic.example", tags="prospect")
    add_contact(project, "b@gym.example", tags="trainer")
    add_contact(project, "c@other.example", tags="partner")
    by_tag = enroll(project, "referral-outreach", tags=["trainer"])
    assert by_tag.enrolled == ["b@gym.example"]
    by_email = enroll(project, "referral-outreach",
                      emails=["C@Other.example", "nobody@nowhere.example"])
    assert by_email.enrolled == ["c@other.example"]
    assert by_email.missing == ["nobody@nowhere.example"]
    assert set(enrollments(project)) == {("b@gym.example", "referral-outreach"),
                                         ("c@other.example", "referral-outreach")}


def test_enrolling_again_is_a_no_op(project: Nurture) -> None:
    """A contact goes through a campaign once: enrolling twice plans no second touch."""
    add_contact(project, "a@clinic.example")
    assert enroll(project, "referral-outreach").enrolled == ["a@clinic.example"]
    again = enroll(project, "referral-outreach")
    assert again.enrolled == [] and again.already == ["a@clinic.example"]
    send_due(project)  # even after the first step went out and the next one is planned
    third = enroll(project, "referral-outreach", emails=["a@clinic.example"])
    assert third.enrolled == [] and third.already == ["a@clinic.example"]
    assert [(t.step_id, t.state) for t in all_touches(project)] == [
        ("hello", "sent"), ("question", "scheduled")]
    assert len(events(project, "enrolled")) == 1


def test_unsubscribed_and_bounced_contacts_are_not_enrolled(project: Nurture) -> None:
    """A suppressed contact is never enrolled, by audience or by email."""
    add_contact(project, "gone@clinic.example")
    add_contact(project, "dead@clinic.example")
    add_contact(project, "ok@clinic.example")
    unsubscribe(project, "gone@clinic.example")
    with project.db.transaction() as session:
        session.execute(update(Contact).where(Contact.email == "dead@clinic.example")
                        .values(status="bounced"))
    result = enroll(project, "referral-outreach")
    assert result.enrolled == ["ok@clinic.example"]
    assert sorted(result.suppressed) == ["dead@clinic.example", "gone@clinic.example"]
    by_email = enroll(project, "referral-outreach", emails=["gone@clinic.example"])
    assert by_email.enrolled == [] and by_email.suppressed == ["gone@clinic.example"]
    assert set(enrollments(project)) == {("ok@clinic.example", "referral-outreach")}


def test_first_step_is_due_at_next_window_opening_in_the_contacts_zone(
        open_app: Callable[..., Nurture], clock: FakeClock) -> None:
    """The first step waits for the window in the contact's zone, else the practice's zone."""
    app = open_app(practice_timezone="Asia/Tokyo")
    clock.set(utc(2026, 12, 5, 12))  # Saturday noon UTC
    add_contact(app, "la@clinic.example", tz="America/Los_Angeles")
    add_contact(app, "chi@gym.example", tz="America/Chicago")
    add_contact(app, "nozone@clinic.example", tz="")
    enroll(app, "referral-outreach")
    due = {t.enrollment.contact.email: t.due_at for t in all_touches(app)}
    assert due == {
        "la@clinic.example": utc(2026, 12, 7, 17),  # Monday 09:00 in Los Angeles
        "chi@gym.example": utc(2026, 12, 7, 15),  # Monday 09:00 in Chicago
        "nozone@clinic.example": utc(2026, 12, 7, 0),  # Monday 09:00 in Tokyo (the practice)
    }
    # Inside the window, the first step is due at once.
    clock.set(utc(2026, 12, 8, 15, 30))  # Tuesday 10:30 in New York
    add_contact(app, "ny@clinic.example", tz="America/New_York")
    enroll(app, "referral-outreach", emails=["ny@clinic.example"])
    assert all_touches(app)[-1].due_at == utc(2026, 12, 8, 15, 30)


# Tick idempotency ----------------------------------------------------------------------------
def test_two_ticks_at_the_same_time_enqueue_each_due_touch_once(project: Nurture) -> None:
    """A second tick at the same instant finds nothing new: every due row is enqueued once."""
    for n in range(5):
        add_contact(project, f"c{n}@clinic.example")
    enroll(project, "referral-outreach")
    dispatcher = RecordingDispatcher()
    first, second = tick(project, dispatcher), tick(project, dispatcher)
    assert (first.enqueued, second.enqueued) == (5, 0)
    assert sorted(dispatcher.touch_ids) == [t.id for t in all_touches(project)]
    assert {t.state for t in all_touches(project)} == {"queued"}


def test_concurrent_ticks_in_two_processes_enqueue_each_touch_once(
        open_app: Callable[..., Nurture]) -> None:
    """Two ticks racing on one database (separate engines) never both enqueue a row."""
    a = open_app(worker_batch_size=2)
    b = open_app(worker_batch_size=2)
    for n in range(8):
        add_contact(a, f"c{n}@clinic.example")
    enroll(a, "referral-outreach")
    dispatchers = [RecordingDispatcher(), RecordingDispatcher()]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(app: Nurture, dispatcher: RecordingDispatcher) -> None:
        try:
            start.wait()
            tick(app, dispatcher)
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a, dispatchers[0])),
               threading.Thread(target=run, args=(b, dispatchers[1]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    enqueued = dispatchers[0].touch_ids + dispatchers[1].touch_ids
    assert sorted(enqueued) == [t.id for t in all_touches(a)]  # all of them, each once


def test_two_ticks_with_rq_make_one_job_and_one_email_each(
        project: Nurture, connection: redis.Redis, smtp_sink: Any) -> None:
    """With the real RQDispatcher, two ticks queue one job, and the worker sends each row once."""
    for n in range(3):
        add_contact(project, f"c{n}@clinic.example")
    enroll(project, "referral-outreach")
    assert rq_tick(project, connection).enqueued == 3
    assert rq_tick(project, connection).enqueued == 0
    queue = Queue(project.settings.worker_queue, connection=connection)
    (job,) = queue.jobs
    assert sorted(job.args[0]) == [t.id for t in all_touches(project)]
    run_worker(project, connection)
    assert rq_tick(project, connection).enqueued == 0
    assert Queue(project.settings.worker_queue, connection=connection).count == 0
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp_sink.messages) == [
        "c0@clinic.example", "c1@clinic.example", "c2@clinic.example"]
    assert [t.state for t in all_touches(project) if t.step_id == "hello"] == ["sent"] * 3


def test_tick_enqueues_only_rows_that_are_due(project: Nurture, clock: FakeClock) -> None:
    """A planned step stays in the database, not in Redis, until its due time comes."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    send_due(project)
    (question,) = [t for t in all_touches(project) if t.state == "scheduled"]
    assert question.due_at == utc(2026, 12, 14, 14)  # five business days later, same hour
    dispatcher = RecordingDispatcher()
    clock.set(question.due_at - timedelta(seconds=1))
    assert tick(project, dispatcher).enqueued == 0
    clock.set(question.due_at)
    assert tick(project, dispatcher).enqueued == 1
    assert dispatcher.touch_ids == [question.id]


# Redis loses the queue -----------------------------------------------------------------------
def test_flushed_redis_is_repaired_by_the_next_tick_after_the_grace(
        project: Nurture, clock: FakeClock, connection: redis.Redis, smtp_sink: Any) -> None:
    """After Redis loses its jobs, a tick past the grace re-enqueues the rows; each goes once."""
    for n in range(3):
        add_contact(project, f"c{n}@clinic.example")
    enroll(project, "referral-outreach")
    assert rq_tick(project, connection).enqueued == 3
    connection.flushdb()
    # Within the grace a missing job may just not be pushed yet: leave it alone.
    clock.advance(requeue_grace(project) - timedelta(seconds=1))
    assert rq_tick(project, connection).requeued == 0
    assert {t.state for t in all_touches(project)} == {"queued"}
    clock.advance(seconds=2)
    report = rq_tick(project, connection)
    assert (report.requeued, report.enqueued) == (3, 3)
    run_worker(project, connection)
    clock.advance(requeue_grace(project) * 2)  # a later tick finds nothing lost or due
    assert rq_tick(project, connection).enqueued == 0
    assert len(smtp_sink.messages) == 3
    assert len({m["Message-ID"] for m in smtp_sink.messages}) == 3
    assert [t.state for t in all_touches(project) if t.step_id == "hello"] == ["sent"] * 3


def test_row_still_queued_under_a_finished_job_is_treated_as_lost(
        project: Nurture, clock: FakeClock, connection: redis.Redis, smtp_sink: Any) -> None:
    """A job that finished while its row is still queued will never send it: requeue the row."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    dispatcher, job_id = jobs.RQDispatcher(project, connection), f"finished-{uuid.uuid4().hex}"
    dispatcher.enqueue(job_id, [])  # runs, touches nothing, finishes
    run_worker(project, connection)
    assert Job.fetch(job_id, connection=connection).get_status() == "finished"
    (touch,) = all_touches(project)
    with project.db.transaction() as session:  # the row is still queued under that job
        session.execute(update(Touch).where(Touch.id == touch.id).values(
            state=TouchState.QUEUED, job_id=job_id, queued_at=clock.now()))
    assert dispatcher.lost([job_id]) == {job_id}
    clock.advance(requeue_grace(project) + timedelta(seconds=1))
    report = rq_tick(project, connection)
    assert (report.requeued, report.enqueued) == (1, 1)
    run_worker(project, connection)
    clock.advance(requeue_grace(project) * 2)
    assert rq_tick(project, connection).enqueued == 0
    assert len(smtp_sink.messages) == 1
    assert one_touch(project, touch.id).state == "sent"


def test_redis_down_when_the_tick_enqueues_loses_nothing(
        project: Nurture, clock: FakeClock, connection: redis.Redis, smtp_sink: Any) -> None:
    """Rows committed as queued whose job never reached Redis are requeued once it is back."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    nobody_home = redis.Redis(port=free_port(), retry=RedisRetry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        rq_tick(project, nobody_home)
    (touch,) = all_touches(project)
    assert touch.state == "queued"  # the database remembers it
    clock.advance(requeue_grace(project) + timedelta(seconds=1))
    report = rq_tick(project, connection)
    assert (report.requeued, report.enqueued) == (1, 1)
    run_worker(project, connection)
    assert len(smtp_sink.messages) == 1
    assert one_touch(project, touch.id).state == "sent"


# Stop rules ----------------------------------------------------------------------------------
def test_reply_stops_only_campaigns_with_reply_in_stop_on(own_campaigns: Nurture) -> None:
    """A reply stops `stop_on: [reply]` campaigns, with a reason and an event, and nothing else."""
    app = own_campaigns
    add_contact(app, "a@clinic.example")
    enroll(app, "talk", emails=["a@clinic.example"])
    enroll(app, "quiet", emails=["a@clinic.example"])
    result = record_reply(app, "a@clinic.example")
    assert result.stopped == ["talk"]
    assert enrollments(app) == {("a@clinic.example", "talk"): ("stopped", "reply"),
                                ("a@clinic.example", "quiet"): ("active", None)}
    states = {t.enrollment.campaign_id: (t.state, t.reason) for t in all_touches(app)}
    assert states == {"talk": ("cancelled", "stopped by reply"), "quiet": ("scheduled", None)}
    assert [(e["campaign"], e["reason"]) for e in events(app, "enrollment_stopped")] == [
        ("talk", "reply")]
    sent = send_due(app)
    assert [one_touch(app, i).enrollment.campaign_id for i in sent.sent] == ["quiet"]


def test_referral_stops_outreach_thanks_once_and_enrolls_in_care_once(
        own_campaigns: Nurture, smtp_sink: Any) -> None:
    """A referral stops `stop_on: referral` campaigns, plans one thank-you per day, enrolls once."""
    app = own_campaigns
    add_contact(app, "a@clinic.example", first="Sam")
    enroll(app, "outreach", emails=["a@clinic.example"])
    enroll(app, "quiet", emails=["a@clinic.example"])
    first = add_referral(app, "a@clinic.example", external_ref="EHR-1")
    assert (first.stopped, first.thank_you, first.enrolled) == (
        ["outreach"], ["outreach/thanks"], ["care"])
    second = add_referral(app, "a@clinic.example", external_ref="EHR-2")  # same day
    assert (second.stopped, second.thank_you, second.enrolled) == ([], [], [])
    assert enrollments(app) == {("a@clinic.example", "outreach"): ("stopped", "referral"),
                                ("a@clinic.example", "quiet"): ("active", None),
                                ("a@clinic.example", "care"): ("active", None)}
    assert [(e["campaign"], e["reason"]) for e in events(app, "enrollment_stopped")] == [
        ("outreach", "referral")]
    report = send_due(app)
    subjects = sorted(m["Subject"] for m in smtp_sink.messages)
    assert subjects == ["News for Sam", "Thank you, Sam"]
    assert len(report.sent) == 2
    outreach_hello = [t for t in all_touches(app) if t.enrollment.campaign_id == "outreach"
                      and t.step_id == "hello"]
    assert [(t.state, t.reason) for t in outreach_hello] == [("cancelled", "stopped by referral")]
    # Sending the thank-you neither completes nor restarts the stopped sequence.
    assert enrollments(app)[("a@clinic.example", "outreach")] == ("stopped", "referral")
    assert not [t for t in all_touches(app) if t.enrollment.campaign_id == "outreach"
                and t.step_id == "question"]


def test_referral_on_another_day_gets_a_second_thank_you(
        own_campaigns: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """Thank-yous are one per source per day: a referral the next day is thanked again."""
    app = own_campaigns
    add_contact(app, "a@clinic.example", first="Sam")
    enroll(app, "outreach", emails=["a@clinic.example"])
    add_referral(app, "a@clinic.example")
    send_due(app)
    clock.advance(days=1)
    again = add_referral(app, "a@clinic.example")
    assert again.thank_you == ["care/thanks"] and again.enrolled == []
    send_due(app)
    send_due(app)
    assert [m["Subject"] for m in smtp_sink.messages] == ["Thank you, Sam",
                                                          "Thank you again, Sam"]
    assert len([e for e in enrollments(app) if e[1] == "care"]) == 1


def test_unsubscribe_cancels_everything_including_a_queued_thank_you(
        own_campaigns: Nurture, smtp_sink: Any) -> None:
    """An unsubscribe stops every enrollment and cancels every unsent touch, thank-yous too."""
    app = own_campaigns
    add_contact(app, "a@clinic.example")
    enroll(app, "outreach", emails=["a@clinic.example"])
    enroll(app, "quiet", emails=["a@clinic.example"])
    add_referral(app, "a@clinic.example")
    dispatcher = RecordingDispatcher()
    tick(app, dispatcher)  # the thank-you and quiet's first step are now queued
    assert {(t.step_id, t.state) for t in all_touches(app)} >= {("thanks", "queued")}
    unsubscribe(app, "a@clinic.example")
    touches = all_touches(app)
    assert {t.state for t in touches} == {"cancelled"}
    assert {t.reason for t in touches if t.step_id == "thanks"} == {"stopped by unsubscribe"}
    assert enrollments(app) == {("a@clinic.example", "outreach"): ("stopped", "referral"),
                                ("a@clinic.example", "quiet"): ("stopped", "unsubscribe"),
                                ("a@clinic.example", "care"): ("stopped", "unsubscribe")}
    reasons = sorted((e["campaign"], e["reason"]) for e in events(app, "enrollment_stopped"))
    assert reasons == [("care", "unsubscribe"), ("outreach", "referral"),
                       ("quiet", "unsubscribe")]
    with open_transport(app.settings) as transport:
        report = deliver(app, dispatcher.touch_ids, transport)
    assert report.sent == [] and sorted(report.skipped) == sorted(dispatcher.touch_ids)
    assert smtp_sink.messages == []


# Expired lease → uncertain --------------------------------------------------------------------
def test_expired_transmission_becomes_uncertain_is_reported_and_never_resent(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """A worker that died while handing an email to the server leaves an `uncertain` row:
    reported, never resent."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    dispatcher = RecordingDispatcher()
    tick(project, dispatcher)
    (touch_id,) = dispatcher.touch_ids
    lease = timedelta(seconds=project.settings.worker_lease_seconds)
    with project.db.transaction() as session:  # what a worker killed mid-send leaves behind
        session.execute(update(Touch).where(Touch.id == touch_id).values(
            state=TouchState.TRANSMITTING, claimed_at=clock.now(),
            lease_until=clock.now() + lease, attempts=1))
    clock.advance(lease - timedelta(seconds=1))
    assert tick(project, dispatcher).uncertain == 0  # the lease still holds
    assert one_touch(project, touch_id).state == "transmitting"
    clock.advance(seconds=2)
    report = tick(project, dispatcher)
    assert (report.uncertain, report.enqueued) == (1, 0)
    touch = one_touch(project, touch_id)
    assert touch.state == "uncertain" and "may have been sent" in (touch.reason or "")
    assert [(line.touch_id, line.state) for line in status(project).attention] == [
        (touch_id, "uncertain")]
    assert [e["touch_id"] for e in _touch_events(project, "touch_uncertain")] == [touch_id]
    for _ in range(3):  # ticks and re-run jobs leave it alone
        clock.advance(hours=1)
        tick(project, dispatcher)
        with open_transport(project.settings) as transport:
            assert deliver(project, [touch_id], transport).skipped == [touch_id]
    assert dispatcher.touch_ids == [touch_id]
    assert one_touch(project, touch_id).state == "uncertain"
    assert smtp_sink.messages == []


def test_expired_claim_never_transmitted_is_sent_again_until_its_attempts_run_out(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """A worker that died after claiming an email but before handing it over reached nobody:
    the row is planned again once the lease runs out, its attempt counted, and fails after
    the last attempt rather than loop for ever."""
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    dispatcher = RecordingDispatcher()
    tick(project, dispatcher)
    (touch_id,) = dispatcher.touch_ids
    lease = timedelta(seconds=project.settings.worker_lease_seconds)
    limit = project.settings.worker_max_attempts
    for attempt in range(1, limit + 1):
        with project.db.transaction() as session:  # a worker killed between claim and send
            session.execute(update(Touch).where(Touch.id == touch_id).values(
                state=TouchState.SENDING, claimed_at=clock.now(),
                lease_until=clock.now() + lease, attempts=attempt))
        clock.advance(lease + timedelta(seconds=1))
        report = tick(project, dispatcher)
        assert report.uncertain == 0
        assert one_touch(project, touch_id).state == ("queued" if attempt < limit else "failed")
    assert len(_touch_events(project, "touch_requeued")) == limit - 1
    assert [e["touch_id"] for e in _touch_events(project, "touch_failed")] == [touch_id]
    assert smtp_sink.messages == []


def _touch_events(app: Nurture, kind: str) -> list[dict[str, Any]]:
    with app.db.transaction() as session:
        return [{"touch_id": e.touch_id, **e.data}
                for e in session.scalars(select(Event).where(Event.kind == kind))]


# Campaign edits -----------------------------------------------------------------------------
def test_campaign_edits_are_picked_up_and_a_broken_edit_keeps_the_last_good(
        open_app: Callable[..., Nurture], tmp_path: Path, clock: FakeClock,
        smtp_sink: Any) -> None:
    """An edited subject is used by the next send; an invalid edit keeps the last good set."""
    folder = tmp_path / "edited"
    folder.mkdir()
    source = (REPO / "campaigns" / "referral-outreach.yaml").read_text()
    path = folder / "referral-outreach.yaml"
    path.write_text(source)
    care = (REPO / "campaigns" / "partner-care.yaml").read_text()
    (folder / "partner-care.yaml").write_text(care)
    app = open_app(paths_campaigns=str(folder))
    add_contact(app, "a@clinic.example", first="Dana")
    enroll(app, "referral-outreach")  # loaded with the original subjects
    assert "Thank you for what you do" in app.campaign("referral-outreach").step("hello").subject
    path.write_text(source.replace("Thank you for what you do at", "Grateful for your work at"))
    send_due(app)
    assert [m["Subject"] for m in smtp_sink.messages] == [
        "Grateful for your work at Springfield Clinic"]
    # A broken edit: the worker goes on with the last good definitions.
    path.write_text(source.replace("A question for you,", "Edited question,")
                    .replace("wait: 5 business days", "wait: 5 fortnights"))
    clock.set(utc(2026, 12, 14, 14))  # the question step is due
    report = send_due(app)
    assert len(report.sent) == 1
    assert smtp_sink.messages[-1]["Subject"] == "A question for you, Dana"
    assert app.campaign("referral-outreach").step("question").subject.startswith("A question")


def send_whole_sequence(app: Nurture, clock: FakeClock) -> None:
    """Travel to each planned step in turn and send it, until nothing is scheduled."""
    while due := [t.due_at for t in all_touches(app) if t.state == "scheduled"]:
        clock.set(max(clock.now(), min(due)))
        report = send_due(app)
        assert report.sent, [(t.step_id, t.state, t.reason) for t in all_touches(app)]


@pytest.mark.parametrize("ended_by", ["reply", "completion"])
def test_referral_from_a_source_whose_outreach_ended_is_thanked_and_moved_to_care(
        project: Nurture, clock: FakeClock, smtp_sink: Any, ended_by: str) -> None:
    """A source who replied, or heard the whole sequence, and then refers gets the thank-you and
    long-term care, like one still in the sequence (README: a referral "sends a thank-you and
    moves the source to long-term care")."""
    add_contact(project, "a@clinic.example", first="Sam")
    enroll(project, "referral-outreach")
    if ended_by == "reply":
        send_due(project)
        record_reply(project, "a@clinic.example")
        expected = ("stopped", "reply")
    else:
        send_whole_sequence(project, clock)
        expected = ("completed", None)
    assert enrollments(project) == {("a@clinic.example", "referral-outreach"): expected}
    sent_before = len(smtp_sink.messages)
    result = add_referral(project, "a@clinic.example")
    assert result.thank_you == ["referral-outreach/thank-you"]
    assert result.enrolled == ["partner-care"]
    assert send_due(project).sent
    assert [m["Subject"] for m in smtp_sink.messages[sent_before:]] == ["Thank you, Sam"]


def test_referral_after_a_reply_is_thanked_even_while_another_campaign_runs(
        own_campaigns: Nurture, smtp_sink: Any) -> None:
    """A running campaign without `on_referral` does not hide the rule of the one that ended."""
    app = own_campaigns
    add_contact(app, "a@clinic.example", first="Sam")
    enroll(app, "outreach", emails=["a@clinic.example"])
    enroll(app, "quiet", emails=["a@clinic.example"])  # stop_on: [], no on_referral
    send_due(app)
    record_reply(app, "a@clinic.example")
    assert enrollments(app) == {("a@clinic.example", "outreach"): ("stopped", "reply"),
                                ("a@clinic.example", "quiet"): ("active", None)}
    result = add_referral(app, "a@clinic.example")
    assert (result.thank_you, result.enrolled) == (["outreach/thanks"], ["care"])
    before = len(smtp_sink.messages)
    send_due(app)
    assert [m["Subject"] for m in smtp_sink.messages[before:]] == ["Thank you, Sam"]


# Long-term care: rounds (repeat_from) ------------------------------------------------------------
def send_until(app: Nurture, clock: FakeClock, end: datetime) -> None:
    """Travel to each planned touch in turn and deliver it (sent or skipped), until ``end``."""
    while due := [t.due_at for t in all_touches(app) if t.state == "scheduled"]:
        if min(due) > end:
            break
        clock.set(max(clock.now(), min(due)))
        send_due(app)
        stuck = [t for t in all_touches(app) if t.state == "scheduled" and t.due_at <= clock.now()]
        assert not stuck, [(t.step_id, t.trigger_key, t.reason) for t in stuck]


def test_partner_care_goes_on_for_years_without_repeating_content(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """The shipped partner-care repeats its steps round after round: five simulated years, a
    referral in the middle, never an article or book twice, every touch its own identity, and
    it ends only with an unsubscribe."""
    add_contact(project, "a@clinic.example", first="Sam")
    assert enroll(project, "partner-care", emails=["a@clinic.example"]).enrolled == [
        "a@clinic.example"]
    start = clock.now()
    send_until(project, clock, start + timedelta(days=913))  # two and a half years
    clock.advance(days=10)
    referred = clock.now()
    assert add_referral(project, "a@clinic.example").thank_you == ["partner-care/thank-you"]
    send_until(project, clock, start + timedelta(days=5 * 365))
    assert enrollments(project) == {("a@clinic.example", "partner-care"): ("active", None)}

    touches = all_touches(project)
    keys = [(t.step_id, t.trigger_key) for t in touches]
    assert len(set(keys)) == len(keys)  # each round's touch is a touch of its own
    rounds = [key for step, key in keys if step == "check-in-1"]
    assert len(rounds) >= 9 and rounds[:3] == ["", "round-2", "round-3"]
    assert rounds == ["", *[f"round-{n}" for n in range(2, len(rounds) + 1)]]
    [thanks] = [t for t in touches if t.step_id == "thank-you"]
    assert thanks.state == "sent" and thanks.trigger_key == referred.date().isoformat()
    assert thanks.sent_at - referred < timedelta(days=5)  # promptly: the next Tue-Thu window

    # Every message once, with the Message-ID of its key; every library item at most once.
    sent = [t for t in touches if t.state == "sent"]
    assert [m["Message-ID"] for m in smtp_sink.messages] == [t.message_id for t in sent]
    settings = project.settings
    assert all(t.message_id == make_message_id(t.enrollment_id, t.step_id, t.trigger_key,
                                               settings.secret_key, settings.sender_domain)
               for t in sent)
    library = load_library(REPO / "campaigns")
    shown = [item.url for m in smtp_sink.messages for item in library.items
             if item.url in m.get_body(("plain",)).get_content()]
    assert sorted(shown) == sorted(item.url for item in library.items)  # all, once each
    # When the library has nothing left, the step is skipped and recorded; the check-ins go on.
    skipped = [(t.step_id, t.reason) for t in touches if t.state == "skipped"]
    assert skipped and set(skipped) == {("article-1", "no unsent article left"),
                                        ("book-1", "no unsent book left")}
    assert len(events(project, "touch_skipped")) == len(skipped)
    check_ins = [t.sent_at for t in sent if t.step_id.startswith("check-in")]
    assert max(b - a for a, b in zip(check_ins, check_ins[1:], strict=False)) < timedelta(
        weeks=24)
    care = [t for t in sent if t.step_id != "thank-you"]
    gaps = [b.sent_at - a.sent_at for a, b in zip(care, care[1:], strict=False)]
    assert min(gaps) >= timedelta(weeks=6) - timedelta(hours=1)  # a light touch, never a flood

    # Only an unsubscribe (or a bounce) ends it, and the next round's touch is cancelled.
    [pending] = [t for t in all_touches(project) if t.state == "scheduled"]
    unsubscribe(project, "a@clinic.example")
    assert one_touch(project, pending.id).state == "cancelled"
    assert enrollments(project) == {("a@clinic.example", "partner-care"): ("stopped",
                                                                          "unsubscribe")}
    count = len(smtp_sink.messages)
    clock.advance(weeks=30)
    send_due(project)
    assert len(smtp_sink.messages) == count


LOOP = """\
id: loop
name: Repeats, stops on a reply
stop_on: [reply]
repeat_from: question
steps:
  - id: hello
    subject: "Hello"
    template: appreciation.mjml
  - id: question
    wait: 1 week
    subject: "A question"
    template: open-question.mjml
  - id: check-in
    wait: 1 week
    subject: "How are things?"
    template: check-in.mjml
"""


def test_later_rounds_are_paused_and_stopped_like_the_first(
        open_app: Callable[..., Nurture], tmp_path: Path, clock: FakeClock,
        smtp_sink: Any) -> None:
    """A touch of round 2 is a sequence touch: an out-of-office moves it, a reply cancels it."""
    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / "loop.yaml").write_text(LOOP)
    app = open_app(paths_campaigns=str(folder))
    add_contact(app, "a@clinic.example")
    enroll(app, "loop", emails=["a@clinic.example"])
    send_until(app, clock, clock.now() + timedelta(weeks=2, days=1))
    assert [(t.step_id, t.trigger_key, t.state) for t in all_touches(app)] == [
        ("hello", "", "sent"), ("question", "", "sent"), ("check-in", "", "sent"),
        ("question", "round-2", "scheduled")]  # round 2 starts at repeat_from, not at hello
    [pending] = [t for t in all_touches(app) if t.state == "scheduled"]
    until = pending.due_at + timedelta(days=10)
    with app.db.transaction() as session:
        contact = session.scalars(select(Contact)).one()
        assert pause_contact(app, session, contact, until) == 1
    assert one_touch(app, pending.id).due_at == until
    record_reply(app, "a@clinic.example")
    touch = one_touch(app, pending.id)
    assert (touch.state, touch.reason) == ("cancelled", "stopped by reply")
    assert enrollments(app) == {("a@clinic.example", "loop"): ("stopped", "reply")}


def test_resolve_resend_keeps_the_message_id_and_sent_moves_the_sequence_on(
        project: Nurture, clock: FakeClock, smtp_sink: Any) -> None:
    """`nurture resolve --resend` sends the same row again: the Message-ID of its key, the one
    the uncertain attempt carried, so a copy that did arrive is the same message. `--sent`
    records it and plans the next step."""
    add_contact(project, "a@clinic.example")
    add_contact(project, "b@clinic.example", first="Sam")
    enroll(project, "referral-outreach")
    dispatcher = RecordingDispatcher()
    tick(project, dispatcher)
    transport = Collect()
    by_email: dict[str, int] = {}
    for touch_id in dispatcher.touch_ids:
        transport.fail = UncertainDeliveryError("the server went away after DATA")
        assert deliver(project, [touch_id], transport).uncertain == [touch_id]
        by_email[one_touch(project, touch_id).enrollment.contact.email] = touch_id
    resent, confirmed = by_email["a@clinic.example"], by_email["b@clinic.example"]
    attempted = one_touch(project, resent).message_id
    assert attempted is not None and transport.messages == []

    resolve_touch(project, resent, sent=False)
    resolve_touch(project, confirmed, sent=True)
    assert send_due(project).sent == [resent]
    [message] = smtp_sink.messages
    touch = one_touch(project, resent)
    assert message["Message-ID"] == touch.message_id == attempted
    assert (touch.step_id, touch.trigger_key, touch.state) == ("hello", "", "sent")
    assert [(t.enrollment_id, t.step_id, t.trigger_key, t.state) for t in all_touches(project)
            if t.step_id == "question"] == [
        (one_touch(project, confirmed).enrollment_id, "question", "", "scheduled"),
        (touch.enrollment_id, "question", "", "scheduled")]
    with pytest.raises(NurtureError, match="only uncertain or failed touches"):
        resolve_touch(project, resent, sent=False)
