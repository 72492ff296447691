"""Reading a CSV file for an import, and checking a contacts file row by row.

Shared by every CSV import (contacts, referrals): :func:`read_csv_rows` gives each row with the
physical line it starts on and refuses control characters in any cell. :func:`read_contacts`
checks a whole contacts file and lists every problem at once (see :mod:`nurture.intake.contacts`
for the format), so a user fixes it in one pass.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from ..errors import ContactsError, InputError, Problem
from .contacts import (
    COLUMNS,
    LIMITS,
    LIST_SEPARATOR,
    TEXT_FIELDS,
    control_character,
    normalize_email,
)

_TAG = re.compile(r"[a-z0-9][a-z0-9_-]*")
# What a cell may not hold: C0 and C1 controls, except the tab and line breaks that a quoted
# cell may hold. PostgreSQL cannot store a NUL at all, and the rest only hide in names and
# subjects. (An address refuses every control character: see normalize_email.)
_CELL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def read_table(path: Path, columns: Sequence[str], expected: str, problems: list[Problem],
               error: type[InputError]) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """The rows of a CSV import and its column names (lower case), the header checked: unknown,
    unnamed and repeated columns are problems (``expected`` follows, saying what is accepted),
    and a file without an ``email`` column raises ``error`` at once: no row can be checked."""
    table = read_csv_rows(path, problems)
    head, header = table[0] if table else (None, [])
    names = [cell.strip().lower() for cell in header]
    for index, name in enumerate(names):
        label = header[index].strip()
        if name not in columns:
            what = f"unknown column {label!r}" if name else "a column has no name"
            problems.append(Problem(str(path), head, label, f"{what}{expected}"))
        elif name in names[:index]:
            problems.append(Problem(str(path), head, name, "the column appears twice"))
    if "email" not in names:
        if table or not problems:  # (an unreadable file has said so already)
            problems.append(Problem(str(path), head, "email",
                                    "a header row naming email is required"))
        raise error(problems)
    return table, names


def read_csv_rows(path: Path, problems: list[Problem]) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a UTF-8 CSV file (header first), each with the physical line it
    starts on, for every CSV import's line-numbered errors: csv's ``line_num`` counts physical
    lines, so quoted fields spanning lines do not skew it. An unreadable or malformed file adds
    a problem to ``problems`` and gives no rows.

    A control character in a cell adds a problem naming the line and the column (never the
    cell's text, which may be a patient's name in a refused column), and is dropped from the
    row, so the cell's other checks go on without repeating it.
    """
    where, raw = str(path), b""
    try:
        text = (raw := path.read_bytes()).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        at = raw[:exc.start].count(b"\n") + 1 if isinstance(exc, UnicodeDecodeError) else None
        problems.append(Problem(where, at, "", f"cannot read as UTF-8 CSV: {exc}"))
        return []
    del raw
    rows, end, reader = [], 0, csv.reader(io.StringIO(text, newline=""))  # csv splits lines itself
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
    except csv.Error as exc:
        problems.append(Problem(where, end + 1, "", f"malformed CSV: {exc}"))
        return []
    if _CELL_CONTROL.search(text):  # rare: look for the cells only then
        _drop_control_characters(where, rows, problems)
    return rows


def _drop_control_characters(where: str, rows: list[tuple[int, list[str]]],
                             problems: list[Problem]) -> None:
    names = [cell.strip().lower() for cell in rows[0][1]] if rows else []
    for line, cells in rows:
        for index, cell in enumerate(cells):
            if (found := _CELL_CONTROL.search(cell)) is None:
                continue
            field = names[index] if line != rows[0][0] and index < len(names) else ""
            what = "the header" if line == rows[0][0] else "the cell"
            problems.append(Problem(where, line, _CELL_CONTROL.sub("", field),
                                    f"{what} holds {control_character(found[0])}"))
            cells[index] = _CELL_CONTROL.sub("", cell)


@cache
def _zones() -> dict[str, str]:
    """IANA names by lower case: ``america/chicago`` is accepted and stored canonically."""
    return {name.lower(): name for name in available_timezones()}


def _split(cell: str) -> list[str]:
    return list(dict.fromkeys(item.strip() for item in cell.split(LIST_SEPARATOR) if item.strip()))


def read_contacts(path: Path) -> list[dict[str, Any]]:
    """Every row checked and cleaned, or ContactsError with every problem in the file."""
    where, problems = str(path), list[Problem]()
    table, names = read_table(path, COLUMNS, f"; expected some of: {', '.join(COLUMNS)}",
                              problems, ContactsError)
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    alias_line: dict[str, int] = {}
    for line, cells in table[1:]:
        def bad(field: str, message: str, line: int = line) -> None:
            problems.append(Problem(where, line, field, message))
        if len(cells) > len(names):
            bad("", f"the row has {len(cells)} cells but the header names {len(names)}")
        values = {name: cell.strip() for name, cell in zip(names, cells, strict=False)}
        row: dict[str, Any] = {field: values.get(field, "") for field in TEXT_FIELDS}
        try:
            row["email"] = normalize_email(values.get("email", ""))
        except ValueError as exc:
            bad("email", str(exc))
        else:
            if row["email"] in first_line:
                bad("email", f"{row['email']} is already on line {first_line[row['email']]}")
            first_line.setdefault(row["email"], line)
        for field in TEXT_FIELDS:
            if len(row[field]) > LIMITS[field]:
                bad(field, f"longer than {LIMITS[field]} characters")
        if row["timezone"] and row["timezone"].lower() not in _zones():
            bad("timezone", f"{row['timezone']!r} is not an IANA time zone like America/Chicago")
        row["timezone"] = _zones().get(row["timezone"].lower(), "")
        row["interests"] = _split(values.get("interests", ""))
        row["tags"] = [tag.lower() for tag in _split(values.get("tags", ""))]
        row["line"], row["aliases"] = line, []
        for alias in _split(values.get("aliases", "")):
            try:
                address = normalize_email(alias)
            except ValueError as exc:
                bad("aliases", str(exc))
                continue
            if address == row.get("email"):
                bad("aliases", f"{address} is the contact's own address")
            elif address in alias_line:
                bad("aliases", f"{address} is already an alias on line {alias_line[address]}")
            else:
                alias_line[address] = line
                row["aliases"].append(address)
        for tag in row["tags"]:
            if not _TAG.fullmatch(tag) or len(tag) > LIMITS["tag"]:
                bad("tags", f"{tag!r} is not a tag (letters, digits, - and _; ';' between tags)")
        rows.append(row)
    for row in rows:  # an address is a contact or an alias, never both
        for alias in row["aliases"]:
            if alias in first_line:
                problems.append(Problem(where, row["line"], "aliases",
                                        f"{alias} is the contact on line {first_line[alias]}"))
    if problems:
        raise ContactsError(sorted(problems, key=lambda p: p.line or 0))
    return rows
