"""Many rows in one statement: how the batched intake writes (contacts import, enroll).

SQLite takes an ``executemany`` (SQLAlchemy sends multi-row ``VALUES`` when rows come back).
On PostgreSQL that multi-row statement holds one placeholder per value, which the driver parses
again for every batch; instead each column goes as ONE array parameter, and
``INSERT … SELECT * FROM unnest(…)`` turns the arrays back into rows: a short statement
whatever the batch size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table
from sqlalchemy.dialects import sqlite


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *,
                returning: Sequence[str] = (), skip_conflicts: bool = False) -> list[Any]:
    """Insert ``rows`` (dicts with the same keys) into ``table``; the ``returning`` columns of
    the inserted rows, in no set order. ``skip_conflicts``: a row that breaks a unique key is
    left out (ON CONFLICT DO NOTHING) rather than failing the statement."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _unnest(conn, table, rows, returning, skip_conflicts)
    statement = sqlite.insert(table)
    if skip_conflicts:
        statement = statement.on_conflict_do_nothing()
    if not returning:
        conn.execute(statement, list(rows))
        return []
    return list(conn.execute(statement.returning(*(table.c[n] for n in returning)), list(rows)))


def _unnest(conn: Connection, table: Table, rows: Sequence[dict[str, Any]],
            returning: Sequence[str], skip_conflicts: bool) -> list[Any]:
    dialect, quote = conn.dialect, conn.dialect.identifier_preparer.quote
    columns = [table.c[name] for name in rows[0]]
    params: dict[str, list[Any]] = {}
    for index, column in enumerate(columns):
        values = [row[column.name] for row in rows]
        if isinstance(column.type, JSON):
            values = [None if value is None else json.dumps(value) for value in values]
        elif (process := column.type.bind_processor(dialect)) is not None:
            values = [process(value) for value in values]
        params[f"c{index}"] = values
    arrays = ", ".join(f"%(c{index})s::{column.type.compile(dialect=dialect)}[]"
                       for index, column in enumerate(columns))
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
           f"({', '.join(quote(column.name) for column in columns)}) "
           f"SELECT * FROM unnest({arrays})")
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if not returning:
        conn.exec_driver_sql(sql, params)
        return []
    sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    return list(conn.exec_driver_sql(sql, params))
