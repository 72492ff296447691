"""The RQ side of the tick: one tick per interval however many workers, and lost-job checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.engine import enroll
from nurture.intake.contacts import import_contacts
from nurture.worker import jobs


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
    """Waiting: queued and in the queue's list, or scheduled for a retry. Everything else is
    lost: missing, over, taken off the list by a worker killed before it ran the job, or
    started by a worker that died before the job leased its rows."""
    dispatcher = jobs.RQDispatcher(app, connection)
    queue = Queue(app.settings.worker_queue, connection=connection)
    dispatcher.enqueue("done", [])
    jobs.bind(app)
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        jobs.bind(None)
    assert Job.fetch("done", connection=connection).get_status() == "finished"
    for job_id in ("waiting", "taken", "stuck", "retrying"):
        dispatcher.enqueue(job_id, [])
    connection.lrem(queue.key, 0, "taken")  # what a worker's dequeue does, then it was killed
    connection.lrem(queue.key, 0, "stuck")
    Job.fetch("stuck", connection=connection).set_status(JobStatus.STARTED)
    connection.lrem(queue.key, 0, "retrying")
    Job.fetch("retrying", connection=connection).set_status(JobStatus.SCHEDULED)
    ids = ["waiting", "done", "never-existed", "taken", "stuck", "retrying"]
    assert dispatcher.lost(ids, unleased=ids) == {
        "done", "never-existed", "taken", "stuck"}
    # A started job that leased its rows is running: not lost.
    assert dispatcher.lost(ids, unleased=set(ids) - {"stuck"}) == {"done", "never-existed", "taken"}
    assert dispatcher.lost([]) == set()


def test_job_taken_by_a_worker_killed_before_it_began_is_queued_again(
        app: Nurture, clock: FakeClock, connection: redis.Redis) -> None:
    """The worker took the job off the queue and died before the job leased its rows: the
    first tick after the grace plans them again, and each is sent once."""
    from datetime import timedelta

    from nurture.models import Touch
    from nurture.ticking import tick

    add_contacts(app, 2)
    enroll(app, "referral-outreach")
    dispatcher = jobs.RQDispatcher(app, connection)
    assert tick(app, dispatcher).enqueued == 2
    queue = Queue(app.settings.worker_queue, connection=connection)
    (job_id,) = queue.job_ids
    connection.lrem(queue.key, 0, job_id)  # dequeued...
    Job.fetch(job_id, connection=connection).set_status(JobStatus.STARTED)  # ...and killed
    clock.advance(seconds=app.settings.worker_requeue_grace - 1)
    assert tick(app, dispatcher).requeued == 0  # within the grace: left alone
    clock.advance(timedelta(seconds=2))
    report = tick(app, dispatcher)
    assert (report.requeued, report.enqueued) == (2, 2)
    jobs.bind(app)
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        jobs.bind(None)
    with app.db.transaction() as session:
        states = sorted(t.state for t in session.query(Touch).filter(Touch.step_id == "hello"))
    assert states == ["sent", "sent"]
    assert len(list(app.settings.outbox_dir.glob("*.eml"))) == 2
