"""Loading benchmark data: small due sets with SQLAlchemy core, a million rows with COPY.

Column lists follow :mod:`nurture.models`; the values look like a real database: most touches
are ``sent`` in the past or ``scheduled`` in the future, a few were cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update

FIRST = ["Dana", "Lee", "Maria", "Sam", "Priya", "Jon", "Ana", "Kofi", "Yuki", "Omar"]
LAST = ["Whitfield", "Nguyen", "Garcia", "Okafor", "Kim", "Novak", "Silva", "Patel"]
ORGS = ["Lakeside Orthopedics", "Summit Sports Medicine", "Core Fitness Gym",
        "Valley Nutrition", "Northside Family Practice", ""]
ROLES = ["Orthopedic surgeon", "Personal trainer", "Nutritionist", "Physician", ""]
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", ""]

CONTACT_COLS = ("id", "email", "first_name", "last_name", "organization", "role", "interests",
                "timezone", "owner", "status", "status_changed_at", "needs_details",
                "created_at", "updated_at")
ENROLLMENT_COLS = ("id", "contact_id", "campaign_id", "state", "enrolled_at", "ended_at",
                   "stop_reason")
TOUCH_COLS = ("id", "enrollment_id", "step_id", "trigger_key", "state", "due_at", "job_id",
              "queued_at", "claimed_at", "lease_until", "sent_at", "message_id", "subject",
              "attempts", "reason", "created_at")


def contact_row(i: int, now: datetime) -> tuple[Any, ...]:
    created = now - timedelta(days=400) + timedelta(seconds=i)
    return (i, f"contact{i}@clinic{i % 997}.example", FIRST[i % len(FIRST)],
            LAST[(i // 7) % len(LAST)], ORGS[i % len(ORGS)], ROLES[i % len(ROLES)],
            json.dumps(["knee surgery", "trail running"][: i % 3]), ZONES[i % len(ZONES)], "",
            "active", None, False, created, created)


def contact_dict(i: int, now: datetime) -> dict[str, Any]:
    row = dict(zip(CONTACT_COLS, contact_row(i, now), strict=True))
    row["interests"] = json.loads(row["interests"])
    return row


# Pipeline: N due touches ------------------------------------------------------------------
def load_due(engine: Engine, n: int, now: datetime, campaign_id: str, step_id: str) -> None:
    """``n`` contacts, each enrolled once with one touch due a few minutes ago (core inserts)."""
    from nurture.models import Contact, Enrollment, Touch

    due = now - timedelta(minutes=5)
    with engine.begin() as conn:
        for start in range(1, n + 1, 5000):
            ids = range(start, min(n, start + 4999) + 1)
            conn.execute(insert(Contact.__table__), [contact_dict(i, now) for i in ids])
            conn.execute(insert(Enrollment.__table__), [
                {"id": i, "contact_id": i, "campaign_id": campaign_id, "state": "active",
                 "enrolled_at": due} for i in ids])
            conn.execute(insert(Touch.__table__), [
                {"id": i, "enrollment_id": i, "step_id": step_id, "trigger_key": "",
                 "state": "scheduled", "due_at": due + timedelta(microseconds=i), "attempts": 0,
                 "created_at": due} for i in ids])
        _fix_sequences(conn, n + 1, n + 1, n + 1)


def _fix_sequences(conn: Any, contacts: int, enrollments: int, touches: int) -> None:
    if conn.dialect.name != "postgresql":
        return
    for table, nxt in (("contacts", contacts), ("enrollments", enrollments),
                       ("touches", touches)):
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {nxt}, false)"))


# Tick cost: a big, realistic database -----------------------------------------------------
def big_rows(n: int, now: datetime, campaign_id: str) -> tuple[
        Iterator[tuple[Any, ...]], Iterator[tuple[Any, ...]], Iterator[tuple[Any, ...]]]:
    """Generators of contact, enrollment and touch rows for ``n`` enrollments.

    Every enrollment's first step was sent in the past. 85% are active with their second step
    scheduled 1 hour to 60 days ahead, 10% completed (second step sent), 5% stopped (second step
    cancelled). So there are 2n touches: 1.1n sent, 0.85n scheduled, 0.05n cancelled.
    """
    span = 60 * 86400

    def contacts() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n + 1):
            yield contact_row(i, now)

    def state(i: int) -> str:
        r = i % 20
        return "stopped" if r == 0 else "completed" if r <= 2 else "active"

    def enrollments() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n + 1):
            enrolled = now - timedelta(days=90, seconds=i % (60 * 86400))
            s = state(i)
            ended = enrolled + timedelta(days=14) if s != "active" else None
            yield (i, i, campaign_id, s, enrolled, ended, "reply" if s == "stopped" else None)

    def touches() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n + 1):
            enrolled = now - timedelta(days=90, seconds=i % (60 * 86400))
            sent = enrolled + timedelta(minutes=1)
            t1 = 2 * i - 1
            yield (t1, i, "hello", "", "sent", enrolled, f"j{i % 5000}", sent, sent,
                   sent + timedelta(minutes=5), sent, f"<nurture.{t1}.b3nch@riverapt.example>",
                   "Thank you for what you do", 1, None, enrolled)
            s, t2 = state(i), 2 * i
            if s == "active":
                due = now + timedelta(hours=1, seconds=(i * 7919) % span)
                yield (t2, i, "question", "", "scheduled", due, None, None, None, None, None,
                       None, None, 0, None, sent)
            elif s == "completed":
                due = sent + timedelta(days=7)
                yield (t2, i, "question", "", "sent", due, f"j{i % 5000}", due, due,
                       due + timedelta(minutes=5), due,
                       f"<nurture.{t2}.b3nch@riverapt.example>", "A question for you", 1, None,
                       sent)
            else:
                yield (t2, i, "question", "", "cancelled", sent + timedelta(days=7), None, None,
                       None, None, None, None, None, 0, "stopped by reply", sent)

    return contacts(), enrollments(), touches()


TABLES = ("contacts", "enrollments", "touches")


def _plain_indexes(engine: Engine) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the ``ix_*`` indexes of the loaded tables: dropped during
    the load and built afterwards, which is much faster. Unique constraints stay."""
    names = ", ".join(f"'{t}'" for t in TABLES)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                f" AND tablename IN ({names}) AND indexname LIKE 'ix\\_%'")).all()
        else:
            rows = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                f" AND tbl_name IN ({names}) AND name LIKE 'ix\\_%' ESCAPE '\\'")).all()
    return [(name, sql) for name, sql in rows]


