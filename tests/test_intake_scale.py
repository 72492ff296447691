"""Intake at the size of a real list: batched imports and enrollments keep every rule.

Every test runs on SQLite and PostgreSQL. Sizes span several batches (of 500 rows for an
import, 2,000 enrollments); timings live in ``bench/intake.py``, never here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from nurture.app import Nurture
from nurture.clock import FakeClock
from nurture.db import Database
from nurture.engine import enroll, enroll_contact
from nurture.errors import ContactsError
from nurture.intake.contacts import ImportResult, get_contact, import_contacts, normalize_email
from nurture.intake.referrals_csv import ReferralsError, import_referrals
from nurture.models import Contact, ContactAlias, ContactTag, Enrollment, Event, Referral, Touch
from nurture.schedule import due_at

HEADER = "email,first_name,organization,tags,interests,timezone,aliases"
ZONES = ["America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham",
         "Europe/London", "America/St_Johns", "America/Los_Angeles", ""]


def big_csv(path: Path, n: int, *, tail: str = "") -> Path:
    lines = [HEADER]
    for i in range(n):
        first = "" if i % 7 == 0 else f"Ann{i}"
        org = "" if i % 7 == 0 or i % 3 == 0 else f"Clinic {i % 50}"
        alias = f"office{i}@alias.example" if i % 100 == 0 else ""
        lines.append(f"c{i}@clinic{i % 97}.example,{first},{org},prospect;t{i % 5},"
                     f"knee;run{i % 3},{ZONES[i % len(ZONES)]},{alias}")
    path.write_text("\n".join(lines + ([tail] if tail else [])) + "\n")
    return path


def count(db: Database, model: type) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def snapshot(db: Database) -> list[tuple[object, ...]]:
    with db.transaction() as session:
        contacts = session.execute(select(
            Contact.id, Contact.email, Contact.first_name, Contact.organization,
            Contact.interests, Contact.timezone, Contact.needs_details, Contact.updated_at)
            .order_by(Contact.id)).all()
        tags = session.execute(select(ContactTag.contact_id, ContactTag.tag)
                               .order_by(ContactTag.contact_id, ContactTag.tag)).all()
        aliases = session.execute(select(ContactAlias.contact_id, ContactAlias.email)
                                  .order_by(ContactAlias.email)).all()
    return [tuple(row) for row in [*contacts, *tags, *aliases]]


def test_a_big_file_imports_in_batches_and_again_changes_nothing(
        db: Database, clock: FakeClock, tmp_path: Path) -> None:
    path = big_csv(tmp_path / "big.csv", 1_600)
    seen: list[tuple[int, int]] = []

    assert import_contacts(db, path, clock, lambda done, total: seen.append((done, total))) == (
        ImportResult(created=1_600, updated=0, unchanged=0))
    assert seen == [(500, 1_600), (1_000, 1_600), (1_500, 1_600), (1_600, 1_600)]
    assert (count(db, Contact), count(db, ContactTag), count(db, ContactAlias)) == (
        1_600, 3_200, 16)
    with db.transaction() as session:
        c7, c8 = get_contact(session, "c7@clinic7.example"), get_contact(session,
                                                                        "c8@clinic8.example")
        alias_owner = session.scalar(select(ContactAlias.contact_id).where(
            ContactAlias.email == "office100@alias.example"))
        c100 = get_contact(session, "c100@clinic3.example")
        assert c7 is not None and c8 is not None and c100 is not None
        assert (c7.needs_details, c8.needs_details) == (True, False)
        assert (c8.first_name, c8.organization, c8.interests, c8.timezone) == (
            "Ann8", "Clinic 8", ["knee", "run2"], ZONES[0])
        assert c8.tag_names == ["prospect", "t3"] and alias_owner == c100.id
    before = snapshot(db)
    clock.advance(days=1)

    assert import_contacts(db, path, clock) == ImportResult(created=0, updated=0, unchanged=1_600)
    assert snapshot(db) == before
    with db.transaction() as session:
        kinds = session.scalars(select(Event.kind).order_by(Event.id)).all()
    assert kinds == ["contacts_imported", "contacts_imported"]


def test_a_second_file_updates_across_batches_by_the_same_rules(
        db: Database, clock: FakeClock, tmp_path: Path) -> None:
    import_contacts(db, big_csv(tmp_path / "big.csv", 1_200), clock)
    clock.advance(hours=1)
    rows = [HEADER,
            "C7@clinic7.example,Dee,,vip,,,",  # a name clears needs_details; a tag is added
            "c8@clinic8.example,,,,,,second8@alias.example",  # an alias is added
            "c9@clinic9.example,,,prospect;t4,,,",  # nothing new
            *[f"new{i}@example.org,,,,,," for i in range(600)]]  # new, in another batch
    (tmp_path / "more.csv").write_text("\n".join(rows) + "\n")

    assert import_contacts(db, tmp_path / "more.csv", clock) == ImportResult(
        created=600, updated=2, unchanged=1)
    with db.transaction() as session:
        c7, c8, c9, new = (get_contact(session, email) for email in (
            "c7@clinic7.example", "c8@clinic8.example", "c9@clinic9.example",
            "new599@example.org"))
        assert c7 is not None and c8 is not None and c9 is not None and new is not None
        assert (c7.first_name, c7.needs_details, c7.tag_names) == (
            "Dee", False, ["prospect", "t2", "vip"])
        assert c7.interests == ["knee", "run1"] and c7.updated_at == clock.now()
        assert c8.updated_at == clock.now() and c9.updated_at != clock.now()
        assert session.scalar(select(ContactAlias.contact_id).where(
            ContactAlias.email == "second8@alias.example")) == c8.id
        assert (new.needs_details, new.tag_names) == (True, [])


def test_a_bad_row_at_the_end_of_a_big_file_imports_nothing(
        db: Database, clock: FakeClock, tmp_path: Path) -> None:
    path = big_csv(tmp_path / "big.csv", 2_000, tail="not-an-email,Bob,,,,,")

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, path, clock)

    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [
        (str(path), 2_002, "email")]
    assert (count(db, Contact), count(db, ContactTag), count(db, Event)) == (0, 0, 0)


def test_an_alias_taken_in_the_database_refuses_a_big_file(
        db: Database, clock: FakeClock, tmp_path: Path) -> None:
    import_contacts(db, big_csv(tmp_path / "big.csv", 700), clock)
    (tmp_path / "late.csv").write_text(
        "email,aliases\n" + "".join(f"n{i}@example.org,\n" for i in range(900))
        + "late@example.org,office600@alias.example\n")

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, tmp_path / "late.csv", clock)

    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (902, "aliases")
    assert "already an alias of another contact" in problem.message
    assert count(db, Contact) == 700


@pytest.mark.parametrize(("cell", "field", "code"), [
    ("a\x00b", "first_name", "U+0000"),
    ("Clinic\x1b[31m", "organization", "U+001B"),
    ("prospect;v\x07ip", "tags", "U+0007"),
    ("a\x01b@x.org", "email", "U+0001"),
    ("Clinic\x85", "organization", "U+0085"),
])
def test_a_control_character_in_any_cell_refuses_the_file(
        db: Database, clock: FakeClock, tmp_path: Path, cell: str, field: str,
        code: str) -> None:
    columns = {"email": "ok@example.org", "first_name": "Ann", "organization": "", "tags": ""}
    columns[field] = cell
    path = tmp_path / "ctl.csv"
    path.write_text("email,first_name,organization,tags\nfine@example.org,Bo,,\n"
                    + ",".join(columns.values()) + "\n", encoding="utf-8")

    with pytest.raises(ContactsError) as caught:
        import_contacts(db, path, clock)

    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 3, field)
    assert code in problem.message
    assert count(db, Contact) == 0


def test_an_address_with_a_control_character_is_refused_everywhere() -> None:
    for raw in ("a\x01b@x.org", "ann@exa\x00mple.org", "ann@example.org\x7f"):
        with pytest.raises(ValueError, match="control character"):
            normalize_email(raw)


def test_a_control_character_in_a_referrals_file_records_nothing(
        app: Nurture, tmp_path: Path) -> None:
    path = tmp_path / "referrals.csv"
    path.write_text("email,date,ref\ndr.a@clinic.example,2026-12-01,EHR-1\n"
                    "dr.b@clinic.example,2026-12-01,EHR\x00-2\n"
                    "dr\x02c@clinic.example,2026-12-01,EHR-3\n")

    with pytest.raises(ReferralsError) as caught:
        import_referrals(app, path)

    assert [(p.line, p.field) for p in caught.value.problems] == [(3, "ref"), (4, "email")]
    assert all("control character" in p.message for p in caught.value.problems)
    assert count(app.db, Referral) == 0 and count(app.db, Contact) == 0


# Enrolling ----------------------------------------------------------------------------------
def add_contacts(app: Nurture, rows: list[tuple[str, str, str]]) -> None:
    path = app.settings.project_dir / "contacts.csv"
    path.write_text("email,first_name,tags,timezone\n"
                    + "".join(f"{email},Ann,{tags},{tz}\n" for email, tags, tz in rows))
    import_contacts(app.db, path, app.clock)


def due_by_email(app: Nurture) -> dict[str, datetime]:
    with app.db.transaction() as session:
        return dict(session.execute(select(Contact.email, Touch.due_at)
                                    .join(Enrollment, Enrollment.id == Touch.enrollment_id)
                                    .join(Contact, Contact.id == Enrollment.contact_id)).all())


@pytest.mark.parametrize("now", [
    datetime(2026, 3, 7, 12, tzinfo=UTC),  # Saturday, the day before the US clocks go forward
    datetime(2026, 12, 7, 15, 30, tzinfo=UTC),  # Monday, inside the window in New York
], ids=["weekend-dst", "monday"])
def test_enroll_plans_each_zone_as_one_enrollment_at_a_time_would(
        app: Nurture, clock: FakeClock, now: datetime) -> None:
    clock.set(now)
    add_contacts(app, [(f"{kind}{i}@clinic.example", kind, zone)
                       for i, zone in enumerate(ZONES) for kind in ("batch", "single")])

    result = enroll(app, "referral-outreach", tags=["batch"])
    campaign = app.campaign("referral-outreach")
    with app.db.transaction() as session:
        for i in range(len(ZONES)):
            contact = get_contact(session, f"single{i}@clinic.example")
            assert contact is not None and enroll_contact(app, session, campaign, contact)

    assert result.enrolled == sorted(f"batch{i}@clinic.example" for i in range(len(ZONES)))
    due = due_by_email(app)
    for i, zone in enumerate(ZONES):
        expected = due_at(now, None, campaign.send_window,
                          ZoneInfo(zone or app.settings.practice_timezone))
        assert due[f"batch{i}@clinic.example"] == due[f"single{i}@clinic.example"] == expected
    assert len(set(due.values())) > 3


def test_enroll_in_batches_keeps_the_result_and_the_events(app: Nurture) -> None:
    add_contacts(app, [(f"p{i:04}@clinic.example", "prospect", ZONES[i % len(ZONES)])
                       for i in range(2_300)])
    with app.db.transaction() as session:
        gone = get_contact(session, "p0001@clinic.example")
        assert gone is not None
        gone.status = "unsubscribed"
    first = enroll(app, "referral-outreach", emails=["P0000@clinic.example"])
    seen: list[tuple[int, int]] = []

    result = enroll(app, "referral-outreach", tags=["prospect"], emails=["nobody@clinic.example"],
                    progress=lambda done, total: seen.append((done, total)))

    assert first.enrolled == ["p0000@clinic.example"]
    assert (result.already, result.suppressed, result.missing) == (
        ["p0000@clinic.example"], ["p0001@clinic.example"], ["nobody@clinic.example"])
    assert result.enrolled == [f"p{i:04}@clinic.example" for i in range(2, 2_300)]
    assert seen == [(2_000, 2_298), (2_298, 2_298)]
    assert (count(app.db, Enrollment), count(app.db, Touch)) == (2_299, 2_299)
    with app.db.transaction() as session:
        events = session.execute(select(Event.contact_id, Event.enrollment_id, Event.detail)
                                 .where(Event.kind == "enrolled")).all()
        pairs = set(session.execute(select(Enrollment.contact_id, Enrollment.id)).all())
    assert len(events) == 2_299 and {(c, e) for c, e, _ in events} == pairs
    assert {detail for _, _, detail in events} == {'{"campaign": "referral-outreach"}'}


def test_enroll_refuses_a_malformed_address_or_tag_before_writing(app: Nurture) -> None:
    add_contacts(app, [("a@clinic.example", "prospect", "")])
    for option in ({"emails": ["a\x01b@x.org"]}, {"tags": ["pro\x00spect"]},
                   {"emails": ["a@clinic.example", "not an address"]}):
        with pytest.raises(ContactsError):
            enroll(app, "referral-outreach", **option)  # type: ignore[arg-type]
    assert count(app.db, Enrollment) == 0
