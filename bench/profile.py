"""Profile the send path in one process: ``python -m bench.profile [--db sqlite|postgresql]
[-n 500] [--batch 50] [--sort cumulative|tottime] [--top 40]``.

Loads ``n`` due touches, ticks with a list-collecting dispatcher, then runs
``nurture.jobs.send_touches`` for each batch under cProfile, sending to a sink process.
A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .common import CAMPAIGN_ID, open_app, pg_schema, settings_values, workdir, write_campaigns
from .data import load_due
from .sinkclient import Sink


class Collect:
    def __init__(self) -> None:
        self.jobs: list[list[int]] = []

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        self.jobs.append(touch_ids)

    def lost(self, job_ids, unleased=()):  # noqa: ANN001, ANN201
        return set()


@contextlib.contextmanager
def queued_batches(database: str, n: int, batch: int) -> Iterator[tuple[Any, list[list[int]]]]:
    """A project with ``n`` touches due, ticked into send batches of ``batch``, bound to the
    jobs and warmed up (one email sent: MJML compiled, connections open); yields the app and
    the batches still to send, to a sink process."""
    from nurture import jobs
    from nurture.engine import tick

    with Sink() as sink, workdir("nurture-prof-") as tmp:
        write_campaigns(tmp / "campaigns")
        db = pg_schema() if database == "postgresql" else contextlib.nullcontext(
            f"sqlite:///{tmp / 'nurture.db'}")
        with db as url:
            app = open_app(settings_values(tmp, url, smtp_url=sink.url,
                                           worker_batch_size=batch))
            app.sync_campaigns()
            load_due(app.db.engine, n, datetime.now(UTC), CAMPAIGN_ID,
                     app.campaigns[CAMPAIGN_ID].steps[0].id)
            jobs.bind(app)
            collect = Collect()
            tick(app, collect)
            jobs.send_touches(collect.jobs[0][:1])
            collect.jobs[0] = collect.jobs[0][1:]
            try:
                yield app, collect.jobs
            finally:
                app.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()

    from nurture import jobs

    with queued_batches(args.db, args.n, args.batch) as (_app, batches):
        profiler = cProfile.Profile()
        started = time.perf_counter()
        if not args.no_profile:
            profiler.enable()
        for batch in batches:
            jobs.send_touches(batch)
        profiler.disable()
        seconds = time.perf_counter() - started
    sent = sum(len(b) for b in batches)
    print(f"{sent} emails in {seconds:.2f}s: {sent / seconds:.1f}/s "
          f"({1000 * seconds / sent:.2f} ms each){' under cProfile' * (not args.no_profile)}")
    if not args.no_profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
