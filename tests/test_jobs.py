"""The RQ side of the tick: one tick per interval however many workers, and lost-job checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from nurture import jobs
from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.contacts import import_contacts
from nurture.engine import enroll


@pytest.fixture(name="connection")
def connection_fixture(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def add_contacts(app: Nurture, count: int) -> None:
    path = app.settings.project_dir / "contacts.csv"
    path.write_text("email,first_name,tags\n" + "".join(
        f"c{n}@clinic.example,Dana,prospect\n" for n in range(count)))
    import_contacts(app.db, path, app.clock)


def run_ticks(app: Nurture, connection: redis.Redis, count: int) -> list[dict[str, Any]]:
    """Enqueue ``count`` tick jobs, as ``count`` workers' cron schedulers would, and work them."""
    queue = Queue(app.settings.worker_queue, connection=connection)
    queued = [queue.enqueue(jobs.tick_job) for _ in range(count)]
    jobs.bind(app)
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        jobs.bind(None)
    return [job.return_value(refresh=True) for job in queued]


def test_many_workers_tick_once_per_interval(app: Nurture, clock: FakeClock,
                                             connection: redis.Redis) -> None:
    add_contacts(app, 3)
    enroll(app, "referral-outreach")
    first = run_ticks(app, connection, 3)
    ticked = [r for r in first if "skipped" not in r]
    assert len(ticked) == 1 and ticked[0]["enqueued"] == 3
    assert [r["skipped"] for r in first if "skipped" in r] == [
        "another worker already ticked in this interval"] * 2
    clock.advance(seconds=app.settings.worker_tick_interval)  # the next interval ticks again
    (again,) = run_ticks(app, connection, 1)
    assert again["enqueued"] == 0 and "skipped" not in again  # it ran; nothing new is due


def test_lost_asks_redis_about_every_job_at_once(app: Nurture, connection: redis.Redis) -> None:
    """Missing from Redis or over: lost. Still waiting in the queue: not lost."""
    dispatcher = jobs.RQDispatcher(app, connection)
    dispatcher.enqueue("waiting", [])
    dispatcher.enqueue("done", [])
    queue = Queue(app.settings.worker_queue, connection=connection)
    queue.remove("waiting")  # leave "waiting" out of the burst below, but keep its job hash
    jobs.bind(app)
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        jobs.bind(None)
    assert Job.fetch("done", connection=connection).get_status() == "finished"
    assert Job.fetch("waiting", connection=connection).get_status() == "queued"
    assert dispatcher.lost(["waiting", "done", "never-existed"]) == {"done", "never-existed"}
    assert dispatcher.lost([]) == set()
