"""Referral intake on both databases: the CSV import, the owner's note, and their commands.

The import is all or nothing (every problem at once, with its line, and nothing written), one
transaction for the whole file, idempotent by ref; it thanks a source once per day and enrolls
it in long-term care once. The owner's note goes through the real transports (outbox folder,
SMTP) and holds nothing about patients.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.app import Nurture
from nurture.cli.context import Context
from nurture.cli.project import status as status_command
from nurture.cli.referrals import referral, referrals
from nurture.conflicts import ATTEMPTS, is_conflict, retry_conflicts
from nurture.errors import InputError, NurtureError, Problem
from nurture.intake.contacts import import_contacts
from nurture.intake.referrals import add_referral
from nurture.intake.referrals_csv import ReferralsError, import_referrals
from nurture.models import Contact, Enrollment, Event, Referral, Touch
from nurture.outbound.notify import notify_owner
from nurture.report import status
from tests.races import hold_until_blocked
from tests.seeding import LEE, SAM, count, outbox, rows, seed_outreach, touches
from tests.smtp_sink import free_port

NEW = "new.coach@fit.example"
# Dana twice on one day, Sam with no date (today), and an address that is no contact yet.
REFERRALS = f"""email,date,ref
Dr.Lee@Clinic.example,2026-12-04,EHR-1
{LEE},2026-12-04,EHR-2
{SAM},,EHR-3
{NEW},2026-12-05,EHR-4
"""


@pytest.fixture
def project(app: Nurture, tmp_path: Path) -> Nurture:
    """Dana and Sam enrolled in referral-outreach; mail goes to the outbox folder in tmp."""
    assert app.settings.smtp_url == ""
    return seed_outreach(app, tmp_path)


def write(tmp_path: Path, text: str, name: str = "referrals.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def enrollments(app: Nurture, email_: str) -> dict[str, str]:
    found = rows(app, Enrollment, Enrollment.contact_id.in_(
        select(Contact.id).where(Contact.email == email_)))
    assert len({e.campaign_id for e in found}) == len(found)  # each campaign once
    return {e.campaign_id: e.state for e in found}


def snapshot(app: Nurture) -> dict[str, Any]:
    """Everything an import could change, outbox included."""
    return {"contacts": sorted((c.email, c.status, c.needs_details) for c in rows(app, Contact)),
            "referrals": sorted((r.external_ref or "", r.referred_on.isoformat())
                                for r in rows(app, Referral)),
            "enrollments": sorted((e.contact_id, e.campaign_id, e.state)
                                  for e in rows(app, Enrollment)),
            "touches": sorted((t.id, t.state) for t in rows(app, Touch)),
            "events": count(app, Event), "outbox": [m["Message-ID"] for m in outbox(app)]}


# The import ----------------------------------------------------------------------------------
def test_import_thanks_each_source_once_and_enrolls_in_care_once(project: Nurture,
                                                                 tmp_path: Path) -> None:
    done = import_referrals(project, write(tmp_path, REFERRALS))
    assert [(r.email, r.new_contact, r.thank_you, r.enrolled) for r in done.results] == [
        (LEE, False, ["referral-outreach/thank-you"], ["partner-care"]),
        (LEE, False, [], []),  # same source, same day: the thank-you is planned already
        (SAM, False, ["referral-outreach/thank-you"], ["partner-care"]),
        (NEW, True, ["partner-care/thank-you"], ["partner-care"])]
    assert (len(done.recorded), done.already, done.without_ref) == (4, 0, 0)
    got = sorted((r.external_ref, r.referred_on, r.source) for r in rows(project, Referral))
    assert got == [("EHR-1", date(2026, 12, 4), "csv"), ("EHR-2", date(2026, 12, 4), "csv"),
                   ("EHR-3", date(2026, 12, 7), "csv"),  # blank date: today in New York
                   ("EHR-4", date(2026, 12, 5), "csv")]
    assert touches(project, LEE) == {"hello": "cancelled", "thank-you@2026-12-04": "scheduled",
                                     "check-in-1": "scheduled"}
    assert touches(project, SAM) == {"hello": "cancelled", "thank-you@2026-12-07": "scheduled",
                                     "check-in-1": "scheduled"}
    assert enrollments(project, LEE) == {"referral-outreach": "stopped", "partner-care": "active"}
    assert enrollments(project, SAM) == {"referral-outreach": "stopped", "partner-care": "active"}
    [new] = rows(project, Contact, Contact.email == NEW)
    assert (new.needs_details, new.status, new.first_name) == (True, "active", "")
    # A source nobody knew goes straight to long-term care, which thanks them.
    assert enrollments(project, NEW) == {"partner-care": "active"}
    assert touches(project, NEW) == {"thank-you@2026-12-05": "scheduled", "check-in-1": "scheduled"}
    [event] = rows(project, Event, Event.kind == "referrals_imported")
    assert event.data == {"file": "referrals.csv", "rows": 4, "recorded": 4, "already": 0}
    assert outbox(project) == []  # the library leaves the note to its caller (the CLI)


def test_importing_the_same_file_again_changes_nothing(project: Nurture,
                                                      tmp_path: Path) -> None:
    path = write(tmp_path, REFERRALS)
    import_referrals(project, path, notify=True)
    before = snapshot(project)
    assert len(before["outbox"]) == 1
    again = import_referrals(project, path, notify=True)
    assert (len(again.recorded), again.already, again.notify_error) == (0, 4, None)
    assert snapshot(project) == before  # no referral, touch, event or note more


def test_a_later_file_on_the_same_day_does_not_thank_again(project: Nurture,
                                                           tmp_path: Path) -> None:
    import_referrals(project, write(tmp_path, f"email,date,ref\n{LEE},2026-12-04,EHR-1\n"))
    later = import_referrals(project, write(
        tmp_path, f"ref,email,date\nEHR-9,{LEE.upper()},2026-12-04\nEHR-10,{LEE},2026-12-06\n",
        "later.csv"))
    assert [(r.thank_you, r.enrolled) for r in later.results] == [
        ([], []), (["partner-care/thank-you"], [])]  # another day: thanked again, from care
    assert [k for k in touches(project, LEE) if "@" in k] == [
        "thank-you@2026-12-04", "thank-you@2026-12-06"]


def test_rows_without_a_ref_are_recorded_and_counted(project: Nurture, tmp_path: Path) -> None:
    path = write(tmp_path, f"email\n{LEE}\n\n{SAM}\n")
    done = import_referrals(project, path)
    assert (len(done.recorded), done.without_ref) == (2, 2)
    assert {r.referred_on for r in rows(project, Referral)} == {date(2026, 12, 7)}


def test_a_bad_file_records_nothing_and_names_every_problem(project: Nurture,
                                                            tmp_path: Path) -> None:
    before = snapshot(project)
    path = write(tmp_path, (
        "email,date,ref,patient\n"
        f"{LEE},2026-12-04,EHR-1,Jane Roe ACL tear\n"
        "not-an-email,2026-12-04,EHR-2,\n"
        f"{SAM},12/04/2026,EHR-3,\n"
        f"{SAM},2026-02-30,Jane Doe,\n"
        ",2026-12-04,,\n"
        f"{NEW},2026-12-04,EHR-1,,extra\n"))
    with pytest.raises(ReferralsError) as caught:
        import_referrals(project, path, notify=True)
    assert isinstance(caught.value, InputError)
    found = [(p.line, p.field) for p in caught.value.problems]
    assert found == [(1, "patient"), (3, "email"), (4, "date"), (5, "date"), (5, "ref"),
                     (6, "email"), (7, ""), (7, "ref")]
    by_place = {(p.line, p.field): p for p in caught.value.problems}
    assert by_place[(1, "patient")] == Problem(
        str(path), 1, "patient", "unknown column 'patient': only email, date and ref are "
        "accepted (an opaque ref, never patient details)")
    assert "not an email address" in by_place[(3, "email")].message
    assert "'12/04/2026' is not a date in the form YYYY-MM-DD" == by_place[(4, "date")].message
    assert "not an opaque id" in by_place[(5, "ref")].message
    assert by_place[(6, "email")].message == "an email address is required"
    assert by_place[(7, "ref")].message == "EHR-1 is already on line 2"
    message = str(caught.value)
    assert message.startswith("8 problems found\n")
    assert f"{path}:1: patient: unknown column 'patient'" in message
    assert "Jane Roe" not in message and "ACL" not in message  # a refused cell is never shown
    assert snapshot(project) == before  # nothing recorded, nobody notified


def test_a_referral_from_the_future_is_refused_by_every_intake(project: Nurture,
                                                                tmp_path: Path) -> None:
    """A year typed wrong (2062 for 2026) is an error naming the line and field, not a record."""
    before = snapshot(project)
    path = write(tmp_path, f"email,date,ref\n{LEE},2026-12-04,EHR-1\n{SAM},2062-12-04,EHR-2\n")
    with pytest.raises(InputError) as caught:
        import_referrals(project, path, notify=True)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (3, "date", "2062-12-04 is in the future (today is 2026-12-07)")]
    with pytest.raises(InputError) as caught:
        add_referral(project, LEE, on=date(2062, 12, 4))
    assert [p.field for p in caught.value.problems] == ["date"]
    assert snapshot(project) == before


@pytest.mark.parametrize("text, problem", [
    ("", (None, "email", "a header row naming email is required")),
    ("date,ref\n2026-12-04,EHR-1\n", (1, "email", "a header row naming email is required")),
    ("email,Email\na@b.example,a@b.example\n", (1, "email", "the column appears twice")),
    ("email,diagnosis\na@b.example,knee\n", (1, "diagnosis", "unknown column 'diagnosis': "
                                              "only email, date and ref are accepted (an opaque "
                                              "ref, never patient details)")),
])
def test_header_problems(project: Nurture, tmp_path: Path, text: str,
                         problem: tuple[int | None, str, str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ReferralsError) as caught:
        import_referrals(project, path)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [problem]
    assert count(project, Referral) == 0


def test_one_transaction_for_the_whole_file(project: Nurture, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure on the last row (here: a bug) undoes the rows before it."""
    import nurture.intake.referrals_csv as module

    real, calls = module.record_referral, []

    def failing_on_the_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "record_referral", failing_on_the_third)
    before = snapshot(project)
    with pytest.raises(RuntimeError):
        import_referrals(project, write(tmp_path, REFERRALS), notify=True)
    assert snapshot(project) == before


