"""Contacts: the referral sources, imported from a CSV file and looked up again.

The CSV (UTF-8, BOM or not) has a header row naming, in any order and any case: ``email``
(required), ``first_name``, ``last_name``, ``organization``, ``role``, ``tags``, ``interests``,
``timezone``, ``owner``, ``aliases``. ``tags``, ``interests`` and ``aliases`` hold several
values separated by ``;`` (a comma would clash with the CSV), e.g. ``prospect;physician``. Tags
are lower-cased slugs; ``timezone`` is empty or an IANA name such as ``America/Chicago``.
``aliases`` are the contact's other addresses (a second mailbox, the office manager who answers
for them): mail from them is matched to the contact, nothing is ever sent to them, and an
address is the alias of one contact at most and never another contact's own address.

An import is all-or-nothing: every row is checked first and every problem reported at once with
its physical line, so a user fixes the file in one pass and never has half of it imported.
Re-importing an export is safe: a blank cell (or a missing column) keeps the stored value, tags
and aliases are only ever added, never removed, and ``status`` is never touched, so an
unsubscribed contact stays unsubscribed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import String, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..clock import Clock
from ..db import Database
from ..errors import ContactsError, Problem
from ..models import Contact, ContactAlias, ContactTag, Event

TEXT_FIELDS = ("first_name", "last_name", "organization", "role", "timezone", "owner")
COLUMNS = ("email", *TEXT_FIELDS, "tags", "interests", "aliases")
LIST_SEPARATOR = ";"
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]*")
_CHUNK = 500  # addresses per IN (...) look-up, well inside every driver's parameter limit
VIEW_FIELDS = ("first_name", "last_name", "email", "organization", "role")
# Checked before writing, because PostgreSQL would reject longer values half-way through.
_LIMITS = {**{c.name: c.type.length for c in Contact.__table__.c if isinstance(c.type, String)},
           "tag": ContactTag.__table__.c.tag.type.length}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


def normalize_email(value: str) -> str:
    """Trim, check and lower-case an address (one address in any case is one contact).

    Raises ValueError. Pragmatic, not RFC 5322: it catches typos and pasted ``Name <addr>``.
    """
    text = value.strip()
    if not text:
        raise ValueError("an email address is required")
    if (not _EMAIL.fullmatch(text) or parseaddr(text) != ("", text)
            or len(text) > _LIMITS["email"]):
        raise ValueError(f"{text!r} is not an email address")
    local, _, domain = text.rpartition("@")
    if not local.isascii():
        # Such an address needs SMTPUTF8 end to end, which nurture does not use: refused here
        # rather than failing at every send.
        raise ValueError(f"{text!r} has non-ASCII characters before the @, which nurture "
                         "cannot send to")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")  # bücher.example → xn--bcher-kva…
        except UnicodeError:
            raise ValueError(f"{text!r} is not an email address") from None
    return f"{local}@{domain}".lower()


def import_contacts(db: Database, path: Path, clock: Clock) -> ImportResult:
    """Validate the whole file, then create or update its contacts in one transaction.

    Raises :class:`ContactsError` listing every problem, having written nothing. An existing
    contact (same address, any case) gets the row's non-blank values, or counts as unchanged.
    ``needs_details`` stays set while a contact has no first name and no organization.
    """
    rows, now, counts = _validate(path), clock.now(), {"created": 0, "updated": 0, "unchanged": 0}
    with db.transaction() as session:
        emails = [row["email"] for row in rows]
        existing: dict[str, Contact] = {}
        for start in range(0, len(emails), _CHUNK):
            query = select(Contact).where(Contact.email.in_(emails[start:start + _CHUNK]))
            existing.update((contact.email, contact) for contact in session.scalars(query))
        taken = _taken_aliases(session, path, rows, existing)
        pending: list[tuple[Contact, str]] = []
        for row in rows:
            new = row["email"] not in existing
            contact = _blank(row["email"], now) if new else existing[row["email"]]
            session.add(contact)
            changed = _apply(contact, row, now)
            added = [a for a in row["aliases"] if new or taken.get(a) != contact.id]
            pending += [(contact, alias) for alias in added]
            if added and not new:
                contact.updated_at, changed = now, True
            counts["created" if new else "updated" if changed else "unchanged"] += 1
        if pending:
            session.flush()  # new contacts get their ids
            session.add_all(ContactAlias(contact_id=c.id, email=a) for c, a in pending)
        session.add(Event(at=now, kind="contacts_imported",
                          detail=json.dumps({"file": path.name, "rows": len(rows), **counts})))
    return ImportResult(**counts)


def _taken_aliases(session: Session, path: Path, rows: list[dict[str, Any]],
                   existing: dict[str, Contact]) -> dict[str, int]:
    """Stored aliases among the file's, by address: contact id. Raises ContactsError when an
    alias is another contact's address, or another contact's alias, in the database."""
    wanted = {alias: row for row in rows for alias in row["aliases"]}
    taken: dict[str, int] = {}
    problems = []
    addresses = list(wanted)
    for start in range(0, len(addresses), _CHUNK):
        chunk = addresses[start:start + _CHUNK]
        taken.update((a.email, a.contact_id) for a in session.scalars(
            select(ContactAlias).where(ContactAlias.email.in_(chunk))))
        for email in session.scalars(select(Contact.email).where(Contact.email.in_(chunk))):
            problems.append(Problem(str(path), wanted[email]["line"], "aliases",
                                    f"{email} is the address of another contact"))
    for alias, contact_id in taken.items():
        owner = existing.get(wanted[alias]["email"])
        if owner is None or owner.id != contact_id:
            problems.append(Problem(str(path), wanted[alias]["line"], "aliases",
                                    f"{alias} is already an alias of another contact"))
    if problems:
        raise ContactsError(sorted(problems, key=lambda p: p.line or 0))
    return taken


def find_contacts(session: Session, *, tags: Sequence[str] = (),
                  emails: Sequence[str] = ()) -> list[Contact]:
    """Contacts having ANY of ``tags``, plus those with ``emails``, each once, ordered by email.

    Nothing asked finds nothing, never everyone; status is not filtered. Sorted in Python so
    SQLite and PostgreSQL, whose collations differ, give the same order.
    """
    tag_keys = [tag.strip().lower() for tag in tags if tag.strip()]
    email_keys = [email.strip().lower() for email in emails if email.strip()]
    if not tag_keys and not email_keys:
        return []
    tagged = select(ContactTag.contact_id).where(ContactTag.tag.in_(tag_keys))
    query = select(Contact).where(or_(Contact.id.in_(tagged), Contact.email.in_(email_keys)))
    return sorted(session.scalars(query), key=lambda contact: contact.email)


def get_contact(session: Session, email: str) -> Contact | None:
    """The contact with this address in any case, or None (also for a malformed address)."""
    return session.scalar(select(Contact).where(Contact.email == email.strip().lower()))


def get_or_create_contact(session: Session, email: str, clock: Clock) -> tuple[Contact, bool]:
    """The contact for ``email`` and whether it was created just now.

    A referral can come from someone never imported: they get ``needs_details`` so the user
    fills them in. A savepoint turns a concurrent insert of the same address into a look-up.
    """
    try:
        key = normalize_email(email)
    except ValueError as exc:
        raise ContactsError([Problem("<input>", None, "email", str(exc))]) from None
    if (contact := get_contact(session, key)) is not None:
        return contact, False
    contact = _blank(key, clock.now())
    try:
        with session.begin_nested():
            session.add(contact)
    except IntegrityError:
        if (contact := get_contact(session, key)) is None:
            raise
        return contact, False
    return contact, True


def contact_view(contact: Contact) -> dict[str, Any]:
    """The only contact data templates see: plain values, so a template cannot reach the ORM
    (status, owner, relationships) or trigger database queries while rendering."""
    view = {field: getattr(contact, field) or "" for field in VIEW_FIELDS}
    return {**view, "interests": [str(item) for item in contact.interests or []]}


@cache
def _zones() -> dict[str, str]:
    """IANA names by lower case: ``america/chicago`` is accepted and stored canonically."""
    return {name.lower(): name for name in available_timezones()}


def _split(cell: str) -> list[str]:
    return list(dict.fromkeys(item.strip() for item in cell.split(LIST_SEPARATOR) if item.strip()))


def read_csv_rows(path: Path, problems: list[Problem]) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a UTF-8 CSV file (header first), each with the physical line it
    starts on, for every CSV import's line-numbered errors: csv's ``line_num`` counts physical
    lines, so quoted fields spanning lines do not skew it. An unreadable or malformed file adds
    a problem to ``problems`` and gives no rows."""
    where, raw = str(path), b""
    try:
        text = (raw := path.read_bytes()).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        at = raw[:exc.start].count(b"\n") + 1 if isinstance(exc, UnicodeDecodeError) else None
        problems.append(Problem(where, at, "", f"cannot read as UTF-8 CSV: {exc}"))
        return []
    rows, end, reader = [], 0, csv.reader(io.StringIO(text, newline=""))  # csv splits lines itself
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
    except csv.Error as exc:
        problems.append(Problem(where, end + 1, "", f"malformed CSV: {exc}"))
        return []
    return rows


