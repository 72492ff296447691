"""`nurture inbox classify FILE.eml...`: what each incoming message is, one JSON line per file.
`nurture inbox poll`: read the sender mailbox once and act on what arrived."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..settings import find_project
from .context import Context, pass_app

if TYPE_CHECKING:  # heavy modules are imported by the commands that need them
    from ..app import Nurture


@click.group()
def inbox() -> None:
    """Incoming mail: replies, out-of-office notices, bounces and complaints."""


@inbox.command("classify")
@click.argument("files", metavar="FILE.eml...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Read relative return dates ('back Monday') from this day. "
                   "Default: each message's own Date header.")
@click.pass_obj
def classify_(obj: Context | None, files: tuple[Path, ...], today: datetime | None) -> None:
    """Classify each FILE.eml as bounce, complaint, auto_reply, reply or other.

    Prints one JSON object per file, in order, with the keys kind, hard, recipient, status,
    reason, message_ids, return_date, subject, sender and matched_message_id (the first cited
    Message-ID that this project sent: needs its nurture.toml). A file that is not an email is
    "other".
    """
    from ..inbound.classify import classify

    anchor = today.date() if today else None
    ours = _our_message_ids(obj)
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise click.FileError(str(path), hint=error.strerror or str(error)) from None
        click.echo(classify(raw, today=anchor, ours=ours).as_json())


def _our_message_ids(obj: Context | None) -> Callable[[str], bool] | None:
    """Recognises the project's Message-IDs, when there is a project here (read-only: a
    folder without nurture.toml gets no secret generated into it)."""
    from ..outbound.mime import is_our_message_id
    from ..settings import CONFIG_FILE

    if obj is None:
        return None
    if obj.project_dir is not None and not (obj.project_dir / CONFIG_FILE).is_file():
        return None
    if obj.project_dir is None and find_project() is None:
        return None
    settings = obj.settings
    return partial(is_our_message_id, secret=settings.secret_key, domain=settings.sender_domain)


@inbox.command("poll")
@pass_app
def poll(app: Nurture) -> None:
    """Read new mail in the sender mailbox ([imap] url) once, and act on it.

    Replies stop what a reply stops and are sent to you to answer personally; out-of-office
    notices pause; bounces and complaints stop everything. Messages are never marked read,
    moved or deleted. `nurture worker` does this every [inbox] poll_interval seconds.
    """
    from ..inbound.imap import poll as poll_mailbox

    click.echo(poll_mailbox(app).summary())