def test_two_imports_of_one_file_at_once_record_each_ref_once(
        project: Nurture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second import waits for the first. On PostgreSQL it fails on a ref's unique key
    (the first holds it, uncommitted), runs its transaction again and finds every ref
    recorded; on SQLite it waits to begin. Either way: recorded once, one note."""
    import nurture.intake.referrals_csv as module

    real, calls, held = module.record_referral, list[str](), threading.Event()

    def record_holding_the_first(app: Nurture, session: Session, *args: Any) -> Any:
        calls.append(threading.current_thread().name)
        result = real(app, session, *args)
        if threading.current_thread().name == "first" and not held.is_set():
            held.set()
            hold_until_blocked(session)  # the second import now waits for this one
        return result

    monkeypatch.setattr(module, "record_referral", record_holding_the_first)
    path = write(tmp_path, REFERRALS)
    done: dict[str, Any] = {}

    def run_import() -> None:
        try:
            done[threading.current_thread().name] = import_referrals(project, path, notify=True)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            done[threading.current_thread().name] = exc

    first = threading.Thread(target=run_import, name="first")
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=run_import, name="second")
    second.start()
    first.join(60)
    second.join(60)
    outcome = {name: (len(r.recorded), r.already) if hasattr(r, "recorded") else repr(r)
               for name, r in done.items()}
    assert outcome == {"first": (4, 0), "second": (0, 4)}
    # On PostgreSQL the second ran its first row, lost on EHR-1, and ran all four again.
    postgres = project.db.engine.dialect.name == "postgresql"
    assert calls.count("second") == 4 + postgres
    assert count(project, Referral) == 4
    assert touches(project, LEE) == {"hello": "cancelled", "thank-you@2026-12-04": "scheduled",
                                     "check-in-1": "scheduled"}
    assert enrollments(project, LEE) == {"referral-outreach": "stopped", "partner-care": "active"}
    assert count(project, Event, Event.kind == "referrals_imported") == 1
    assert [note["Subject"] for note in outbox(project)] == [
        "4 referrals from 3 sources (referrals.csv)"]


def test_only_a_lost_race_is_tried_again(project: Nurture) -> None:
    """A unique key taken by a concurrent twin is; a missing contact (a bug) fails at once."""
    attempts = []

    def orphan(session: Session) -> None:
        attempts.append(1)
        session.add(Referral(contact_id=999_999, referred_on=date(2026, 12, 4), source="csv",
                             recorded_at=project.now()))

    with pytest.raises(IntegrityError) as caught:
        retry_conflicts(project.db, orphan)
    assert not is_conflict(caught.value) and len(attempts) == 1

    def twin(session: Session) -> None:
        attempts.append(2)
        session.add(Contact(email=LEE, interests=[], needs_details=True, created_at=project.now(),
                            updated_at=project.now()))

    with pytest.raises(IntegrityError) as caught:
        retry_conflicts(project.db, twin)
    assert is_conflict(caught.value) and attempts[1:] == [2] * ATTEMPTS


# The owner's note ----------------------------------------------------------------------------
def test_the_owner_gets_one_note_per_file_without_patient_data(project: Nurture,
                                                               tmp_path: Path) -> None:
    import_referrals(project, write(tmp_path, REFERRALS), notify=True)
    [note] = outbox(project)
    assert note["To"] == "Alex Rivera <alex@riverapt.example>"
    assert note["From"] == "nurture <alex@riverapt.example>"
    assert note["Subject"] == "4 referrals from 3 sources (referrals.csv)"
    assert note["Date"] == format_datetime(project.now())
    assert note["Message-ID"].endswith("@riverapt.example>")
    assert not note["Message-ID"].startswith("<nurture.")  # not a touch's id
    assert note["Auto-Submitted"] == "auto-generated"
    assert note.get_content_type() == "text/plain" and not note.is_multipart()
    body = note.get_content().replace("\r\n", "\n")
    assert body.startswith(
        "Dana Lee (dr.lee@clinic.example, Springfield Family Medicine) referred a patient on "
        "2026-12-04.\nA thank-you is planned for Mon 7 Dec 2026, 09:00 (America/New_York).\n"
        "They now receive partner-care.\n\n")
    assert body.count("Dana Lee") == 2  # two referrals, one thank-you
    assert ("Sam Ortiz (sam@ironworks.example, Ironworks Gym) referred a patient on 2026-12-07."
            "\nA thank-you is planned for Mon 7 Dec 2026, 10:00 (America/New_York).") in body
    assert (f"{NEW} ({NEW}) referred a patient on 2026-12-05.\nA thank-you is planned for "
            "Tue 8 Dec 2026, 09:30 (America/New_York).\nThey now receive partner-care.\nThey "
            "were not a contact yet: added, marked as needing details") in body
    assert "Consider a personal note too" in body
    assert "EHR-" not in body  # not even the opaque id travels by email


def test_a_single_referral_note_goes_over_smtp(project: Nurture, smtp_sink: Any) -> None:
    project.settings = replace(project.settings, smtp_url=smtp_sink.url)
    add_referral(project, LEE, on=date(2026, 12, 4), external_ref="EHR-7", notify=True)
    [note] = smtp_sink.messages
    assert note["Subject"] == "Referral from Dana Lee"
    assert note["To"] == "Alex Rivera <alex@riverapt.example>"
    assert "referred a patient on 2026-12-04" in note.get_content()
    add_referral(project, LEE, external_ref="EHR-7", notify=True)  # known ref: nothing, no note
    assert len(smtp_sink.messages) == 1
    assert outbox(project) == []


def test_a_note_that_cannot_be_sent_keeps_the_referral(project: Nurture) -> None:
    project.settings = replace(project.settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    result = add_referral(project, LEE, external_ref="EHR-8", notify=True)
    assert result.thank_you == ["referral-outreach/thank-you"]
    assert count(project, Referral) == 1
    [event] = rows(project, Event, Event.kind == "owner_notification_failed")
    assert event.data["subject"] == "Referral from Dana Lee"


def test_notify_owner_needs_a_sender(project: Nurture) -> None:
    project.settings = replace(project.settings, sender_email="")
    with pytest.raises(NurtureError, match=r"\[sender\] email is not set"):
        notify_owner(project, "Hello", "body")


# The commands --------------------------------------------------------------------------------
def run(app: Nurture, command: Any, *args: str) -> tuple[int, str]:
    obj = Context(project_dir=app.settings.project_dir, clock=app.clock, _app=app)
    result = CliRunner().invoke(command, list(args), obj=obj)
    return result.exit_code, result.output


def test_referrals_import_command(project: Nurture, tmp_path: Path) -> None:
    path = write(tmp_path, REFERRALS)
    code, out = run(project, referrals, "import", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        "4 recorded, 0 already recorded",
        "  thank-yous planned: 3",
        f"  new contacts, marked as needing details: {NEW}",
        f"  enrolled in partner-care: {LEE}, {SAM}, {NEW}"]
    assert len(outbox(project)) == 1
    code, out = run(project, referrals, "import", str(path))
    assert (code, out) == (0, "0 recorded, 4 already recorded; nothing changed\n")
    assert len(outbox(project)) == 1

    bad = write(tmp_path, "email,date,patient\nx@y.example,2026-13-01,Jane Roe\n", "bad.csv")
    code, out = run(project, referrals, "import", str(bad))
    assert code == 1
    assert "Error: 2 problems found" in out
    assert "bad.csv:1: patient: unknown column 'patient'" in out
    assert "bad.csv:2: date: '2026-13-01' is not a date in the form YYYY-MM-DD" in out
    assert "Jane Roe" not in out
    code, out = run(project, referrals, "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "does not exist" in out


def test_status_lists_the_sources_that_need_details_until_they_are_filled_in(
        project: Nurture, tmp_path: Path) -> None:
    import_referrals(project, write(tmp_path, REFERRALS))
    report = status(project)
    assert (report.needs_details, report.needs_details_count) == ([NEW], 1)
    code, out = run(project, status_command)
    assert code == 0, out
    assert f"contacts needing details (a name or an organization): {NEW}\n" in out
    details = write(tmp_path, f"email,first_name,organization\n{NEW},Jo,Fit Coaching\n",
                    "details.csv")
    import_contacts(project.db, details, project.clock)
    assert (status(project).needs_details, status(project).needs_details_count) == ([], 0)
    assert "needing details" not in run(project, status_command)[1]


def test_referral_add_command_notifies_the_owner(project: Nurture, tmp_path: Path) -> None:
    code, out = run(project, referral, "add", SAM, "--date", "2026-12-04", "--ref", "EHR-5")
    assert code == 0, out
    assert "thank-you planned: referral-outreach/thank-you" in out
    [note] = outbox(project)
    assert note["Subject"] == "Referral from Sam Ortiz"
    code, out = run(project, referral, "add", SAM, "--ref", "EHR-5")
    assert "already recorded; nothing changed" in out and len(outbox(project)) == 1
    project.settings = replace(project.settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    code, out = run(project, referral, "add", LEE)
    assert code == 0 and "referral from dr.lee@clinic.example recorded" in out
    assert "warning: the owner was not notified:" in out
