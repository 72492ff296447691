"""One statement of the send path, SQLAlchemy's ``execute`` against :class:`nurture.db.Precompiled`:
``python -m bench.statements [-n 5000] [--runs 3]``.

The statement is the mailbox limit's compare-and-set (``nurture.limits._TAKE``: an UPDATE with a
CASE, three date and time values converted, RETURNING), run ``n`` times in one transaction on
one row, on SQLite and PostgreSQL, the two ways interleaved run by run. Prints microseconds per
statement (best run). A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from datetime import UTC, datetime, timedelta

from .common import pg_schema, workdir


def _per_statement(url: str, n: int, runs: int) -> dict[str, float]:
    from nurture.db import open_database
    from nurture.limits import _TAKE
    from nurture.models import Mailbox

    database = open_database(url)
    now = datetime.now(UTC)
    params = {"b_address": "me@pt.example", "today": now.date(), "per_day": 10 ** 9,
              "now": now, "cutoff": now + timedelta(days=1)}
    ways = {"SQLAlchemy execute": lambda session: session.connection().scalar(
                _TAKE.statement, params),
            "Precompiled": lambda session: _TAKE.scalar(session, params)}
    best = dict.fromkeys(ways, float("inf"))
    try:
        with database.transaction() as session:
            session.add(Mailbox(address="me@pt.example", day=now.date(), sent_today=0))
        with database.held_connection():
            for _ in range(runs):
                for name, run in ways.items():
                    with database.transaction() as session:
                        run(session)  # compiled, connection warm
                        started = time.perf_counter()
                        for _ in range(n):
                            run(session)
                        best[name] = min(best[name], (time.perf_counter() - started) / n)
    finally:
        database.close()
    return {name: seconds * 1e6 for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with workdir("nurture-statements-") as tmp:
        for database in ("sqlite", "postgresql"):
            db = pg_schema() if database == "postgresql" else contextlib.nullcontext(
                f"sqlite:///{tmp / 'nurture.db'}")
            with db as url:
                found = _per_statement(url, args.n, args.runs)
            print(f"{database}: " + ", ".join(f"{name} {us:.1f} µs"
                                              for name, us in found.items()))


if __name__ == "__main__":
    main()