def load_big(engine: Engine, n: int, now: datetime, campaign_id: str) -> dict[str, int]:
    """Bulk-load ``n`` contacts and enrollments and ~2n touches; returns row counts."""
    contacts, enrollments, touches = big_rows(n, now, campaign_id)
    indexes = _plain_indexes(engine)
    with engine.begin() as conn:
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            pg = raw.driver_connection
            with pg.cursor() as cur:
                # The rows are consistent by construction: skip the per-row foreign key
                # triggers for this session (superuser), as restores do.
                cur.execute("SET session_replication_role = replica")
                for table, cols, rows in (("contacts", CONTACT_COLS, contacts),
                                          ("enrollments", ENROLLMENT_COLS, enrollments),
                                          ("touches", TOUCH_COLS, touches)):
                    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                cur.execute("SET session_replication_role = DEFAULT")
            pg.commit()
        finally:
            raw.close()
        with engine.begin() as conn:
            _fix_sequences(conn, n + 1, n + 1, 2 * n + 1)
            conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for _, sql in indexes:
                conn.execute(text(sql))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        raw = engine.raw_connection()
        try:
            db = raw.driver_connection
            cur = db.cursor()
            cur.execute("PRAGMA cache_size = -400000")  # 400 MB for this connection's load
            cur.execute("PRAGMA foreign_keys = OFF")  # consistent by construction
            # No WAL for the load (it would hold a second copy of every page); back after.
            cur.execute("PRAGMA journal_mode = OFF")
            cur.execute("PRAGMA synchronous = OFF")
            cur.execute("BEGIN")
            for table, cols, rows in (("contacts", CONTACT_COLS, contacts),
                                      ("enrollments", ENROLLMENT_COLS, enrollments),
                                      ("touches", TOUCH_COLS, touches)):
                marks = ", ".join("?" for _ in cols)
                cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})",
                                map(_sqlite_row(cols), rows))
            for _, sql in indexes:
                cur.execute(sql)
            cur.execute("COMMIT")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA cache_size = -2000")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()
        finally:
            raw.close()
    return count_states(engine)


_STAMPS = {"status_changed_at", "created_at", "updated_at", "enrolled_at", "ended_at", "due_at",
           "queued_at", "claimed_at", "lease_until", "sent_at"}


def _sqlite_row(cols: tuple[str, ...]) -> Any:
    """A converter of one row for SQLite: its timestamp columns as SQLAlchemy stores them."""
    where = [i for i, c in enumerate(cols) if c in _STAMPS]

    def convert(row: tuple[Any, ...]) -> list[Any]:
        out = list(row)
        for i in where:
            v = out[i]
            if v is not None:
                out[i] = v.replace(tzinfo=None).isoformat(" ", "microseconds")
        return out

    return convert


def count_states(engine: Engine) -> dict[str, int]:
    from nurture.models import Enrollment, Touch

    with engine.connect() as conn:
        counts = {f"touches_{s}": c for s, c in conn.execute(
            select(Touch.state, func.count()).group_by(Touch.state))}
        counts["enrollments"] = conn.execute(select(func.count()).select_from(
            Enrollment.__table__)).scalar_one()
    return counts


def make_due(engine: Engine, count: int, now: datetime) -> int:
    """Make the ``count`` earliest scheduled touches due (an hour ago, spread over a minute)."""
    from nurture.models import Touch

    if count == 0:
        return 0
    earliest = (select(Touch.id).where(Touch.state == "scheduled")
                .order_by(Touch.due_at).limit(count).scalar_subquery())
    with engine.begin() as conn:
        got = conn.execute(update(Touch).where(Touch.id.in_(earliest))
                           .values(due_at=now - timedelta(hours=1))).rowcount
    _settle(engine)
    return got


def reset_due(engine: Engine, now: datetime) -> None:
    """Undo a tick: queued rows back to scheduled, and nothing due any more."""
    from nurture.models import Touch

    with engine.begin() as conn:
        conn.execute(update(Touch).where(Touch.state == "queued")
                     .values(state="scheduled", job_id=None, queued_at=None))
        conn.execute(update(Touch).where(Touch.state == "scheduled", Touch.due_at <= now)
                     .values(due_at=now + timedelta(days=61)))
    _settle(engine)


def _settle(engine: Engine) -> None:
    """PostgreSQL: analyze what the updates changed, as autovacuum soon would."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE touches"))
