"""`nurture referral add`."""

from __future__ import annotations

from datetime import date, datetime

import click

from ..app import Nurture
from ..referrals import add_referral
from .context import pass_app


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
    day: date | None = on.date() if on else None
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
