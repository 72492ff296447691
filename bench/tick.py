"""Tick cost on a big database: the tick a worker runs every minute, with nothing due (target:
under 50 ms at 1,000,000 enrollments), and with 1,000 and 10,000 due.

The database is bulk-loaded once per backend (:func:`bench.data.load_big`: COPY on PostgreSQL,
one executemany transaction on SQLite): every enrollment's first touch was sent in the past; 85%
have their second touch scheduled 1 hour to 60 days ahead, 10% completed, 5% stopped. For each
due count, the earliest scheduled touches are moved an hour into the past, the ticks are
measured in a fresh process (:mod:`bench.tickchild`), and the rows are put back.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .common import CAMPAIGN_ID, database, run_child, settings_values, workdir, write_campaigns
from .data import count_states, load_big, make_due, reset_due
from .report import table

TARGET_MS = 50
DUE = (0, 1000, 10_000)
TWO_STEPS = """\
id: bench
name: Benchmark campaign
stop_on: []
steps:
  - id: hello
    subject: "Thank you for what you do at {{ contact.organization or 'your practice' }}"
    template: appreciation.mjml
  - id: question
    wait: 1 week
    subject: "A question for you, {{ contact.first_name or 'if I may' }}"
    template: open-question.mjml
"""


def measure(db: str, enrollments: int, redis_url: str,
            log: Callable[[str], None]) -> dict[str, Any]:
    from .common import open_app

    out: dict[str, Any] = {"database": db, "enrollments": enrollments, "rows": []}
    with workdir("bench-tick-") as folder, database(db, folder) as url:
        write_campaigns(folder / "campaigns", TWO_STEPS)
        values = settings_values(folder, url, redis_url)
        now = datetime.now(UTC).replace(microsecond=0)
        app = open_app(values)
        app.sync_campaigns()
        engine = app.db.engine
        t = time.perf_counter()
        load_big(engine, enrollments, now, CAMPAIGN_ID)
        out["load_seconds"] = time.perf_counter() - t
        out["counts"] = count_states(engine)
        log(f"tick, {db}: loaded {enrollments:,} enrollments in {out['load_seconds']:.0f}s")
        for due, rq in [(d, False) for d in DUE if d < enrollments // 2] + [(1000, True)]:
            make_due(engine, due, now)
            row = run_child("bench.tickchild", {"settings": values, "now": now.isoformat(),
                                                "repeat": 1 if due else 5, "rq": rq})
            reset_due(engine, now)
            row.update(due=due, rq=rq)
            out["rows"].append(row)
            log(f"  {due:,} due{' (RQDispatcher)' if rq else ''}: tick "
                f"{', '.join(f'{ms:.1f}' for ms in row['tick_ms'])} ms, "
                f"{row['enqueued']:,} queued")
        app.close()
    return out


def section(results: list[dict[str, Any]], header: str) -> str:
    rows, verdicts = [], []
    for r in results:
        name = "SQLite" if r["database"] == "sqlite" else "PostgreSQL"
        for row in r["rows"]:
            ms = row["tick_ms"]
            rows.append([name, f"{r['enrollments']:,}", f"{row['due']:,}",
                         "RQDispatcher" if row["rq"] else "none (batches dropped)",
                         statistics.median(ms), f"{min(ms):.1f}-{max(ms):.1f}" if len(ms) > 1
                         else "", row["enqueued"], row["jobs"],
                         row["enqueue_ms"] if row["rq"] else "", row["cold_ms"]])
        idle = statistics.median(next(row["tick_ms"] for row in r["rows"] if not row["due"]))
        verdicts.append(f"{name}: {idle:.1f} ms with nothing due at {r['enrollments']:,} "
                        f"enrollments, < {TARGET_MS} ms asked → "
                        f"**{'met' if idle < TARGET_MS else 'NOT met'}**")
    loads = "; ".join(
        f"{'SQLite' if r['database'] == 'sqlite' else 'PostgreSQL'} {r['load_seconds']:.0f} s "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(r['counts'].items()))})" for r in results)
    return "\n".join([
        "## Tick cost",
        "",
        header,
        "",
        *[f"- {line}" for line in verdicts],
        "",
        table(["database", "enrollments", "due", "dispatcher", "tick ms (median)",
               "range of 5", "queued", "jobs", "of which enqueue ms",
               "warm-up tick ms (cold)"], rows),
        "",
        "Every enrollment's first touch was sent in the past; 85% have their second touch "
        "scheduled 1 hour to 60 days ahead, 10% completed, 5% stopped. For each row the "
        "earliest scheduled touches are made due, and the tick runs in a fresh process after "
        "`Database.analyze()` and a warm-up tick (clock a year back, nothing due; its time is "
        "the last column). With nothing due the tick runs five times; with rows due, once "
        "(it queues them). One tick queues at most 200 batches of 50. Bulk loads: "
        f"{loads}.",
    ])
