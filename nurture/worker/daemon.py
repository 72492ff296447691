"""The worker daemon: an RQ worker, plus RQ's cron scheduler for the periodic tick.

``nurture worker`` (and ``python worker.py``) runs this. The RQ worker runs in this process; the
cron scheduler and RQ's scheduler run in child processes that die with it
(nurture.worker.schedulers).
SIGTERM or Ctrl-C lets the current job finish (RQ's warm shutdown), then stops the schedulers
and, if this command started one, the embedded Redis. Nothing outlives the command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from types import FrameType

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from ..app import Nurture
from ..errors import InputError
from ..inbound.imap import inbox_config
from ..outbound import activity
from ..outbound.transport import open_transport
from ..ticking import tick
from . import jobs
from .redis_server import EmbeddedRedis, connect
from .schedulers import start_schedulers

log = logging.getLogger(__name__)


def describe(app: Nurture, redis_description: str) -> str:
    """The start-up summary: what the worker uses, and where each setting came from."""
    settings = app.settings
    with open_transport(settings) as transport:
        mail = transport.name

    def origin(name: str) -> str:
        return f"  ({settings.source(name)})"

    return (f"database: {app.db.describe()}{origin('database_url')}\n"
            f"redis:    {redis_description}{origin('redis_url')}\n"
            f"mail:     {mail}{origin('smtp_url')}\nqueue:    {settings.worker_queue}, "
            f"tick every {settings.worker_tick_interval}s")


def run_tick(app: Nurture) -> dict[str, int]:
    """One tick by hand (``nurture tick``): enqueue what is due, then exit."""
    with connect(app.settings.redis_url, app.settings.state_dir) as (connection, _):
        return asdict(tick(app, jobs.RQDispatcher(app, connection)))


def run_worker(app: Nurture, *, burst: bool = False, echo: Callable[[str], None] = print,
               verbose: bool = False) -> bool:
    """Work until stopped (or, with ``burst``, until the queue is empty). Returns whether any job
    was processed.

    RQ's worker returns, rather than raising, when Redis goes away mid-job; unless a stop was
    asked for, the worker is built again and goes on, so a Redis restart never ends the daemon.
    """
    problems = app.settings.identity_problems()
    if problems:  # every email needs a sender and a postal address: refuse before queuing any
        raise InputError(problems)
    app.sync_campaigns()  # fails fast on invalid campaigns, before touching Redis
    rq_level = "INFO" if verbose else "WARNING"  # RQ's "job … result is kept …" lines
    app.db.analyze()
    # A daemon owns its embedded Redis: a borrowed one would stop when its owner's command ends.
    with activity.shown(echo), connect(app.settings.redis_url, app.settings.state_dir,
                                       own=not burst, on_wait=echo) as (connection, description):
        echo(describe(app, description))
        jobs.bind(app)
        queue = Queue(app.settings.worker_queue, connection=connection)
        try:
            if burst:
                _tick_now(app, connection)
                worker = SimpleWorker([queue], connection=connection)
                return worker.work(burst=True, with_scheduler=True, logging_level=rq_level)
            url = app.settings.redis_url or EmbeddedRedis(app.settings.state_dir).url
            inbox = inbox_config(app.settings)
            children = start_schedulers(url, app.settings.worker_queue,
                                        app.settings.worker_tick_interval,
                                        inbox.poll_interval if inbox.imap_url else 0)
            try:
                # What is due goes out now, not when the cron scheduler has started (a second
                # or more); if Redis is down, its periodic tick does it later.
                try:
                    _tick_now(app, connection)
                except RedisError:
                    log.exception("the first tick could not reach Redis")
                return _work_until_stopped(queue, connection, rq_level)
            finally:
                for child in children:
                    child.terminate()
                for child in children:
                    child.join(10)
                    if child.is_alive():
                        child.kill()
        finally:
            jobs.bind(None)


def _tick_now(app: Nurture, connection: Redis) -> None:
    activity.tick(app, tick(app, jobs.RQDispatcher(app, connection)))


class _Worker(SimpleWorker):
    """RQ's worker, remembering whether a stop was asked for (SIGTERM, Ctrl-C): its ``work()``
    returns the same way when Redis goes away, and only a requested stop ends the daemon."""

    stop_requested = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True  # RQ calls this on an idle and on a busy worker alike
        super().request_stop(signum, frame)


def _work_until_stopped(queue: Queue, connection: Redis, rq_level: str) -> bool:
    worked = False
    while True:
        worker = _Worker([queue], connection=connection)
        # RQ's scheduler (for Retry's delays) runs in a spawned child: see
        # nurture.worker.schedulers.
        try:
            worked = worker.work(with_scheduler=False, logging_level=rq_level) or worked
        except (RedisError, OSError, ValueError):  # RQ's own clean-up can raise while Redis
            log.exception("the worker lost Redis")  # is down; ValueError: a socket redis-py closed
        if worker.stop_requested:  # a busy worker finished its job first
            return worked
        log.warning("the worker stopped after a Redis error; starting again in 2 s")
        connection.connection_pool.disconnect()  # drop sockets to the old server
        time.sleep(2)