def _validate(path: Path) -> list[dict[str, Any]]:
    """Every row checked and cleaned, or ContactsError with every problem in the file."""
    where, problems = str(path), list[Problem]()
    table = read_csv_rows(path, problems)
    head, header = table[0] if table else (None, [])
    names = [cell.strip().lower() for cell in header]
    for index, name in enumerate(names):
        if name not in COLUMNS:
            what = f"unknown column {header[index].strip()!r}" if name else "a column has no name"
            problems.append(Problem(where, head, header[index].strip(),
                                    f"{what}; expected some of: {', '.join(COLUMNS)}"))
        elif name in names[:index]:
            problems.append(Problem(where, head, name, "the column appears twice"))
    if "email" not in names:  # no row can be checked without it
        if table or not problems:  # (an unreadable file has said so already)
            problems.append(Problem(where, head, "email", "a header row naming email is required"))
        raise ContactsError(problems)
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
            if len(row[field]) > _LIMITS[field]:
                bad(field, f"longer than {_LIMITS[field]} characters")
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
            if not _TAG.fullmatch(tag) or len(tag) > _LIMITS["tag"]:
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


def _blank(email: str, now: datetime) -> Contact:
    """A new contact, flagged ``needs_details`` until a first name or organization is known."""
    return Contact(email=email, interests=[], needs_details=True, created_at=now, updated_at=now,
                   tags=[], **dict.fromkeys(TEXT_FIELDS, ""))


def _apply(contact: Contact, row: dict[str, Any], now: datetime) -> bool:
    """Copy a row's non-blank values onto a stored contact; True if anything changed."""
    changes = {field: row[field] for field in (*TEXT_FIELDS, "interests")
               if row[field] and getattr(contact, field) != row[field]}
    if contact.needs_details and (row["first_name"] or row["organization"]):
        changes["needs_details"] = False
    new_tags = [tag for tag in row["tags"] if tag not in contact.tag_names]
    for field, value in changes.items():  # interests is a new list, so the JSON change is seen
        setattr(contact, field, value)
    contact.tags.extend(ContactTag(tag=tag) for tag in new_tags)
    if changes or new_tags:
        contact.updated_at = now
    return bool(changes or new_tags)
