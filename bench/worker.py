"""One RQ worker process for the benchmarks: ``python -m bench.worker CONFIG_JSON``.

It sets everything up (imports, database, campaigns, and with ``warm`` the MJML compilation a
long-running worker has already done), prints ``{"ready": pid}``, then:

- ``mode: "listen"``: works (not burst) until SIGTERM, like ``nurture worker``;
- ``mode: "burst"``: waits for a line on stdin, then works in burst mode until the queue is empty.

On exit it prints one JSON line: when it started and stopped working (``time.monotonic()``), its
CPU seconds and jobs done.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time


def main() -> None:
    config = json.loads(sys.argv[1])
    from redis import Redis
    from rq import Queue, SimpleWorker, Worker

    import bench.noop  # noqa: F401  (so the forking Worker's child has it imported)

    connection = Redis.from_url(config["redis_url"])
    app = None
    if config.get("settings"):
        from .whatif import apply

        apply(config.get("whatif", []))
        from nurture.outbound.render import sample_context
        from nurture.worker import jobs

        from .common import open_app

        app = open_app(config["settings"])
        app.sync_campaigns()
        jobs.bind(app)
        if config.get("warm", True):  # compile the MJML once, as a long-running worker has
            campaign = next(iter(app.campaigns.values()))
            step = campaign.steps[0]
            app.renderer.render(step.template, step.subject, sample_context(
                practice=app.practice_view(), sender=app.sender_view()))
        with app.db.transaction() as session:  # open the pooled connection
            session.connection()
    queue = Queue(config["queue"], connection=connection)
    cls = SimpleWorker if config.get("worker_class", "simple") == "simple" else Worker
    worker = cls([queue], connection=connection)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps({"ready": worker.name}), flush=True)
    if config["mode"] == "burst":
        sys.stdin.readline()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    worker.work(burst=config["mode"] == "burst", logging_level="WARNING",
                with_scheduler=False)
    stopped = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "started": started, "stopped": stopped,
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "children_cpu": children.ru_utime + children.ru_stime,
    }), flush=True)
    if app is not None:
        app.close()


if __name__ == "__main__":
    main()
