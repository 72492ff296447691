"""Contacts: CSV import (all-or-nothing, safe to repeat), look-ups and the template view.

Every test that takes ``db`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nurture.clock import FakeClock
from nurture.db import Database
from nurture.errors import ContactsError
from nurture.intake import contacts
from nurture.intake.contacts import (
    ImportResult,
    contact_view,
    find_contacts,
    get_contact,
    get_or_create_contact,
    import_contacts,
    normalize_email,
)
from nurture.models import Contact, ContactStatus, Event

SAMPLE = Path(__file__).parent.parent / "nurture" / "skeleton" / "contacts.csv"
LEE = "dr.lee@lakeside-ortho.example.org"
PRIYA = "priya.shah@maplefamilymed.example.com"
HEADER = "email,first_name,last_name,organization,role,tags,interests,timezone,owner"


def write(tmp_path: Path, text: str | bytes, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def count(db: Database, model: type = Contact) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def load(db: Database, email: str) -> Contact:
    with db.transaction() as session:
        contact = get_contact(session, email)
    assert contact is not None, email
    return contact


def events(db: Database) -> list[dict[str, object]]:
    with db.transaction() as session:
        rows = session.scalars(select(Event).where(Event.kind == "contacts_imported")
                               .order_by(Event.id))
        return [event.data for event in rows]


def test_import_sample_creates_every_contact(db: Database, clock: FakeClock) -> None:
    assert import_contacts(db, SAMPLE, clock) == ImportResult(created=8, updated=0, unchanged=0)

    assert count(db) == 8
    lee = load(db, LEE)
    assert (lee.first_name, lee.last_name, lee.organization, lee.role) == (
        "Dana", "Lee", "Lakeside Orthopedics, PC", "orthopedic surgeon")
    assert lee.tag_names == ["ortho", "physician", "prospect"]
    assert lee.interests == ["ACL reconstruction", "return to sport"]
    assert (lee.timezone, lee.owner) == ("America/New_York", "Maria")
    assert lee.status == ContactStatus.ACTIVE
    assert lee.created_at == lee.updated_at == clock.now()
    assert not lee.needs_details
    assert load(db, "j.brooks@brooks-chiro.example.com").timezone == ""
    assert not load(db, "frontdesk@summit-fitness.example.com").needs_details  # organization only
    assert events(db) == [{"file": "contacts.csv", "rows": 8,
                           "created": 8, "updated": 0, "unchanged": 0}]


def test_reimport_changes_nothing_and_creates_no_duplicates(db: Database,
                                                            clock: FakeClock) -> None:
    imported_at = clock.now()
    import_contacts(db, SAMPLE, clock)
    clock.advance(days=1)

    assert import_contacts(db, SAMPLE, clock) == ImportResult(created=0, updated=0, unchanged=8)
    assert count(db) == 8
    assert load(db, LEE).updated_at == imported_at
    assert [event["unchanged"] for event in events(db)] == [0, 8]


def test_reimport_with_other_case_updates_the_same_contact(db: Database, clock: FakeClock,
                                                           tmp_path: Path) -> None:
    import_contacts(db, SAMPLE, clock)
    lee_id = load(db, LEE).id
    clock.advance(hours=2)
    path = write(tmp_path, "email,role\nDR.LEE@Lakeside-Ortho.EXAMPLE.org,sports surgeon\n")

    assert import_contacts(db, path, clock) == ImportResult(created=0, updated=1, unchanged=0)
    assert count(db) == 8
    lee = load(db, "Dr.Lee@LAKESIDE-ORTHO.example.org")
    assert (lee.id, lee.email, lee.role) == (lee_id, LEE, "sports surgeon")
    assert lee.updated_at == clock.now()


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_bad_rows_are_all_reported_with_their_lines_and_nothing_is_written(
        db: Database, clock: FakeClock, tmp_path: Path, newline: str) -> None:
    import_contacts(db, SAMPLE, clock)
    lines = [
        "email,first_name,organization,interests,timezone",  # 1
        'new.one@example.org,Ann,"Riverside',  # 2: a quoted field spanning two lines
        'Physical Medicine",,America/Chicago',  # 3
        "not-an-email,Bob,,,",  # 4: bad email
        'ok@example.org,Cy,"Two',  # 5: bad time zone, reported where the row starts
        'Line Clinic",,Mars/Olympus',  # 6
        "",  # 7: blank lines are skipped but still counted
        "New.One@Example.org,Dee,,,",  # 8: same address as line 2
        "zoë@example.org,Zoë,,,",  # 9: would need SMTPUTF8
        "ann@bücher.example,Ann,,,",  # 10: fine: the domain is stored in IDNA form
    ]
    path = write(tmp_path, newline.join(lines) + newline)

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, path, clock)

    problems = caught.value.problems
    assert [(p.file, p.line, p.field) for p in problems] == [
        (str(path), 4, "email"), (str(path), 5, "timezone"), (str(path), 8, "email"),
        (str(path), 9, "email")]
    assert "not-an-email" in problems[0].message
    assert "Mars/Olympus" in problems[1].message
    assert "line 2" in problems[2].message
    assert "non-ASCII characters before the @" in problems[3].message
    assert count(db) == 8
    assert len(events(db)) == 1
    with db.transaction() as session:
        assert get_contact(session, "new.one@example.org") is None
    assert normalize_email("Ann@Bücher.example") == "ann@xn--bcher-kva.example"


def test_an_unknown_column_is_named(db: Database, clock: FakeClock, tmp_path: Path) -> None:
    path = write(tmp_path, "email,first_name,Fax\nann@example.org,Ann,555-0100\n", "other.csv")

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, path, clock)

    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 1, "Fax")
    assert "unknown column 'Fax'" in problem.message
    assert "other.csv:1: Fax: unknown column" in str(caught.value)
    assert count(db) == 0


@pytest.mark.parametrize(("content", "line", "field"), [
    pytest.param("first_name\nAnn\n", 1, "email", id="no-email-column"),
    pytest.param("", None, "email", id="empty-file"),
    pytest.param("email,Email \nann@example.org,x@example.org\n", 1, "email", id="column-twice"),
    pytest.param("email,tags\nann@example.org,prospect;Not Valid!\n", 2, "tags", id="bad-tag"),
    pytest.param("email,first_name\nann@example.org,Ann,extra\n", 2, "", id="extra-cell"),
    pytest.param("email,first_name\n,Ann\n", 2, "email", id="blank-email"),
    pytest.param('email\n"Ann <ann@example.org>"\n', 2, "email", id="display-name"),
    pytest.param("email\nann@example\n", 2, "email", id="no-dot-in-domain"),
    pytest.param("email\nann@@example.org\n", 2, "email", id="two-ats"),
    pytest.param("email\nann smith@example.org\n", 2, "email", id="space"),
    pytest.param("email,first_name\nann@example.org," + "x" * 101 + "\n", 2, "first_name",
                 id="too-long"),
    pytest.param(b"email\nann@example.org\n\xff@example.org\n", 3, "", id="not-utf8"),
])
def test_invalid_files_are_rejected_at_the_right_place(
        db: Database, clock: FakeClock, tmp_path: Path, content: str | bytes, line: int | None,
        field: str) -> None:
    path = write(tmp_path, content)

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, path, clock)

    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [(str(path), line, field)]
    assert count(db) == 0


def test_a_missing_file_is_a_contacts_error(db: Database, clock: FakeClock,
                                            tmp_path: Path) -> None:
    with pytest.raises(ContactsError) as caught:
        import_contacts(db, tmp_path / "nope.csv", clock)
    assert caught.value.problems[0].line is None


def test_headers_are_case_insensitive_in_any_order_with_bom(db: Database, clock: FakeClock,
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff Tags ,EMAIL ,First_Name,TimeZone\r\n"
                           "prospect; Gym ;,  Front.Desk@Example.COM ,Ann,america/chicago\r\n")

    assert import_contacts(db, path, clock) == ImportResult(created=1, updated=0, unchanged=0)
    contact = load(db, "front.desk@example.com")
    assert (contact.email, contact.first_name) == ("front.desk@example.com", "Ann")
    assert contact.tag_names == ["gym", "prospect"]
    assert contact.timezone == "America/Chicago"


def test_an_unsubscribed_contact_stays_unsubscribed(db: Database, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    import_contacts(db, SAMPLE, clock)
    unsubscribed_at = clock.now()
    with db.transaction() as session:
        lee = get_contact(session, LEE)
        assert lee is not None
        lee.status, lee.status_changed_at = ContactStatus.UNSUBSCRIBED, unsubscribed_at
    clock.advance(days=3)
    path = write(tmp_path, f"email,role,tags\n{LEE.upper()},sports surgeon,prospect;vip\n")

    assert import_contacts(db, SAMPLE, clock).unchanged == 8
    assert import_contacts(db, path, clock).updated == 1
    lee = load(db, LEE)
    assert lee.status == ContactStatus.UNSUBSCRIBED
    assert lee.status_changed_at == unsubscribed_at
    assert lee.role == "sports surgeon"


def test_blank_cells_keep_stored_values(db: Database, clock: FakeClock, tmp_path: Path) -> None:
    import_contacts(db, SAMPLE, clock)
    before = contact_view(load(db, LEE))
    path = write(tmp_path, f"{HEADER}\n{LEE},,,,,,,,\n{PRIYA},,,,,,,,Jordan\n")

    assert import_contacts(db, path, clock) == ImportResult(created=0, updated=1, unchanged=1)
    lee, priya = load(db, LEE), load(db, PRIYA)
    assert contact_view(lee) == before
    assert (lee.timezone, lee.owner, lee.tag_names) == (
        "America/New_York", "Maria", ["ortho", "physician", "prospect"])
    assert (priya.first_name, priya.organization, priya.owner) == (
        "Priya", "Maple Family Medicine", "Jordan")
    assert priya.interests == ["low back pain", "fall prevention"]


def test_tags_are_added_never_removed(db: Database, clock: FakeClock, tmp_path: Path) -> None:
    import_contacts(db, SAMPLE, clock)
    added = write(tmp_path, f"email,tags\n{LEE},VIP;physician\n", "added.csv")
    fewer = write(tmp_path, f"email,tags\n{LEE},physician\n", "fewer.csv")

    assert import_contacts(db, added, clock).updated == 1
    assert import_contacts(db, fewer, clock).unchanged == 1
    assert load(db, LEE).tag_names == ["ortho", "physician", "prospect", "vip"]


def test_needs_details_is_cleared_by_a_name_or_organization(db: Database, clock: FakeClock,
                                                            tmp_path: Path) -> None:
    with db.transaction() as session:
        get_or_create_contact(session, "new.source@example.org", clock)
    path = write(tmp_path, "email,first_name\nnew.source@example.org,Ann\nbare@example.org,\n")

    assert load(db, "new.source@example.org").needs_details
    assert import_contacts(db, path, clock) == ImportResult(created=1, updated=1, unchanged=0)
    assert not load(db, "new.source@example.org").needs_details
    assert load(db, "bare@example.org").needs_details


def test_find_contacts_by_tag_and_email(db: Database, clock: FakeClock) -> None:
    import_contacts(db, SAMPLE, clock)
    with db.transaction() as session:
        trainers = find_contacts(session, tags=["trainer"])
        mixed = find_contacts(session, tags=["Physician", "gym"], emails=[
            f" {LEE.upper()} ", "kim.nguyen@wellfed-nutrition.example.org"])
        nothing = find_contacts(session)
        unknown = find_contacts(session, tags=["nope"], emails=["nobody@example.org"])

    assert [c.email for c in trainers] == ["coach.rivera@ironworks-gym.example.com",
                                           "sam.patel@example.com"]
    assert [c.email for c in mixed] == [
        LEE, "frontdesk@summit-fitness.example.com", "kim.nguyen@wellfed-nutrition.example.org",
        PRIYA, "tom.okafor@northside-clinic.example.org"]
    assert nothing == [] and unknown == []


def test_contact_view_holds_only_plain_template_fields(db: Database, clock: FakeClock) -> None:
    import_contacts(db, SAMPLE, clock)
    lee = load(db, LEE)

    view = contact_view(lee)

    assert view == {"first_name": "Dana", "last_name": "Lee", "email": LEE,
                    "organization": "Lakeside Orthopedics, PC", "role": "orthopedic surgeon",
                    "interests": ["ACL reconstruction", "return to sport"]}
    assert list(view) == ["first_name", "last_name", "email", "organization", "role", "interests"]
    assert view["interests"] is not lee.interests
    assert json.loads(json.dumps(view)) == view


def test_get_or_create_contact(db: Database, clock: FakeClock) -> None:
    with db.transaction() as session:
        contact, created = get_or_create_contact(session, " New.Source@Example.org ", clock)
        assert created
        assert (contact.email, contact.needs_details) == ("new.source@example.org", True)
        assert contact_view(contact)["first_name"] == ""
        created_id = contact.id
    with db.transaction() as session:
        again, created = get_or_create_contact(session, "NEW.SOURCE@example.org", clock)
        assert (again.id, created) == (created_id, False)
    assert count(db) == 1
    assert load(db, "new.source@example.org").created_at == clock.now()


def test_get_or_create_contact_rejects_a_bad_address(db: Database, clock: FakeClock) -> None:
    with pytest.raises(ContactsError) as caught, db.transaction() as session:
        get_or_create_contact(session, "not an address", clock)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("<input>", None, "email")
    assert count(db) == 0


def test_get_or_create_contact_survives_a_concurrent_insert(
        db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.transaction() as session:  # another process wins the race ...
        winner, _ = get_or_create_contact(session, "race@example.org", clock)
    real, calls = contacts.get_contact, []

    def stale_first(session: object, email: str) -> Contact | None:
        calls.append(email)  # ... after our look-up had found nothing
        return None if len(calls) == 1 else real(session, email)  # type: ignore[arg-type]

    monkeypatch.setattr(contacts, "get_contact", stale_first)
    clock.advance(minutes=1)
    with db.transaction() as session:
        contact, created = get_or_create_contact(session, "race@example.org", clock)
        assert (contact.id, created) == (winner.id, False)
    assert len(calls) == 2
    assert count(db) == 1


@pytest.mark.parametrize(("raw", "expected"), [
    ("Dr.Lee@Lakeside-Ortho.Example.ORG", LEE),
    ("  sam.patel@example.com\t", "sam.patel@example.com"),
    ("first+tag@mail.example.co.uk", "first+tag@mail.example.co.uk"),
])
def test_normalize_email_accepts_and_lower_cases(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "plainaddress", "@example.org", "ann@", "ann@example", "ann@example.",
    "ann@.example.org", "a@b@example.org", "ann smith@example.org", "Ann <ann@example.org>",
    "ann@example..org", "x" * 320 + "@example.org",
])
def test_normalize_email_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_email(raw)

