"""Where one email's time goes in a send job: ``python -m bench.breakdown [--db sqlite|postgresql]
[-n 500] [--batch 50]``.

Wraps the steps of :mod:`nurture.sending` with wall-clock timers (no profiler overhead), counts
SQL statements and their time (through SQLAlchemy or precompiled), and prints milliseconds per
email for each step. Diagnostic only.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

from .profile import queued_batches

TOTALS: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def timed(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[name] += time.perf_counter() - started
            CPU[name] += time.thread_time() - cpu
            COUNTS[name] += 1
    return wrapper


def patch(owner: Any, attr: str, name: str) -> None:
    """Time ``owner.attr`` (a module function or a class method) if it exists."""
    fn = getattr(owner, attr, None)
    if fn is not None:
        setattr(owner, attr, timed(name, fn))


def instrument(app: Any) -> None:
    import importlib

    from sqlalchemy import event

    from nurture import app as app_mod
    from nurture import delivery, jobs, sending
    from nurture.render import Renderer

    compose = importlib.import_module("nurture.compose") if importlib.util.find_spec(
        "nurture.compose") else None
    patch(sending, "_claim", "claim txn (incl. recheck+compose)")
    patch(sending, "_recheck", "  recheck")
    patch(sending, "_compose", "  compose")
    if compose is not None:
        patch(compose, "find_thread", "    find_thread")
        patch(compose, "compose", "    render+build_message")
    patch(Renderer, "render", "      Renderer.render")
    for mod in (sending, compose):
        if mod is not None:
            patch(mod, "build_message", "      build_message")
            patch(mod, "contact_view", "    contact_view")
    patch(sending, "_send_and_record", "send+record")
    patch(sending, "_record_sent", "record (txn)")
    patch(sending, "_lock_owners", "  lock owners (FOR SHARE)")
    patch(delivery.SmtpTransport, "send", "  SmtpTransport.send (reused conn)")
    patch(delivery.SmtpTransport, "_connect", "  SmtpTransport._connect")
    patch(delivery.SmtpTransport, "close", "  SmtpTransport.close (QUIT)")
    patch(sending, "advance", "  advance")
    patch(sending, "log_event", "  log_event")
    prop = app_mod.Nurture.campaigns
    app_mod.Nurture.campaigns = property(timed("Nurture.campaigns (file stat check)", prop.fget))
    patch(jobs, "open_transport", "open_transport")
    patch(sending, "take_send", "  take_send (mailbox limits)")
    dialect = app.db.engine.dialect
    dialect.do_commit = timed("SQL COMMIT", dialect.do_commit)
    _time_precompiled()

    eng = app.db.engine

    @event.listens_for(eng, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        conn.info["t0"] = time.perf_counter(), time.thread_time()

    @event.listens_for(eng, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        kind = statement.split(None, 1)[0].upper()
        TOTALS[f"SQL {kind}"] += time.perf_counter() - conn.info["t0"][0]
        CPU[f"SQL {kind}"] += time.thread_time() - conn.info["t0"][1]
        COUNTS[f"SQL {kind}"] += 1


def _time_precompiled() -> None:
    """Statements run by :class:`nurture.db.Precompiled` skip SQLAlchemy's cursor events: time
    each run as ``SQL <verb>`` too (their own small overhead included)."""
    from nurture import db

    precompiled = getattr(db, "Precompiled", None)
    if precompiled is None:
        return
    rows = precompiled.rows

    def timed_rows(self: Any, on: Any, params: Any) -> Any:
        return timed(f"SQL {type(self.statement).__name__.upper()}", rows)(self, on, params)

    precompiled.rows = timed_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--whatif", default="", help="comma-separated bench.whatif patches")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args()
    from .whatif import apply

    applied = apply([w for w in args.whatif.split(",") if w])

    from nurture import jobs

    with queued_batches(args.db, args.n, args.batch) as (app, batches):
        instrument(app)
        started = time.perf_counter()
        cpu0 = time.process_time()
        for batch in batches:
            jobs.send_touches(batch)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    n = sum(len(b) for b in batches)
    if args.json:
        import json

        print(json.dumps({"db": args.db, "batch": args.batch, "whatif": applied, "n": n,
                          "seconds": seconds, "cpu": cpu,
                          "steps": {k: {"wall_ms": 1000 * v / n, "cpu_ms": 1000 * CPU[k] / n,
                                        "calls": COUNTS[k] / n} for k, v in TOTALS.items()}}))
        return
    print(f"{args.db}, batch {args.batch}: {n} emails in {seconds:.2f}s = {n / seconds:.1f}/s; "
          f"{1000 * seconds / n:.2f} ms wall, {1000 * cpu / n:.2f} ms CPU per email")
    print(f"{'step':45} {'wall ms':>9} {'CPU ms':>9} {'calls':>7}  (per email)")
    for name, total in TOTALS.items():
        print(f"{name:45} {1000 * total / n:9.3f} {1000 * CPU[name] / n:9.3f} "
              f"{COUNTS[name] / n:7.2f}")
    for name, count in COUNTS.items():
        if name not in TOTALS:
            print(f"{name:45} {'':9} {'':9} {count / n:7.2f}")


if __name__ == "__main__":
    main()
