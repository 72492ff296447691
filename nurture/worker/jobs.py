"""The RQ job functions, and the one place that talks to RQ.

Jobs carry only touch ids: the rows in the database say what to send. A job that finds its rows
already sent or claimed does nothing, so a job run twice, or a job re-enqueued after Redis lost
it, is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus

from ..app import Nurture
from ..inbound.imap import poll
from ..outbound import activity
from ..outbound.sending import deliver
from ..outbound.transport import TransientDeliveryError, open_transport
from ..ticking import tick

log = logging.getLogger(__name__)

_app: Nurture | None = None


def bind(app: Nurture | None) -> None:
    """Make ``app`` the project the jobs of this process work on (the worker does this)."""
    global _app
    _app = app


def current_app() -> Nurture:
    if _app is None:
        raise RuntimeError(
            "no nurture project is bound to this worker (call nurture.worker.jobs.bind)")
    return _app


def retry_policy(app: Nurture) -> Retry:
    return Retry(max=app.settings.worker_max_attempts - 1,
                 interval=app.settings.retry_intervals or 0)


class RQDispatcher:
    """Hands batches of due touches to RQ, and tells the tick which jobs Redis has lost."""

    def __init__(self, app: Nurture, connection: Redis):
        self.app = app
        self.connection = connection
        self.queue = Queue(app.settings.worker_queue, connection=connection)

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        self.queue.enqueue(send_touches, touch_ids, job_id=job_id, retry=retry_policy(self.app),
                           job_timeout=120 + 10 * len(touch_ids), result_ttl=3600,
                           failure_ttl=7 * 86400, description=f"send {len(touch_ids)} touches")

    def lost(self, job_ids: Sequence[str], unleased: Collection[str] = ()) -> set[str]:
        """One round trip for all of them. A job is waiting while it is queued *and* still in
        the queue's list, or scheduled or deferred (an RQ retry, a dependency), or started and
        leasing its rows. Anything else has no worker coming for it: missing from Redis, over,
        taken off the list by a worker killed before it started the job (its status still says
        queued), or started without ever leasing its rows (``unleased``: the worker died before
        the job began; RQ would notice only minutes later). Calling a job that is about to run
        lost is harmless: its rows are planned again, and its claims, which must match its id,
        then find nothing."""
        queue_key = self.queue.key
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Job.key_for(job_id), "status")
                pipe.lpos(queue_key, job_id)
            answers = pipe.execute()
        lost = set()
        for job_id, status, position in zip(job_ids, answers[::2], answers[1::2], strict=True):
            state = status.decode() if status is not None else None
            waiting = ((state == JobStatus.QUEUED.value and position is not None)
                       or state in (JobStatus.SCHEDULED.value, JobStatus.DEFERRED.value)
                       or (state == JobStatus.STARTED.value and job_id not in unleased))
            if not waiting:
                lost.add(job_id)
        return lost


def tick_job() -> dict[str, Any]:
    """The periodic tick, enqueued by RQ's cron scheduler inside `nurture worker`.

    Every worker process runs a cron scheduler, so N workers would tick N times per interval.
    Ticks are idempotent, so that is only wasted database work: the first tick of each interval
    (by the project's clock) takes a short Redis lock and the others return at once. The lock
    expires by itself, so a worker killed mid-tick holds up nobody.
    """
    from rq import get_current_job

    job = get_current_job()
    connection = job.connection if job is not None else None
    app = current_app()
    if connection is None:
        raise RuntimeError("tick_job must run inside an RQ worker")
    interval = app.settings.worker_tick_interval
    slot = int(app.now().timestamp() // interval)
    key = f"nurture:tick:{app.settings.worker_queue}:{slot}"
    if not connection.set(key, job.id if job is not None else "", nx=True, ex=interval):
        return {"skipped": "another worker already ticked in this interval"}
    report = tick(app, RQDispatcher(app, connection))
    activity.tick(app, report)
    return asdict(report)


def send_touches(touch_ids: list[int]) -> dict[str, Any]:
    """Send a batch of touches over one reused connection.

    If any hit a temporary SMTP error, they are put back in the queued state and the job fails,
    so RQ's ``Retry`` runs it again later; the rows already sent are skipped on that run.
    """
    from rq import get_current_job

    app = current_app()
    settings = app.settings
    job = get_current_job()
    with open_transport(settings) as transport:
        report = deliver(app, touch_ids, transport, job.id if job is not None else None)
    if report.retry:
        raise TransientDeliveryError(f"temporary failure for touches {report.retry}")
    return asdict(report)


def inbox_job() -> dict[str, Any]:
    """The periodic poll of the sender mailbox, enqueued by RQ's cron scheduler inside
    `nurture worker`."""
    report = poll(current_app())
    log.info("%s", report.summary())
    return asdict(report)
