"""The tick: find what is due and hand it to RQ, and repair what a crash or Redis lost.

Run every ``tick_interval`` seconds by the worker (and by ``nurture tick``). Weeks-long waits
live in the database, never in Redis: the tick reads due rows through an index, in batches,
marks them ``queued`` with a job id, commits, and only then enqueues the job. Rows queued
under a job Redis no longer has are queued again; claims whose worker died are recovered
(:func:`recover_expired_claims`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update

from .app import Nurture
from .engine import log_event
from .models import CampaignRow, Enrollment, Touch, TouchState

MAX_BATCHES_PER_TICK = 200


class Dispatcher(Protocol):
    """Where the tick hands work to: RQ in production (:mod:`nurture.worker.jobs`)."""

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None: ...

    def lost(self, job_ids: Sequence[str], unleased: Collection[str] = ()) -> set[str]:
        """The ids among ``job_ids`` that will not run: missing from Redis, over, or taken by a
        worker that died before it began. A job in ``unleased`` never leased its rows (see
        :func:`nurture.outbound.sending.deliver`), so if it counts as started it got stuck before it
        could send anything."""
        ...


@dataclass
class TickReport:
    enqueued: int = 0
    jobs: int = 0
    requeued: int = 0  # queued rows whose job Redis lost, planned again
    failed: int = 0  # rows that ran out of attempts
    uncertain: int = 0  # claimed rows whose worker died; never resent blindly


def tick(app: Nurture, dispatcher: Dispatcher) -> TickReport:
    """Find what is due and hand it to the dispatcher, in batches; repair what was lost.

    Idempotent: running it twice, or in two processes at once, queues each row once.
    """
    report = TickReport()
    now = app.now()
    report.uncertain = recover_expired_claims(app, now)
    _requeue_lost(app, dispatcher, now, report)
    batch = app.settings.worker_batch_size
    with app.db.transaction() as session:
        paused = session.scalars(select(CampaignRow.id).where(CampaignRow.paused)).all()
    due_now = select(Touch.id).where(Touch.state == TouchState.SCHEDULED, Touch.due_at <= now)
    if paused:  # their touches wait, scheduled, until the campaign is resumed
        due_now = due_now.where(Touch.enrollment_id.not_in(
            select(Enrollment.id).where(Enrollment.campaign_id.in_(paused))))
    for _ in range(MAX_BATCHES_PER_TICK):
        job_id = uuid.uuid4().hex
        queued_at = app.now()  # per batch: the requeue grace counts from the commit, not the tick
        with app.db.transaction() as session:
            due = session.scalars(due_now.order_by(Touch.due_at, Touch.id).limit(batch)).all()
            if not due:
                break
            claimed = session.scalars(
                update(Touch).where(Touch.id.in_(due), Touch.state == TouchState.SCHEDULED)
                .values(state=TouchState.QUEUED, job_id=job_id, queued_at=queued_at,
                        lease_until=None)
                .returning(Touch.id)).all()
        if claimed:
            dispatcher.enqueue(job_id, sorted(claimed))  # after commit: the row is the truth
            report.enqueued += len(claimed)
            report.jobs += 1
        if len(due) < batch:
            break
    return report


def recover_expired_claims(app: Nurture, now: datetime) -> int:
    """Claims whose lease ran out: their worker died. Returns how many became ``uncertain``.

    A row still ``sending`` never reached the mail server (the worker marks it
    ``transmitting`` first, see :mod:`nurture.outbound.sending`), so it is planned again, its
    attempt counted, and failed once it has had its attempts. A row ``transmitting`` may have
    been delivered, so it is neither resent nor dropped: it becomes ``uncertain``, which
    ``nurture status`` lists and ``nurture resolve`` settles.
    """
    limit = app.settings.worker_max_attempts
    expired = (update(Touch).where(Touch.lease_until < now)
               .values(job_id=None, lease_until=None).returning(Touch.id, Touch.enrollment_id))
    with app.db.transaction() as session:
        again = session.execute(expired.where(
            Touch.state == TouchState.SENDING, Touch.attempts < limit).values(
            state=TouchState.SCHEDULED,
            reason="the worker stopped before sending it; it is sent again")).all()
        gave_up = session.execute(expired.where(Touch.state == TouchState.SENDING).values(
            state=TouchState.FAILED, reason=f"gave up after {limit} attempts")).all()
        uncertain = session.execute(expired.where(Touch.state == TouchState.TRANSMITTING).values(
            state=TouchState.UNCERTAIN,
            reason="the worker stopped while handing it to the mail server; "
                   "it may have been sent")).all()
        for kind, rows in (("touch_requeued", again), ("touch_failed", gave_up),
                           ("touch_uncertain", uncertain)):
            for touch_id, enrollment_id in rows:
                log_event(session, now, kind, touch_id=touch_id, enrollment_id=enrollment_id)
    return len(uncertain)


def _requeue_lost(app: Nurture, dispatcher: Dispatcher, now: datetime,
                  report: TickReport) -> None:
    # Only rows queued a while ago: a tick must not race another tick that has committed its
    # rows but not yet pushed the job to Redis.
    grace = timedelta(seconds=app.settings.worker_requeue_grace)
    with app.db.transaction() as session:
        jobs = session.execute(select(Touch.job_id, Touch.lease_until.is_(None)).distinct().where(
            Touch.state == TouchState.QUEUED, Touch.queued_at < now - grace)).all()
        # A job that started keeps a lease on its rows (nurture.outbound.sending.deliver leases
        # them as
        # it begins): once it runs out, its worker is gone, whatever Redis says about the job.
        expired = set(session.scalars(select(Touch.job_id).distinct().where(
            Touch.state == TouchState.QUEUED, Touch.lease_until < now)).all())
    job_ids = sorted({job_id for job_id, _ in jobs if job_id})
    unleased = {job_id for job_id, no_lease in jobs if job_id and no_lease}
    lost = dispatcher.lost(job_ids, unleased) if job_ids else set()
    lost |= {j for j in expired if j}
    limit = app.settings.worker_max_attempts
    for job_id in sorted(lost):
        with app.db.transaction() as session:
            base = update(Touch).where(Touch.state == TouchState.QUEUED, Touch.job_id == job_id)
            again = session.scalars(base.where(Touch.attempts < limit).values(
                state=TouchState.SCHEDULED, job_id=None, lease_until=None)
                .returning(Touch.id)).all()
            gave_up = session.scalars(base.where(Touch.attempts >= limit).values(
                state=TouchState.FAILED, reason=f"gave up after {limit} attempts")
                .returning(Touch.id)).all()
            for touch_id in gave_up:
                log_event(session, now, "touch_failed", touch_id=touch_id, why="attempts")
        report.requeued += len(again)
        report.failed += len(gave_up)
