"""Tick cost on a big database: 1,000,000 enrollments, of which 0, 1,000 or 100,000 are due.

The database is bulk-loaded once per backend (COPY on PostgreSQL, one executemany transaction on
SQLite): every enrollment's first touch was sent in the past; 85% have their next touch
scheduled 1 hour to 60 days ahead, 10% completed, 5% stopped. For each due count, the earliest
scheduled touches are moved an hour into the past, one tick is measured in a fresh process
(``bench.tickchild``), and the rows are put back.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import (
    CAMPAIGN_ID,
    flush_redis,
    open_app,
    pg_schema,
    run_child,
    settings_values,
    workdir,
)
from .data import count_states, load_big, make_due, reset_due

# A tick slower than this is not repeated under tracemalloc / not drained tick by tick.
TRACE_LIMIT_MS, DRAIN_LIMIT_MS = 30_000, 15_000

TICK_CAMPAIGN = """\
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


@dataclass
class TickResults:
    database: str
    enrollments: int
    load_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per due count
    rq: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)
    inflight: dict[str, Any] = field(default_factory=dict)
    send: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)
    analyzed: dict[str, Any] = field(default_factory=dict)  # SQLite, after ANALYZE


def run_tick_cost(database: str, enrollments: int, due_counts: list[int], *,
                  send_sample: int = 100, log: Any = print) -> TickResults:
    res = TickResults(database, enrollments)
    with workdir("nurture-tick-") as tmp:
        (tmp / "campaigns").mkdir()
        (tmp / "campaigns" / "bench.yaml").write_text(TICK_CAMPAIGN)
        db = pg_schema("benchtick") if database == "postgresql" else contextlib.nullcontext(
            f"sqlite:///{tmp / 'nurture.db'}")
        with db as url:
            values = settings_values(tmp, url)
            now = datetime.now(UTC).replace(microsecond=0)
            app = open_app(values)
            app.sync_campaigns()
            engine = app.db.engine
            t = time.perf_counter()
            load_big(engine, enrollments, now, CAMPAIGN_ID)
            res.load_seconds = time.perf_counter() - t
            res.counts = count_states(engine)
            log(f"  {database}: loaded {enrollments:,} enrollments in {res.load_seconds:.0f}s "
                f"{res.counts}")

            def child(mode: str, **extra: Any) -> dict[str, Any]:
                return run_child("bench.tickchild", {"settings": values, "now": now.isoformat(),
                                                     "mode": mode, **extra})

            for due in due_counts:
                make_due(engine, due, now)
                row = child("noop")
                reset_due(engine, now)
                if row["tick_ms"] < TRACE_LIMIT_MS:  # else the repetition costs too much
                    make_due(engine, due, now)
                    traced = child("noop", tracemalloc=True)
                    reset_due(engine, now)
                    row["tracemalloc_peak_kb"] = traced["tracemalloc_peak_kb"]
                    row["tick_ms_traced"] = traced["tick_ms"]
                row["due"] = due
                res.rows.append(row)
                log(f"  {database}: {due:,} due: tick {row['tick_ms']:.1f} ms, "
                    f"{row['enqueued']:,} queued, RSS +{row['rss_growth_kb']:,} kB, "
                    f"tracemalloc peak {row.get('tracemalloc_peak_kb', float('nan')):,.0f} kB")

            rq_due = 1000 if 1000 in due_counts else due_counts[min(1, len(due_counts) - 1)]
            flush_redis()
            make_due(engine, rq_due, now)
            res.rq = child("rq")
            res.rq["due"] = rq_due
            reset_due(engine, now)
            flush_redis()
            log(f"  {database}: {rq_due:,} due with RQDispatcher: tick {res.rq['tick_ms']:.1f} "
                f"ms, of which enqueue {res.rq['enqueue_ms']:.1f} ms ({res.rq['jobs']} jobs)")

            big = max(due_counts)
            big_row = res.rows[-1]
            if big_row["tick_ms"] < DRAIN_LIMIT_MS:
                make_due(engine, big, now)
                res.plans, _ = query_plans(engine, now)  # with the due rows in place
                res.drain = child("drain", drain_budget_s=30)
                reset_due(engine, now)
            else:  # one tick took so long that draining is arithmetic
                res.drain = {"ticks": 1, "total_enqueued": big_row["enqueued"],
                             "drain_ms": big_row["tick_ms"], "tick_ms_each": [big_row["tick_ms"]],
                             "complete": big_row["enqueued"] >= big, "measured": False}
            res.drain["due"] = big
            log(f"  {database}: draining {big:,} due: {res.drain['ticks']} ticks, "
                f"{res.drain['drain_ms']:.0f} ms of tick time, complete: "
                f"{res.drain.get('complete', True)}")

            # 200 jobs in flight; fewer if ticking is so slow that 200 batches take minutes.
            per_batch = res.rq["tick_ms"] / max(1, res.rq["jobs"])
            inflight = min(big, 200 * 50) if per_batch < 50 else min(big, 20 * 50)
            make_due(engine, inflight, now)
            res.inflight = child("inflight")
            reset_due(engine, now)
            flush_redis()
            log(f"  {database}: tick with {res.inflight['inflight_jobs']} jobs in flight: "
                f"{res.inflight['inflight_tick_ms']:.1f} ms (lost() "
                f"{res.inflight['inflight_lost_ms']:.1f} ms, pipelined "
                f"{res.inflight['lost_pipelined_ms']:.1f} ms)")

            plans, timings = query_plans(engine, now)
            res.plans = res.plans or plans
            # A slow per-send query would make the sample take forever: ~20 s at most.
            slowest = max(timings.values())
            send_sample = max(5, min(send_sample, int(20 / max(slowest, 1e-3))))
            make_due(engine, send_sample + 1, now)
            res.send = child("send", send=send_sample)
            reset_due(engine, now)
            log(f"  {database}: send path at this size: {res.send['send_ms_each']:.1f} ms "
                f"wall, {res.send['send_cpu_ms_each']:.1f} ms CPU per email "
                f"({res.send['send_n']} emails)")
            if database == "sqlite":
                res.analyzed = analyzed(engine, child, now, due_counts, send_sample, log,
                                        getattr(app.db, "analyze", None))
            app.close()
    return res


