"""A project with two referral sources in outreach, and the look-ups the tests make on it.

Dana Lee (New York) and Sam Ortiz (Chicago) are imported through the real contacts CSV import
and enrolled in the shipped ``referral-outreach`` campaign, each with the first email planned.
Shared by the referral, web and browser tests, so all three exercise the same situation.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from sqlalchemy import func, select

from nurture.app import Nurture
from nurture.engine import enroll
from nurture.intake.contacts import import_contacts
from nurture.models import Contact, Enrollment, Touch
from nurture.ticking import tick

CONTACTS = """email,first_name,last_name,organization,role,tags,timezone
dr.lee@clinic.example,Dana,Lee,Springfield Family Medicine,physician,prospect,America/New_York
sam@ironworks.example,Sam,Ortiz,Ironworks Gym,personal trainer,prospect,America/Chicago
"""
LEE, SAM = "dr.lee@clinic.example", "sam@ironworks.example"


def seed_outreach(app: Nurture, folder: Path) -> Nurture:
    """Dana and Sam imported (CSV in ``folder``) and enrolled in referral-outreach."""
    path = folder / "contacts.csv"
    path.write_text(CONTACTS)
    import_contacts(app.db, path, app.clock)
    assert enroll(app, "referral-outreach").enrolled == [LEE, SAM]
    return app


class RecordingDispatcher:
    """Remembers the touches a tick queues instead of handing them to RQ."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        self.ids += touch_ids

    def lost(self, job_ids: object, unleased: object = ()) -> set[str]:
        return set()


def queue_due(app: Nurture) -> list[int]:
    """One real tick: the ids of the touches it queued."""
    dispatcher = RecordingDispatcher()
    tick(app, dispatcher)
    return dispatcher.ids


def rows(app: Nurture, model: type, *where: Any) -> list[Any]:
    with app.db.transaction() as session:
        return list(session.scalars(select(model).where(*where)))


def count(app: Nurture, model: type, *where: Any) -> int:
    with app.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def contact(app: Nurture, address: str = LEE) -> Contact:
    [found] = rows(app, Contact, Contact.email == address)
    return cast(Contact, found)


def touches(app: Nurture, address: str = LEE) -> dict[str, str]:
    """step (``@trigger key`` for a thank-you) → state, for one contact."""
    found = rows(app, Touch, Touch.enrollment_id.in_(
        select(Enrollment.id).join(Contact).where(Contact.email == address)))
    return {t.step_id + (f"@{t.trigger_key}" if t.trigger_key else ""): t.state for t in found}


def outbox(app: Nurture) -> list[EmailMessage]:
    """The messages in the project's outbox folder, oldest file name first."""
    folder = app.settings.outbox_dir
    files = sorted(folder.glob("*.eml")) if folder.is_dir() else []
    return [cast(EmailMessage, email.message_from_bytes(f.read_bytes(),
                                                        policy=email.policy.default))
            for f in files]
