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

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, String, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..bulk import insert_rows
from ..clock import Clock
from ..db import Database
from ..errors import ContactsError, Problem
from ..models import Base, Contact, ContactTag, Event
from ..progress import Progress

TEXT_FIELDS = ("first_name", "last_name", "organization", "role", "timezone", "owner")
COLUMNS = ("email", *TEXT_FIELDS, "tags", "interests", "aliases")
LIST_SEPARATOR = ";"
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
# A plain dot-atom address, which parseaddr always reads as itself: such an address (nearly all
# of them) skips parseaddr, the slowest part of checking a 50,000-row file.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_CHUNK = 500  # rows per batch and per IN (...) look-up, well inside every driver's limit
VIEW_FIELDS = ("first_name", "last_name", "email", "organization", "role")
# Checked before writing, because PostgreSQL would reject longer values half-way through.
LIMITS = {**{c.name: c.type.length for c in Contact.__table__.c if isinstance(c.type, String)},
          "tag": ContactTag.__table__.c.tag.type.length}  # type: ignore[attr-defined]
_CONTACTS = Base.metadata.tables["contacts"]
_TAGS = Base.metadata.tables["contact_tags"]
_ALIASES = Base.metadata.tables["contact_aliases"]


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


def control_character(text: str) -> str | None:
    """``"a control character (U+0001)"`` naming the first one in ``text``, or None.

    The one check every intake shares (CSV cells, addresses given on the command line or to a
    webhook): PostgreSQL cannot store a NUL, and the others hide in names and subjects.
    """
    found = _CONTROL.search(text)
    return None if found is None else f"a control character (U+{ord(found[0]):04X})"


def normalize_email(value: str) -> str:
    """Trim, check and lower-case an address (one address in any case is one contact).

    Raises ValueError. Pragmatic, not RFC 5322: it catches typos, pasted ``Name <addr>`` and
    control characters (``a\\x01b@x.org``).
    """
    text = value.strip()
    if not text:
        raise ValueError("an email address is required")
    if (control := control_character(text)) is not None:
        raise ValueError(f"{text!r} holds {control}, which no address may")
    if (not _EMAIL.fullmatch(text)
            or (not _PLAIN.fullmatch(text) and parseaddr(text) != ("", text))
            or len(text) > LIMITS["email"]):
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


def import_contacts(db: Database, path: Path, clock: Clock,
                    progress: Progress | None = None) -> ImportResult:
    """Validate the whole file, then create or update its contacts in one transaction.

    Raises :class:`ContactsError` listing every problem, having written nothing. An existing
    contact (same address, any case) gets the row's non-blank values, or counts as unchanged.
    ``needs_details`` stays set while a contact has no first name and no organization.
    The rows are written in batches with Core statements (a look-up, one multi-row insert per
    table and one executemany update per batch: :mod:`nurture.bulk`); ``progress`` hears after
    each batch.
    """
    from .contacts_csv import read_contacts  # it checks addresses with normalize_email

    rows, now, counts = read_contacts(path), clock.now(), {"created": 0, "updated": 0,
                                                           "unchanged": 0}
    with db.transaction() as session:
        conn = session.connection()
        taken = _taken_aliases(conn, path, rows)
        for start in range(0, len(rows), _CHUNK):
            _import_batch(conn, rows[start:start + _CHUNK], taken, now, counts)
            if progress is not None:
                progress(min(start + _CHUNK, len(rows)), len(rows))
        session.add(Event(at=now, kind="contacts_imported",
                          detail=json.dumps({"file": path.name, "rows": len(rows), **counts})))
    return ImportResult(**counts)


