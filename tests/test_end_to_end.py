"""Four simulated weeks on real parts: contacts CSV → enrollment → ticks → RQ → SMTP.

The clock is the only fake. Every hour of the four weeks a real tick runs against the test
database and a real RQ worker (burst mode) sends what was queued to a real SMTP server. One
contact replies, another refers a patient, a third hears the sequence as planned, including a
follow-up sent as a reply in the thread of an earlier note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.engine import enroll
from nurture.inbound.inbox import record_reply
from nurture.intake.contacts import import_contacts
from nurture.intake.referrals import add_referral
from nurture.models import Enrollment, Touch
from nurture.report import status
from nurture.ticking import tick
from nurture.worker import jobs
from tests.conftest import make_settings

CSV = """email,first_name,last_name,organization,role,tags,interests,timezone
dr.lee@clinic.example,Dana,Lee,Springfield Family Medicine,physician,prospect,,America/New_York
sam@ironworks.example,Sam,Ortiz,Ironworks Gym,personal trainer,prospect;trainer,,America/Chicago
pat@greenplate.example,Pat,Kim,Green Plate Nutrition,nutritionist,prospect,,America/Los_Angeles
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Simulation:
    """Moves the clock hour by hour; at each hour a tick, then a burst worker if work was queued."""

    def __init__(self, app: Nurture, clock: FakeClock, connection: redis.Redis):
        self.app, self.clock, self.connection = app, clock, connection
        self.queue = Queue(app.settings.worker_queue, connection=connection)
        self.worker = SimpleWorker([self.queue], connection=connection)

    def step(self) -> None:
        report = tick(self.app, jobs.RQDispatcher(self.app, self.connection))
        if report.enqueued:
            jobs.bind(self.app)
            try:
                self.worker.work(burst=True)
            finally:
                jobs.bind(None)

    def run_until(self, end: datetime, events: dict[datetime, Callable[[], object]]) -> None:
        while self.clock.now() <= end:
            if self.clock.now() in events:
                events[self.clock.now()]()
            self.step()
            self.clock.advance(hours=1)


@pytest.fixture
def sim_app(tmp_path: Path, database_url: str, redis_url: str, smtp_sink: object):
    clock = FakeClock(utc(2026, 12, 7, 14))  # Monday 09:00 in New York
    settings = make_settings(tmp_path, database_url=database_url, redis_url=redis_url,
                             smtp_url=smtp_sink.url)  # type: ignore[attr-defined]
    app = Nurture.open(settings, clock)
    yield app, clock, redis.Redis.from_url(redis_url)
    app.close()


def test_four_weeks_reply_stops_referral_thanks(sim_app, smtp_sink, tmp_path: Path) -> None:
    app, clock, connection = sim_app
    csv = tmp_path / "sources.csv"
    csv.write_text(CSV)
    assert import_contacts(app.db, csv, clock).created == 3
    assert sorted(enroll(app, "referral-outreach").enrolled) == [
        "dr.lee@clinic.example", "pat@greenplate.example", "sam@ironworks.example"]

    events = {
        utc(2026, 12, 15, 15): lambda: record_reply(app, "dr.lee@clinic.example"),
        utc(2026, 12, 16, 20): lambda: add_referral(app, "sam@ironworks.example",
                                                    external_ref="EHR-1001"),
    }
    Simulation(app, clock, connection).run_until(utc(2027, 1, 4, 17), events)

    got = [(parsedate_to_datetime(m["Date"]).astimezone(UTC), m["To"], m["Subject"])
           for m in smtp_sink.messages]
    assert got == [
        (utc(2026, 12, 7, 14), "Dana Lee <dr.lee@clinic.example>",
         "Thank you for what you do at Springfield Family Medicine"),
        (utc(2026, 12, 7, 15), "Sam Ortiz <sam@ironworks.example>",
         "Thank you for what you do at Ironworks Gym"),
        (utc(2026, 12, 7, 17), "Pat Kim <pat@greenplate.example>",
         "Thank you for what you do at Green Plate Nutrition"),
        (utc(2026, 12, 14, 14), "Dana Lee <dr.lee@clinic.example>", "A question for you, Dana"),
        (utc(2026, 12, 14, 15), "Sam Ortiz <sam@ironworks.example>", "A question for you, Sam"),
        (utc(2026, 12, 14, 17), "Pat Kim <pat@greenplate.example>", "A question for you, Pat"),
        (utc(2026, 12, 16, 20), "Sam Ortiz <sam@ironworks.example>", "Thank you, Sam"),
        # The follow-up to the question is a reply in its thread, a week later.
        (utc(2026, 12, 21, 17), "Pat Kim <pat@greenplate.example>", "Re: A question for you, Pat"),
        (utc(2027, 1, 4, 17), "Pat Kim <pat@greenplate.example>",
         "Something I read that made me think of you"),
    ]
    # Each message went out once, with the Message-ID its row recorded.
    with app.db.transaction() as session:
        sent_ids = {t.message_id for t in session.query(Touch).filter_by(state="sent")}
        pats = {t.step_id: t.message_id for t in session.query(Touch).join(Touch.enrollment)
                .filter(Enrollment.contact.has(email="pat@greenplate.example"))}
        states = {(e.contact.email, e.campaign_id): (e.state, e.stop_reason)
                  for e in session.query(Enrollment)}
    assert {m["Message-ID"] for m in smtp_sink.messages} == sent_ids
    assert len(sent_ids) == 9
    # The threaded email cites the question's stored Message-ID; the others start no thread.
    by_id = {m["Message-ID"]: m for m in smtp_sink.messages}
    question, follow_up = by_id[pats["question"]], by_id[pats["question-follow-up"]]
    assert question["Subject"] == "A question for you, Pat"
    assert follow_up["In-Reply-To"] == follow_up["References"] == pats["question"]
    threaded = [m["Message-ID"] for m in smtp_sink.messages if "In-Reply-To" in m]
    assert threaded == [pats["question-follow-up"]]
    assert all("References" not in m for m in smtp_sink.messages if m is not follow_up)
    assert states == {
        ("dr.lee@clinic.example", "referral-outreach"): ("stopped", "reply"),
        ("sam@ironworks.example", "referral-outreach"): ("stopped", "referral"),
        ("sam@ironworks.example", "partner-care"): ("active", None),
        ("pat@greenplate.example", "referral-outreach"): ("active", None),
    }
    report = status(app)
    # Pat's check-in is next, two weeks after the article; Sam's partner-care starts in 6 weeks.
    assert [(line.email, line.step, line.at) for line in report.next] == [
        ("pat@greenplate.example", "check-in", utc(2027, 1, 18, 17)),
        ("sam@ironworks.example", "check-in-1", utc(2027, 1, 27, 20)),
    ]
    assert report.attention == []


def test_every_email_carries_footer_and_unsubscribe_headers(sim_app, smtp_sink,
                                                            tmp_path: Path) -> None:
    app, clock, connection = sim_app
    csv = tmp_path / "sources.csv"
    csv.write_text(CSV)
    import_contacts(app.db, csv, clock)
    enroll(app, "referral-outreach", emails=["dr.lee@clinic.example"])
    Simulation(app, clock, connection).step()
    (message,) = smtp_sink.messages
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://localhost:8000/u/")
    assert message["Message-ID"].endswith("@riverapt.example>")
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    for part in (html, text):
        assert "120 Main Street, Springfield, IL 62701" in part
        assert "/u/" in part
