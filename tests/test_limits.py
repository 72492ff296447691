"""Per-mailbox caps: at most N a day and a minimum spacing; excess waits, nothing is dropped."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.engine import enroll
from nurture.intake.contacts import import_contacts
from nurture.models import Touch
from nurture.outbound.sending import deliver
from nurture.outbound.transport import OutboxTransport
from nurture.ticking import tick
from tests.conftest import make_settings
from tests.seeding import RecordingDispatcher


def project(tmp_path: Path, database_url: str, clock: FakeClock, contacts: int, **limits: int
            ) -> Nurture:
    app = Nurture.open(make_settings(tmp_path, database_url=database_url, **limits), clock)
    csv = tmp_path / "c.csv"
    csv.write_text("email,first_name,organization,tags,timezone\n" + "".join(
        f"c{i}@x.example,C{i},Org {i},prospect,America/New_York\n" for i in range(contacts)))
    import_contacts(app.db, csv, clock)
    enroll(app, "referral-outreach")
    return app


def run_once(app: Nurture, tmp_path: Path) -> list[int]:
    queued = RecordingDispatcher()
    tick(app, queued)
    with OutboxTransport(tmp_path / "out") as transport:
        return deliver(app, queued.ids, transport).sent


def states(app: Nurture) -> dict[str, tuple[str, datetime]]:
    with app.db.transaction() as session:
        return {t.enrollment.contact.email: (t.state, t.due_at)
                for t in session.scalars(select(Touch).where(Touch.step_id == "hello"))}


def test_daily_cap_defers_the_rest_to_the_next_day(tmp_path: Path, database_url: str,
                                                   clock: FakeClock) -> None:
    """Three due, a cap of two: two go today, the third tomorrow when the window opens."""
    app = project(tmp_path, database_url, clock, 3, limits_per_day=2)
    assert len(run_once(app, tmp_path)) == 2
    waiting = [(s, due) for s, due in states(app).values() if s == "scheduled"]
    assert waiting == [("scheduled", datetime(2026, 12, 8, 14, 0, tzinfo=UTC))]  # 09:00 NY
    assert run_once(app, tmp_path) == []  # still today: nothing more
    clock.set(datetime(2026, 12, 8, 14, 0, tzinfo=UTC))
    assert len(run_once(app, tmp_path)) == 1
    assert len(list((tmp_path / "out").glob("*.eml"))) == 3
    app.close()


def test_spacing_between_sends(tmp_path: Path, database_url: str, clock: FakeClock) -> None:
    """With 90 s spacing, two due sends go 90 s apart."""
    app = project(tmp_path, database_url, clock, 2, limits_spacing=90)
    assert len(run_once(app, tmp_path)) == 1
    clock.advance(seconds=89)
    assert run_once(app, tmp_path) == []
    clock.advance(seconds=1)
    assert len(run_once(app, tmp_path)) == 1
    app.close()


def test_cap_holds_across_concurrent_workers(tmp_path: Path, database_url: str,
                                             clock: FakeClock) -> None:
    """Four workers claiming at once never exceed the cap."""
    app = project(tmp_path, database_url, clock, 12, limits_per_day=5)
    queued = RecordingDispatcher()
    tick(app, queued)
    workers = [Nurture.open(app.settings, clock) for _ in range(4)]
    sent: list[int] = []
    barrier = threading.Barrier(4)

    def work(index: int) -> None:
        barrier.wait()
        with OutboxTransport(tmp_path / "out") as transport:
            sent.extend(deliver(workers[index], queued.ids[index::4], transport).sent)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sent) == 5
    assert sorted(s for s, _ in states(app).values()).count("scheduled") == 7
    for worker in workers:
        worker.close()
    app.close()
