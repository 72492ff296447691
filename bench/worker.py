"""One RQ worker process: ``python -m bench.worker CONFIG_JSON``.

With ``settings`` it is what ``nurture worker`` runs, without the cron scheduler (the benchmark
enqueues the tick itself): the project opened and its campaigns synced, ``Database.analyze()``,
the jobs bound to the app, a ``SimpleWorker`` on the queue. It also compiles the campaign's MJML
once, as a worker that has been running for a while already has. Without ``settings`` it works
the no-op jobs of the RQ baseline (:func:`noop`).

It prints ``{"ready": ...}`` once set up, then:

- ``mode: "listen"``: works until SIGTERM, like ``nurture worker``;
- ``mode: "burst"``: waits for a line on stdin, then works until the queue is empty.

On exit it prints one JSON line: when it started and stopped working (``time.monotonic()``) and
its CPU seconds meanwhile.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def noop(i: int) -> int:
    """The job of the RQ baseline: what one job per email costs with nothing to do."""
    return i


def main() -> None:
    config = json.loads(sys.argv[1])
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis.from_url(config["redis_url"])
    app = None
    if config.get("settings"):
        from nurture.outbound.samples import sample_context
        from nurture.worker import jobs

        from .common import open_app

        app = open_app(config["settings"])
        app.sync_campaigns()
        app.db.analyze()
        jobs.bind(app)
        step = next(iter(app.campaigns.values())).steps[0]
        app.renderer.render(step.template, step.subject, sample_context(
            practice=app.practice_view(), sender=app.sender_view()))
        with app.db.transaction() as session:  # open the pooled connection
            session.connection()
    worker = SimpleWorker([Queue(config["queue"], connection=connection)],
                          connection=connection)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps({"ready": worker.name}), flush=True)
    if config["mode"] == "burst":
        sys.stdin.readline()
    cpu, started = time.process_time(), time.monotonic()
    worker.work(burst=config["mode"] == "burst", logging_level="WARNING", with_scheduler=False)
    stopped, cpu = time.monotonic(), time.process_time() - cpu
    print(json.dumps({"started": started, "stopped": stopped, "cpu": cpu}), flush=True)
    if app is not None:
        app.close()


if __name__ == "__main__":
    main()
