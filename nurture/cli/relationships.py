"""`nurture enroll`, `pause`, `resume`, `reply`, `unsubscribe`: who hears from the practice."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import pass_app
from .progress import email_param, progress_bar

if TYPE_CHECKING:  # heavy modules are imported by the commands that need them
    from ..app import Nurture


@click.command()
@click.argument("campaign")
@click.option("--tag", "tags", multiple=True, help="Enroll contacts with this tag (repeatable).")
@click.option("--email", "emails", multiple=True, callback=email_param,
              help="Enroll this contact (repeatable).")
@pass_app
def enroll(app: Nurture, campaign: str, tags: tuple[str, ...], emails: tuple[str, ...]) -> None:
    """Enroll contacts in CAMPAIGN. Without --tag or --email, the campaign's audience.

    Exits 1 when an --email is not a contact, or when no contact has the tags.
    """
    from ..engine import enroll as enroll_contacts

    with progress_bar(f"Enrolling in {campaign}") as progress:
        result = enroll_contacts(app, campaign, tags=tags, emails=emails, progress=progress)
    click.echo(f"{result.campaign}: {len(result.enrolled)} enrolled, {len(result.already)} "
               f"already enrolled, {len(result.suppressed)} unsubscribed or bounced")
    if result.missing:
        raise click.ClickException(f"no contact {', '.join(result.missing)} (import it first)")
    if not (result.enrolled or result.already or result.suppressed):
        wanted = tags or app.campaign(campaign).audience_tags
        raise click.ClickException(
            f"no contact has {'any of the tags' if len(wanted) > 1 else 'the tag'} "
            f"{', '.join(wanted)}"
            if wanted else "no contact chosen: give --tag or --email (the campaign has no "
            "audience)")


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
@click.argument("email", callback=email_param)
@pass_app
def reply(app: Nurture, email: str) -> None:
    """Record that EMAIL replied: their sequences stop, so you can answer personally."""
    from ..inbound.inbox import record_reply

    result = record_reply(app, email)
    stopped = ", ".join(result.stopped) or "nothing was running"
    click.echo(f"reply from {result.email} recorded; stopped: {stopped}")


@click.command()
@click.argument("email", callback=email_param)
@pass_app
def unsubscribe(app: Nurture, email: str) -> None:
    """Unsubscribe EMAIL now: nothing more is sent to them."""
    from ..outbound.unsubscribe import unsubscribe as unsubscribe_contact

    result = unsubscribe_contact(app, email)
    click.echo(f"{result} unsubscribed; every unsent email to them is cancelled")
