"""The worker daemon: an RQ worker, plus RQ's cron scheduler for the periodic tick.

``nurture worker`` (and ``python worker.py``) runs this. The RQ worker runs in this process; the
cron scheduler runs in a child process that dies with its parent. SIGTERM or Ctrl-C lets the
current job finish (RQ's warm shutdown), then stops the scheduler and, if this command started
one, the embedded Redis. Nothing outlives the command.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import asdict

from redis import Redis
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler

from . import jobs
from .app import Nurture
from .delivery import open_transport
from .engine import tick
from .errors import InputError
from .redis_server import EmbeddedRedis, connect, die_with_parent

log = logging.getLogger(__name__)


def describe(app: Nurture, redis_description: str) -> str:
    settings = app.settings
    with open_transport(settings.smtp_url, settings.outbox_dir) as transport:
        mail = transport.name
    return (f"database: {app.db.describe()}\nredis:    {redis_description}\n"
            f"mail:     {mail}\nqueue:    {settings.worker_queue}, tick every "
            f"{settings.worker_tick_interval}s")


def run_tick(app: Nurture) -> dict[str, int]:
    """One tick by hand (``nurture tick``): enqueue what is due, then exit."""
    with connect(app.settings.redis_url, app.settings.state_dir) as (connection, _):
        return asdict(tick(app, jobs.RQDispatcher(app, connection)))


def run_worker(app: Nurture, *, burst: bool = False,
               echo: Callable[[str], None] = print) -> bool:
    """Work until stopped (or, with ``burst``, until the queue is empty). Returns whether any job
    was processed."""
    problems = app.settings.identity_problems()
    if problems:  # every email needs a sender and a postal address: refuse before queuing any
        raise InputError(problems)
    app.sync_campaigns()  # fails fast on invalid campaigns, before touching Redis
    with connect(app.settings.redis_url, app.settings.state_dir) as (connection, description):
        echo(describe(app, description))
        jobs.bind(app)
        queue = Queue(app.settings.worker_queue, connection=connection)
        worker = SimpleWorker([queue], connection=connection)
        try:
            if burst:
                report = tick(app, jobs.RQDispatcher(app, connection))
                echo(f"tick: {report.enqueued} touches in {report.jobs} jobs")
                return worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            url = app.settings.redis_url or EmbeddedRedis(app.settings.state_dir).url
            cron = _start_cron(url, app.settings.worker_queue, app.settings.worker_tick_interval)
            try:
                return worker.work(with_scheduler=True, logging_level="INFO")
            finally:
                cron.terminate()
                cron.join(10)
                if cron.is_alive():
                    cron.kill()
        finally:
            jobs.bind(None)


def _start_cron(redis_url: str, queue: str, interval: int) -> multiprocessing.Process:
    proc = multiprocessing.get_context("spawn").Process(
        target=_cron_main, args=(os.getpid(), redis_url, queue, interval), name="nurture-cron",
        daemon=True)
    proc.start()
    return proc


def _cron_main(parent: int, redis_url: str, queue: str, interval: int) -> None:
    die_with_parent(parent)
    scheduler = CronScheduler(connection=Redis.from_url(redis_url), logging_level="WARNING")
    scheduler.register(jobs.tick_job, queue_name=queue, interval=interval, job_timeout=600)
    scheduler.start()