def analyzed(engine: Any, child: Any, now: datetime, due_counts: list[int], send_sample: int,
             log: Any, database_analyze: Any = None) -> dict[str, Any]:
    """SQLite without statistics picks ``ix_touches_state_due_at`` for ``state = ?`` even when
    the row ids are known. The same measurements after a bounded ``ANALYZE``."""
    from sqlalchemy import text

    out: dict[str, Any] = {}
    t = time.perf_counter()
    if database_analyze is not None:  # nurture's own (``nurture worker`` runs it at start)
        database_analyze()
        out["how"] = "`Database.analyze()`, which `nurture worker` runs when it starts"
    else:
        with engine.begin() as conn:
            conn.execute(text("PRAGMA analysis_limit=1000"))
            conn.execute(text("ANALYZE"))
        out["how"] = "`PRAGMA analysis_limit=1000; ANALYZE`"
    out["analyze_ms"] = 1000 * (time.perf_counter() - t)
    out["rows"] = []
    for due in due_counts:
        make_due(engine, due, now)
        row = child("noop")
        reset_due(engine, now)
        row["due"] = due
        out["rows"].append(row)
        log(f"  sqlite after ANALYZE: {due:,} due: tick {row['tick_ms']:.1f} ms")
    make_due(engine, max(due_counts), now)
    out["plans"], _ = query_plans(engine, now)
    reset_due(engine, now)
    _, timings = query_plans(engine, now)
    slowest = max(timings.values())
    sample = max(5, min(100, int(20 / max(slowest, 1e-3))))
    make_due(engine, sample + 1, now)
    out["send"] = child("send", send=sample)
    reset_due(engine, now)
    log(f"  sqlite after ANALYZE: send path {out['send']['send_ms_each']:.1f} ms wall, "
        f"{out['send']['send_cpu_ms_each']:.1f} ms CPU per email")
    return out


def query_plans(engine: Any, now: datetime) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The plans of the tick's due query and the send path's per-contact count, and the time
    each query takes (seconds)."""
    from sqlalchemy import func, select, update

    from nurture.models import Enrollment, Touch, TouchState

    queries = {
        "tick: due touches (as written: ORDER BY due_at, id)": select(Touch.id).where(
            Touch.state == TouchState.SCHEDULED, Touch.due_at <= now)
        .order_by(Touch.due_at, Touch.id).limit(50),
        "tick: due touches (proposed: ORDER BY due_at)": select(Touch.id).where(
            Touch.state == TouchState.SCHEDULED, Touch.due_at <= now)
        .order_by(Touch.due_at).limit(50),
        "tick: mark a batch queued (UPDATE ... WHERE id IN (50 ids) AND state = ...)":
            update(Touch).where(Touch.id.in_(list(range(2, 102, 2))),
                                Touch.state == TouchState.SCHEDULED)
            .values(state=TouchState.SCHEDULED),
        "send: touches sent to contact (before eaaa20a: Touch.enrollment.has)": select(
            func.count(Touch.id)).where(Touch.state == TouchState.SENT,
                                        Touch.enrollment.has(contact_id=12345)),
        "send: touches sent to contact (since eaaa20a: JOIN enrollments)": select(
            func.count(Touch.id)).join(Touch.enrollment).where(
                Enrollment.contact_id == 12345, Touch.state == TouchState.SENT),
        "send: touches sent to contact (enrollment_id IN (subquery))": select(
            func.count(Touch.id)).where(
                Touch.enrollment_id.in_(select(Enrollment.id).where(
                    Enrollment.contact_id == 12345)),
                Touch.state == TouchState.SENT),
    }
    plans: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    with engine.connect() as conn:
        for name, query in queries.items():
            sql = str(query.compile(dialect=engine.dialect,
                                    compile_kwargs={"literal_binds": True}))
            returns = not sql.lstrip().upper().startswith("UPDATE")
            run = (lambda s=sql: conn.exec_driver_sql(s).all()) if returns else (
                lambda s=sql: conn.exec_driver_sql(s))
            run()  # warm the cache
            t = time.perf_counter()
            run()
            timings[name] = time.perf_counter() - t
            conn.rollback()
            if engine.dialect.name == "postgresql":
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
                                            + sql).all()
                conn.rollback()
                plans[name] = [r[0] for r in rows]
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
                plans[name] = [r[-1] for r in rows]
            plans[name].append(f"(ran in {1000 * timings[name]:.1f} ms)")
    return plans, timings


_ = Path  # (typing only)
