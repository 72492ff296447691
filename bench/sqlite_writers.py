"""Two SQLite writers taking turns: ``python -m bench.sqlite_writers [-n 3000] [--runs 3]``.

Two processes each run ``n`` short write transactions on one database, shaped like a worker's
(the lock held ``--inside`` ms for the statements of one email, then ``--outside`` ms of work
without it: rendering and the SMTP conversation). Each process reports how long its
``BEGIN IMMEDIATE`` waited. Two ways to wait, interleaved run by run:

- ``busy handler``: SQLite's own busy timeout, which sleeps 1, 2, 5, 10 ... ms between tries
  (what nurture did before);
- ``nurture``: :func:`nurture.db.make_engine`, which polls for the lock every fraction of a
  millisecond.

A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text


def _busy_handler_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the rest as nurture's engine has it
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON",
                       "synchronous=NORMAL"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _spin(seconds: float) -> None:
    """CPU work, as rendering is (a sleep would leave the CPU to the other writer)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _writer(how: str, url: str, n: int, inside: float, outside: float,
            results: Any) -> None:
    from nurture.db import make_engine

    engine = make_engine(url) if how == "nurture" else _busy_handler_engine(url)
    waited = 0.0
    with engine.connect() as conn:
        for i in range(n):
            asked = time.perf_counter()
            conn.begin()
            waited += time.perf_counter() - asked
            conn.execute(text("INSERT INTO sent (v) VALUES (:v)"), {"v": i})
            _spin(inside)
            conn.commit()
            _spin(outside)
    engine.dispose()
    results.put(waited)


def run(how: str, n: int, inside: float, outside: float) -> tuple[float, float]:
    """Transactions per second for both writers together, and the mean wait per BEGIN (ms)."""
    with tempfile.TemporaryDirectory(prefix="nurture-writers-") as tmp:
        path = Path(tmp) / "writers.db"
        with sqlite3.connect(path) as setup:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute("CREATE TABLE sent (id INTEGER PRIMARY KEY, v INTEGER)")
        results: Any = multiprocessing.Queue()
        writers = [multiprocessing.Process(target=_writer, args=(
            how, f"sqlite:///{path}", n, inside / 1000, outside / 1000, results))
            for _ in range(2)]
        started = time.perf_counter()
        for w in writers:
            w.start()
        waits = [results.get() for _ in writers]
        for w in writers:
            w.join()
        elapsed = time.perf_counter() - started
    return 2 * n / elapsed, 1000 * sum(waits) / (2 * n)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_writers", description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="transactions per writer")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--inside", type=float, default=0.4, help="ms holding the lock")
    parser.add_argument("--outside", type=float, default=1.2, help="ms between transactions")
    args = parser.parse_args()
    for _ in range(args.runs):
        for how in ("busy handler", "nurture"):
            rate, wait = run(how, args.n, args.inside, args.outside)
            print(f"{how:>12}: {rate:7.0f} transactions/s, {wait:.3f} ms waiting per BEGIN",
                  flush=True)


if __name__ == "__main__":
    main()
