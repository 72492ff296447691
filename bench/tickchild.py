"""Ticks in a fresh process, as a worker runs them: ``python -m bench.tickchild CONFIG_JSON``.

The process opens the project, runs ``Database.analyze()`` as ``nurture worker`` does at start,
and one *warm-up* tick with the clock a year back (nothing is due then), so that the connection
is open and the statements compiled, as in a long-running worker. Then, with the clock at
``now``, it runs ``repeat`` measured ticks and prints one JSON line: each tick's milliseconds and
what the first one queued. With ``rq`` the ticks hand their batches to the real
``RQDispatcher``, and the time spent in its ``enqueue`` calls is reported too; otherwise the
batches are dropped.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any


class Timed:
    """A dispatcher wrapped to add up the time spent in its ``enqueue`` calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        t = time.perf_counter()
        self.inner.enqueue(job_id, touch_ids)
        self.seconds += time.perf_counter() - t

    def lost(self, job_ids: Any, unleased: Any = ()) -> set[str]:
        return self.inner.lost(job_ids, unleased)


def main() -> None:
    config = json.loads(sys.argv[1])
    from nurture.clock import FakeClock
    from nurture.ticking import tick

    from .common import Collect, open_app

    now = datetime.fromisoformat(config["now"])
    clock = FakeClock(now - timedelta(days=365))
    app = open_app(config["settings"], clock)
    app.db.analyze()
    t = time.perf_counter()
    tick(app, Collect(keep=False))
    cold_ms = 1000 * (time.perf_counter() - t)
    clock.set(now)
    if config.get("rq"):
        from redis import Redis

        from nurture.worker.jobs import RQDispatcher

        dispatcher = Timed(RQDispatcher(app, Redis.from_url(config["settings"]["redis_url"])))
    else:
        dispatcher = Timed(Collect(keep=False))
    ticks, first = [], None
    for _ in range(config.get("repeat", 1)):
        t = time.perf_counter()
        report = tick(app, dispatcher)
        ticks.append(1000 * (time.perf_counter() - t))
        first = first or report
    app.close()
    assert first is not None
    print(json.dumps({"tick_ms": ticks, "cold_ms": cold_ms, "enqueued": first.enqueued,
                      "jobs": first.jobs, "enqueue_ms": 1000 * dispatcher.seconds}))


if __name__ == "__main__":
    main()
