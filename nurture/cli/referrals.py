"""`nurture referral add` and `nurture referrals import FILE.csv`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .context import pass_app

if TYPE_CHECKING:
    from ..app import Nurture


@click.group()
def referral() -> None:
    """Referrals received from a source."""


@referral.command("add")
@click.argument("email")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]),
              help="The day of the referral (default: today, in the practice's time zone).")
@click.option("--ref", "external_ref", metavar="ID",
              help="An opaque id from your records (e.g. EHR-123). Never a patient's name.")
@pass_app
def add(app: Nurture, email: str, on: datetime | None, external_ref: str | None) -> None:
    """Record a referral from EMAIL: stops outreach, plans the thank-you, starts long-term care."""
    from ..intake.referrals import add_referral, notify_referrals, referral_day

    day = referral_day(app, on.date() if on else None)
    result = add_referral(app, email, on=day, external_ref=external_ref)
    if result.duplicate:
        click.echo(f"referral {external_ref} was already recorded; nothing changed")
        return
    if result.new_contact:
        click.echo(f"{result.email} was not a contact: added, marked as needing details")
    click.echo(f"referral from {result.email} recorded")
    click.echo(f"  stopped: {', '.join(result.stopped) or 'nothing'}")
    planned = ", ".join(result.thank_you) or "none (no campaign with on_referral was running)"
    click.echo(f"  thank-you planned: {planned}")
    if result.enrolled:
        click.echo(f"  enrolled in: {', '.join(result.enrolled)}")
    if problem := notify_referrals(app, [(result, day)]):
        click.echo(f"warning: the owner was not notified: {problem}", err=True)


@click.group()
def referrals() -> None:
    """Referrals in bulk, from a CSV file."""


@referrals.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def import_(app: Nurture, path: Path) -> None:
    """Record the referrals in a CSV file. A file with any bad row records nothing.

    Columns: email (required), date (YYYY-MM-DD, default today), ref (an opaque id such as
    EHR-123). No other column is accepted: never patient details. Rows whose ref was recorded
    before are skipped, so importing a file again is safe.
    """
    from ..intake.referrals_csv import import_referrals

    done = import_referrals(app, path, notify=True)
    recorded = done.recorded
    click.echo(f"{len(recorded)} recorded, {done.already} already recorded"
               + ("; nothing changed" if not recorded else ""))
    if not recorded:
        return
    thanked = sum(len(r.thank_you) for r in recorded)
    click.echo(f"  thank-yous planned: {thanked}")
    if new := [r.email for r in recorded if r.new_contact]:
        click.echo(f"  new contacts, marked as needing details: {', '.join(new)}")
    for campaign in dict.fromkeys(c for r in recorded for c in r.enrolled):
        who = [r.email for r in recorded if campaign in r.enrolled]
        click.echo(f"  enrolled in {campaign}: {', '.join(who)}")
    if done.without_ref:
        click.echo(f"  {done.without_ref} row(s) without a ref: importing this file again "
                   "records them again")
    if done.notify_error:
        click.echo(f"warning: the owner was not notified: {done.notify_error}", err=True)