def _import_batch(conn: Connection, batch: list[dict[str, Any]], taken: dict[str, int],
                  now: datetime, counts: dict[str, int]) -> None:
    """Create the batch's new contacts and update the changed ones, with their tags and
    aliases: the same rules as one row at a time, in a handful of statements."""
    stored = {row.email: row for row in conn.execute(
        select(_CONTACTS).where(_CONTACTS.c.email.in_([row["email"] for row in batch])))}
    tags_of: dict[int, set[str]] = defaultdict(set)
    if stored:
        ids = [contact.id for contact in stored.values()]
        for contact_id, tag in conn.execute(select(_TAGS.c.contact_id, _TAGS.c.tag)
                                            .where(_TAGS.c.contact_id.in_(ids))):
            tags_of[contact_id].add(tag)
    created: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    aliases: list[dict[str, Any]] = []
    for row in batch:
        old = stored.get(row["email"])
        if old is None:
            created.append({"email": row["email"], **{f: row[f] for f in TEXT_FIELDS},
                            "interests": row["interests"], "status": "active",
                            "status_changed_at": None, "created_at": now, "updated_at": now,
                            "needs_details": not (row["first_name"] or row["organization"])})
            counts["created"] += 1
            continue
        values = {field: row[field] or getattr(old, field)
                  for field in (*TEXT_FIELDS, "interests")}
        needs_details = old.needs_details and not (row["first_name"] or row["organization"])
        new_tags = [tag for tag in row["tags"] if tag not in tags_of[old.id]]
        new_aliases = [alias for alias in row["aliases"] if taken.get(alias) != old.id]
        tags += [{"contact_id": old.id, "tag": tag} for tag in new_tags]
        aliases += [{"contact_id": old.id, "email": alias} for alias in new_aliases]
        if (new_tags or new_aliases or needs_details != old.needs_details
                or any(values[field] != getattr(old, field) for field in values)):
            changed.append({"b_id": old.id, **values, "needs_details": needs_details,
                            "updated_at": now})
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    if created:
        ids_by_email = {email: contact_id for contact_id, email in insert_rows(
            conn, _CONTACTS, created, returning=("id", "email"))}
        for row in batch:
            if (contact_id := ids_by_email.get(row["email"])) is not None:
                tags += [{"contact_id": contact_id, "tag": tag} for tag in row["tags"]]
                aliases += [{"contact_id": contact_id, "email": a} for a in row["aliases"]]
    if changed:
        conn.execute(update(_CONTACTS).where(_CONTACTS.c.id == bindparam("b_id")), changed)
    insert_rows(conn, _TAGS, tags)
    insert_rows(conn, _ALIASES, aliases)


def _taken_aliases(conn: Connection, path: Path, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Stored aliases among the file's, by address: contact id. Raises ContactsError when an
    alias is another contact's address, or another contact's alias, in the database."""
    wanted = {alias: row for row in rows for alias in row["aliases"]}
    taken: dict[str, int] = {}
    owners: dict[str, int] = {}  # the contacts of the rows naming those aliases, by address
    problems = []
    addresses = list(wanted)
    for start in range(0, len(addresses), _CHUNK):
        chunk = addresses[start:start + _CHUNK]
        taken.update(conn.execute(select(_ALIASES.c.email, _ALIASES.c.contact_id)
                                  .where(_ALIASES.c.email.in_(chunk))).all())
        for email in conn.scalars(select(_CONTACTS.c.email).where(_CONTACTS.c.email.in_(chunk))):
            problems.append(Problem(str(path), wanted[email]["line"], "aliases",
                                    f"{email} is the address of another contact"))
    emails = list({wanted[alias]["email"] for alias in taken})
    for start in range(0, len(emails), _CHUNK):
        chunk = emails[start:start + _CHUNK]
        owners.update(conn.execute(select(_CONTACTS.c.email, _CONTACTS.c.id)
                                   .where(_CONTACTS.c.email.in_(chunk))).all())
    for alias, contact_id in taken.items():
        if owners.get(wanted[alias]["email"]) != contact_id:
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
    email_keys = [key for email in emails if (key := _email_key(email))]
    if not tag_keys and not email_keys:
        return []
    tagged = select(ContactTag.contact_id).where(ContactTag.tag.in_(tag_keys))
    query = select(Contact).where(or_(Contact.id.in_(tagged), Contact.email.in_(email_keys)))
    return sorted(session.scalars(query), key=lambda contact: contact.email)


def get_contact(session: Session, email: str) -> Contact | None:
    """The contact with this address in any case, or None (also for a malformed address)."""
    key = _email_key(email)
    return None if key is None else session.scalar(select(Contact).where(Contact.email == key))


def _email_key(email: str) -> str | None:
    """The stored form of an address, or None for one that no contact can have."""
    try:
        return normalize_email(email)
    except ValueError:
        return None


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


def _blank(email: str, now: datetime) -> Contact:
    """A new contact, flagged ``needs_details`` until a first name or organization is known."""
    return Contact(email=email, interests=[], needs_details=True, created_at=now, updated_at=now,
                   tags=[], **dict.fromkeys(TEXT_FIELDS, ""))

