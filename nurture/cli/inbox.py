"""`nurture inbox classify FILE.eml...`: what each incoming message is, one JSON line per file.
`nurture inbox poll`: read the sender mailbox once and act on what arrived."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ..app import Nurture
from .context import pass_app

# ..classify and ..mailbox are imported by their commands: `nurture worker` starts faster.


@click.group()
def inbox() -> None:
    """Incoming mail: replies, out-of-office notices, bounces and complaints."""


@inbox.command("classify")
@click.argument("files", metavar="FILE.eml...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Read relative return dates ('back Monday') from this day. "
                   "Default: each message's own Date header.")
def classify_(files: tuple[Path, ...], today: datetime | None) -> None:
    """Classify each FILE.eml as bounce, complaint, auto_reply, reply or other.

    Prints one JSON object per file, in order, with the keys kind, hard, recipient, status,
    message_ids, return_date, subject and sender. A file that is not an email is "other".
    """
    from ..classify import classify

    anchor = today.date() if today else None
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise click.FileError(str(path), hint=error.strerror or str(error)) from None
        click.echo(classify(raw, today=anchor).as_json())


@inbox.command("poll")
@pass_app
def poll(app: Nurture) -> None:
    """Read new mail in the sender mailbox ([imap] url) once, and act on it.

    Replies stop what a reply stops and are sent to you to answer personally; out-of-office
    notices pause; bounces and complaints stop everything. Messages are never marked read,
    moved or deleted. `nurture worker` does this every [inbox] poll_interval seconds.
    """
    from ..mailbox import poll as poll_mailbox

    click.echo(poll_mailbox(app).summary())
