"""The ``nurture`` command: a thin layer that parses options, calls the library and prints.

Global options apply to every command. ``--now`` makes every command act as if it were that time
(the clock stays at that instant), for dry runs and tests.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..clock import FakeClock, SystemClock, parse_instant
from .contacts import contacts
from .context import Context
from .delivery import resolve
from .inbox import inbox
from .library import library
from .preview import preview
from .project import init, status, validate
from .referrals import referral, referrals
from .relationships import enroll, pause, reply, resume, unsubscribe
from .web import serve
from .worker import db, tick, worker


def _parse_now(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time, e.g. "
                                 "2026-12-07T15:00:00Z") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--now", callback=_parse_now, metavar="ISO-8601",
              help="Act as if it were this time, frozen (e.g. 2026-12-07T15:00:00Z).")
@click.option("--project", "project_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The project folder (holds nurture.toml). Default: the current folder.")
@click.option("--database-url", help="Overrides [database] url / NURTURE_DATABASE_URL.")
@click.option("--redis-url", help="Overrides [redis] url / NURTURE_REDIS_URL. Empty: embedded.")
@click.option("--smtp-url", help="Overrides [smtp] url / NURTURE_SMTP_URL. Empty: outbox folder.")
@click.pass_context
def main(ctx: click.Context, now: object, project_dir: Path | None, database_url: str | None,
         redis_url: str | None, smtp_url: str | None) -> None:
    """nurture keeps a practice in touch with the people who send it patients."""
    clock = FakeClock(now) if now is not None else SystemClock()  # type: ignore[arg-type]
    ctx.obj = Context(project_dir=project_dir, clock=clock,
                      overrides={"database_url": database_url, "redis_url": redis_url,
                                 "smtp_url": smtp_url})
    ctx.call_on_close(ctx.obj.close)


for command in (init, validate, status, enroll, pause, resume, reply, unsubscribe, tick, worker,
                resolve, contacts, referral, referrals, db, serve, inbox, library, preview):
    main.add_command(command)
