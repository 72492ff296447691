"""Referrals imported from a CSV file: ``nurture referrals import FILE.csv``.

The CSV (UTF-8, BOM or not) has a header row naming, in any order and any case: ``email``
(required: who referred), ``date`` (``YYYY-MM-DD``; blank: today in the practice's time zone)
and ``ref`` (an opaque id from the practice's records, e.g. ``EHR-123``; optional). Nothing
else: a ``patient``, ``diagnosis`` or ``notes`` column is refused by name, so patient details
never reach nurture, not even as a column it ignores.

Like the contacts import (and with its reader), it is all or nothing: every row is checked
first, every problem is reported at once with its physical line, and then every row is recorded
through :func:`nurture.intake.referrals.record_referral` in ONE transaction. Importing the same file
again changes nothing for rows with a ``ref`` (they are "already recorded"); a row without one
is a new referral each time, which the command says. One source on several rows of one day gets
one thank-you, and the owner gets one note listing the sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session

from ..app import Nurture
from ..conflicts import retry_conflicts
from ..engine import log_event
from ..errors import InputError, Problem
from .contacts import normalize_email
from .contacts_csv import read_table
from .referrals import (
    ReferralResult,
    check_external_ref,
    future_date_problem,
    notify_referrals,
    record_referral,
    referral_day,
)

COLUMNS = ("email", "date", "ref")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ReferralsError(InputError):
    """A referrals CSV file has bad rows; none of it was recorded."""


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    on: date
    ref: str | None


@dataclass
class ReferralsImport:
    """What an import did, row by row (``results`` in file order)."""

    file: str
    results: list[ReferralResult] = field(default_factory=list)
    without_ref: int = 0  # recorded rows with no ref: importing the file again repeats them
    notify_error: str | None = None  # the owner's note could not be sent (the rows are in)

    @property
    def recorded(self) -> list[ReferralResult]:
        return [r for r in self.results if not r.duplicate]

    @property
    def already(self) -> int:
        return sum(r.duplicate for r in self.results)


def import_referrals(app: Nurture, path: Path, *, notify: bool = False) -> ReferralsImport:
    """Validate the whole file, then record every referral in it in one transaction.

    Raises :class:`ReferralsError` listing every problem, having written nothing. After the
    commit the owner gets one note about the referrals that were new (``notify``). Two imports
    of one file at once record each ref once: the one that loses the race on a ref runs its
    transaction again and finds those rows already recorded.
    """
    rows = _validate(path, referral_day(app))

    def record(session: Session) -> ReferralsImport:
        outcome = ReferralsImport(path.name, [record_referral(
            app, session, row.email, row.on, row.ref, "csv") for row in rows])
        if outcome.recorded:  # a repeated import writes nothing at all, not even an event
            outcome.without_ref = sum(row.ref is None for row in rows)
            log_event(session, app.now(), "referrals_imported", file=path.name, rows=len(rows),
                      recorded=len(outcome.recorded), already=outcome.already)
        return outcome

    outcome = retry_conflicts(app.db, record)
    if notify:
        outcome.notify_error = notify_referrals(
            app, [(result, row.on) for result, row in zip(outcome.results, rows, strict=True)],
            origin=path.name)
    return outcome


def _validate(path: Path, today: date) -> list[Row]:
    """Every row checked and cleaned, or ReferralsError with every problem in the file.

    A problem never quotes a cell of a refused column: it may hold a patient's name.
    """
    where, problems = str(path), list[Problem]()
    table, names = read_table(path, COLUMNS, ": only email, date and ref are accepted (an opaque "
                              "ref, never patient details)", problems, ReferralsError)
    rows, ref_lines = [], dict[str, int]()
    for line, cells in table[1:]:
        def bad(field: str, message: str, line: int = line) -> None:
            problems.append(Problem(where, line, field, message))
        if len(cells) > len(names):
            bad("", f"the row has {len(cells)} cells but the header names {len(names)}")
        values = {name: cell.strip() for name, cell in zip(names, cells, strict=False)
                  if name in COLUMNS}
        email, on, ref = "", today, values.get("ref") or None
        try:
            email = normalize_email(values.get("email", ""))
        except ValueError as exc:
            bad("email", str(exc))
        if text := values.get("date", ""):
            try:
                if not _DATE.fullmatch(text):
                    raise ValueError
                on = date.fromisoformat(text)
            except ValueError:
                bad("date", f"{text!r} is not a date in the form YYYY-MM-DD")
            else:
                if (problem := future_date_problem(on, today)) is not None:
                    bad("date", problem)
        if ref is not None:
            try:
                check_external_ref(ref, file=where, line=line)
            except InputError as exc:
                problems.extend(exc.problems)
            else:
                if ref in ref_lines:
                    bad("ref", f"{ref} is already on line {ref_lines[ref]}")
                ref_lines.setdefault(ref, line)
        rows.append(Row(line, email, on, ref))
    if problems:
        raise ReferralsError(problems)
    return rows
