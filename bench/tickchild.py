"""One tick measurement in a fresh process: ``python -m bench.tickchild CONFIG_JSON``.

The process imports nurture, opens the project and runs one *warm-up* tick with the clock a year
back (nothing is due then), so connections are open and SQL statements compiled, as in a
long-running worker. Then, with the clock at ``now``, it runs the measured tick and prints one
JSON line: its wall time, the growth of the process's peak RSS (``ru_maxrss``) during it, and
with ``tracemalloc`` the peak of Python allocations.

Modes: ``noop`` (a dispatcher that drops the batches), ``rq`` (the real RQDispatcher on Redis,
timing its calls), ``drain`` (noop ticks until nothing is due), ``inflight`` (an RQ tick, then a
second tick 31 s later that checks the jobs in flight), ``send`` (a tick, then the send path for
``send`` touches with a transport that discards the messages).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any


class NoopDispatcher:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.keep = False

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        if self.keep:
            self.batches.append(touch_ids)

    def lost(self, job_ids: Sequence[str], unleased: object = ()) -> set[str]:
        return set()


class Timing:
    """Wraps a dispatcher and adds up the time spent in its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.enqueue_s, self.lost_s, self.enqueues, self.checked = inner, 0.0, 0.0, 0, 0

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        t = time.perf_counter()
        self.inner.enqueue(job_id, touch_ids)
        self.enqueue_s += time.perf_counter() - t
        self.enqueues += 1

    def lost(self, job_ids: Sequence[str], unleased: object = ()) -> set[str]:
        t = time.perf_counter()
        try:
            return self.inner.lost(job_ids, unleased)
        finally:
            self.lost_s += time.perf_counter() - t
            self.checked += len(job_ids)


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    config = json.loads(sys.argv[1])
    from nurture.app import Nurture
    from nurture.clock import FakeClock
    from nurture.engine import tick

    from .common import make_settings

    now = datetime.fromisoformat(config["now"])
    clock = FakeClock(now - timedelta(days=365))
    app = Nurture.open(make_settings(config["settings"]), clock)
    mode = config["mode"]
    out: dict[str, Any] = {"mode": mode}

    t = time.perf_counter()
    tick(app, NoopDispatcher())  # warm-up: nothing is due a year ago
    out["cold_empty_ms"] = 1000 * (time.perf_counter() - t)
    clock.set(now)

    if mode in ("rq", "inflight"):
        from redis import Redis

        from nurture.worker.jobs import RQDispatcher

        connection = Redis.from_url(config["settings"]["redis_url"])
        dispatcher: Any = Timing(RQDispatcher(app, connection))
    else:
        dispatcher = Timing(NoopDispatcher())
        dispatcher.inner.keep = mode == "send"

    if config.get("tracemalloc"):
        tracemalloc.start()
    rss0 = maxrss_kb()
    t = time.perf_counter()
    report = tick(app, dispatcher)
    out["tick_ms"] = 1000 * (time.perf_counter() - t)
    out["rss_growth_kb"] = maxrss_kb() - rss0
    out["rss_kb"] = maxrss_kb()
    if config.get("tracemalloc"):
        out["tracemalloc_peak_kb"] = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
    out.update(enqueued=report.enqueued, jobs=report.jobs, requeued=report.requeued,
               enqueue_ms=1000 * dispatcher.enqueue_s, lost_ms=1000 * dispatcher.lost_s)

    if mode == "drain":
        ticks, total = [out["tick_ms"]], report.enqueued
        budget = config.get("drain_budget_s", 90) * 1000
        while report.enqueued and sum(ticks) < budget:
            t = time.perf_counter()
            report = tick(app, dispatcher)
            ticks.append(1000 * (time.perf_counter() - t))
            total += report.enqueued
        done = report.enqueued == 0
        out.update(ticks=len(ticks) - 1 if done else len(ticks), total_enqueued=total,
                   drain_ms=sum(ticks), tick_ms_each=ticks, complete=done)
    elif mode == "inflight":
        grace = getattr(app.settings, "worker_requeue_grace", 30)
        clock.set(now + timedelta(seconds=grace + 1))
        dispatcher.lost_s = dispatcher.enqueue_s = 0.0
        t = time.perf_counter()
        again = tick(app, dispatcher)
        out.update(inflight_tick_ms=1000 * (time.perf_counter() - t), inflight_jobs=report.jobs,
                   inflight_checked=dispatcher.checked, inflight_lost_ms=1000 * dispatcher.lost_s,
                   inflight_requeued=again.requeued, inflight_enqueued=again.enqueued)
        out.update(pipelined_lost(app, dispatcher.inner))
    elif mode == "send":
        out.update(send_timing(app, dispatcher.inner.batches, config["send"]))
    app.close()
    print(json.dumps(out))


def pipelined_lost(app: Any, dispatcher: Any) -> dict[str, Any]:
    """The same question as ``RQDispatcher.lost`` for the jobs in flight, asked the cheap way:
    one pipelined ``HGET rq:job:<id> status`` per job, one round trip in all."""
    from sqlalchemy import select

    from nurture.models import Touch

    with app.db.transaction() as session:
        ids = [j for j in session.scalars(select(Touch.job_id).distinct().where(
            Touch.state == "queued")).all() if j]
    t = time.perf_counter()
    slow = dispatcher.lost(ids)
    slow_ms = 1000 * (time.perf_counter() - t)
    over = {"finished", "failed", "stopped", "canceled"}
    t = time.perf_counter()
    with dispatcher.connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = pipe.execute()
    fast = {j for j, s in zip(ids, statuses, strict=True)
            if s is None or s.decode() in over}
    fast_ms = 1000 * (time.perf_counter() - t)
    return {"lost_jobs_checked": len(ids), "lost_fetch_ms": slow_ms,
            "lost_pipelined_ms": fast_ms, "lost_agree": slow == fast}


def send_timing(app: Any, batches: list[list[int]], count: int) -> dict[str, Any]:
    """The send path on this database, with a transport that serializes and drops messages."""
    import email.policy

    from nurture.outbound.sending import deliver
    from nurture.outbound.transport import Transport

    class Discard(Transport):
        name = "discard"

        def send(self, message: Any) -> None:
            message.as_bytes(policy=email.policy.SMTP)

    ids = [i for b in batches for i in b][: count + 1]
    deliver(app, ids[:1], Discard())  # warm: MJML compile
    t, cpu = time.perf_counter(), time.process_time()
    report = deliver(app, ids[1:], Discard())
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    n = len(report.sent)
    return {"send_n": n, "send_ms_each": 1000 * seconds / max(1, n),
            "send_cpu_ms_each": 1000 * cpu / max(1, n)}


if __name__ == "__main__":
    main()
