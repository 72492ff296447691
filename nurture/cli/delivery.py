"""`nurture resolve`: settle a touch that needs a person."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import pass_app

if TYPE_CHECKING:
    from ..app import Nurture


@click.command()
@click.argument("touch_id", type=int)
@click.option("--sent", "outcome", flag_value="sent", help="It arrived: record it as sent.")
@click.option("--resend", "outcome", flag_value="resend", help="It did not: send it again.")
@pass_app
def resolve(app: Nurture, touch_id: int, outcome: str | None) -> None:
    """Settle an uncertain (or failed) email: TOUCH_ID is the number `nurture status` shows.

    An email is uncertain when a worker stopped after the mail server may have accepted it.
    Look for its Message-ID in the sender's sent folder, then say --sent or --resend.
    """
    if outcome is None:
        raise click.UsageError("say --sent or --resend")
    from ..engine import resolve_touch

    touch = resolve_touch(app, touch_id, sent=outcome == "sent")
    done = "recorded as sent" if outcome == "sent" else "will be sent again at the next tick"
    click.echo(f"touch {touch_id} ({touch.step_id}, {touch.message_id}): {done}")
