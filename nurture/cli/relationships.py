"""`nurture enroll`, `pause`, `resume`, `reply`, `unsubscribe`: who hears from the practice."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import pass_app

if TYPE_CHECKING:  # heavy modules are imported by the commands that need them
    from ..app import Nurture


@click.command()
@click.argument("campaign")
@click.option("--tag", "tags", multiple=True, help="Enroll contacts with this tag (repeatable).")
@click.option("--email", "emails", multiple=True, help="Enroll this contact (repeatable).")
@pass_app
def enroll(app: Nurture, campaign: str, tags: tuple[str, ...], emails: tuple[str, ...]) -> None:
    """Enroll contacts in CAMPAIGN. Without --tag or --email, the campaign's audience."""
    from ..engine import enroll as enroll_contacts

    result = enroll_contacts(app, campaign, tags=tags, emails=emails)
    click.echo(f"{result.campaign}: {len(result.enrolled)} enrolled, {len(result.already)} "
               f"already enrolled, {len(result.suppressed)} unsubscribed or bounced")
    for email in result.missing:
        click.echo(f"  no contact {email} (import it first)", err=True)


@click.command()
@click.argument("campaign")
@pass_app
def pause(app: Nurture, campaign: str) -> None:
    """Pause CAMPAIGN: nothing of it is sent until `nurture resume`; nothing is lost."""
    from ..engine import pause_campaign

    changed = pause_campaign(app, campaign)
    click.echo(f"{campaign} paused" if changed else f"{campaign} was already paused")


@click.command()
@click.argument("campaign")
@pass_app
def resume(app: Nurture, campaign: str) -> None:
    """Resume CAMPAIGN: what came due meanwhile goes out from the next tick, within limits."""
    from ..engine import pause_campaign

    changed = pause_campaign(app, campaign, paused=False)
    click.echo(f"{campaign} resumed" if changed else f"{campaign} was not paused")


@click.command()
@click.argument("email")
@pass_app
def reply(app: Nurture, email: str) -> None:
    """Record that EMAIL replied: their sequences stop, so you can answer personally."""
    from ..inbound.inbox import record_reply

    result = record_reply(app, email)
    stopped = ", ".join(result.stopped) or "nothing was running"
    click.echo(f"reply from {result.email} recorded; stopped: {stopped}")


@click.command()
@click.argument("email")
@pass_app
def unsubscribe(app: Nurture, email: str) -> None:
    """Unsubscribe EMAIL now: nothing more is sent to them."""
    from ..outbound.unsubscribe import unsubscribe as unsubscribe_contact

    result = unsubscribe_contact(app, email)
    click.echo(f"{result} unsubscribed; every unsent email to them is cancelled")
