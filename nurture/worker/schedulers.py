"""The worker daemon's two child processes: RQ's cron scheduler and RQ's scheduler.

The cron scheduler enqueues the periodic tick (and the inbox poll); RQ's scheduler moves the jobs
that ``Retry`` delayed back onto the queue. Each runs in a spawned child, not a forked one: a fork
would inherit the daemon's database connections and, if the daemon were killed, hold its open
claim's locks for ever. A spawned child imports what it runs, so this module imports only redis
and rq: a child is up in about 0.2 s instead of 0.9 s, on every (re)start of the worker. The
jobs are enqueued by name; the worker that runs them imports them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.cron import CronScheduler
from rq.scheduler import RQScheduler

from .redis_server import die_with_parent

log = logging.getLogger(__name__)

TICK_JOB = "nurture.worker.jobs.tick_job"
INBOX_JOB = "nurture.worker.jobs.inbox_job"


def start_schedulers(redis_url: str, queue: str, interval: int,
                     inbox_every: int) -> list[BaseProcess]:
    """Start both children; they die with this process. ``inbox_every`` 0: no inbox poll."""
    spawn = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = [
        spawn.Process(target=_child_main, name=f"nurture-{role}", daemon=True,
                      args=(os.getpid(), redis_url, role, queue, interval, inbox_every))
        for role in ("cron", "scheduler")]
    for child in children:
        child.start()
    return children


def by_name(path: str) -> Callable[[], Any]:
    """A stand-in for the function at ``path`` (module.function) that RQ enqueues under that
    name: RQ records only the name, so the module need not be imported here."""
    module, _, name = path.rpartition(".")

    def stand_in() -> Any:
        raise RuntimeError(f"{path} runs in the worker, which imports it")

    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module, name, name
    return stand_in


def _child_main(parent: int, redis_url: str, role: str, queue: str, interval: int,
                inbox_every: int) -> None:
    """RQ's cron scheduler (the periodic tick and inbox poll) or RQ's scheduler (delayed retries).

    Each dies with the daemon, and starts again by itself after a Redis outage.
    """
    die_with_parent(parent)
    while os.getppid() == parent:  # a restart below must never outlive the daemon
        try:
            connection = Redis.from_url(redis_url)
            if role == "cron":
                cron = CronScheduler(connection=connection, logging_level="WARNING")
                cron.register(by_name(TICK_JOB), queue_name=queue, interval=interval,
                              job_timeout=600)
                if inbox_every:
                    cron.register(by_name(INBOX_JOB), queue_name=queue, interval=inbox_every,
                                  job_timeout=900)
                cron.start()  # returns when asked to stop
            else:
                scheduler = RQScheduler([queue], connection=connection, logging_level="WARNING")
                scheduler.acquire_locks()
                scheduler.work()  # returns when asked to stop
            return
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("nurture-%s lost Redis; trying again in 2 s", role)
            time.sleep(2)
        except Exception:  # noqa: BLE001 - e.g. redis-py's "I/O operation on closed file"
            # after an outage: a child that died would leave the worker without ticks for good.
            log.exception("nurture-%s failed; starting it again in 2 s", role)
            time.sleep(2)
