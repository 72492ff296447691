"""`nurture worker`, `nurture tick`, `nurture db upgrade`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import Context, errors_as_click, pass_app

if TYPE_CHECKING:  # heavy modules are imported by the commands that need them
    from ..app import Nurture


@click.command()
@click.option("--burst", is_flag=True, help="Tick once, send what is queued, then exit.")
@click.option("--verbose", "-v", is_flag=True, help="Also show RQ's own log lines.")
@pass_app
def worker(app: Nurture, burst: bool, verbose: bool) -> None:
    """Run the worker daemon: sends due emails and ticks periodically. Ctrl-C stops it cleanly.

    Prints one line per email (local time, recipient, campaign/step, subject, outcome), one per
    tick that found work, and one for every failure, retry or uncertain send.
    """
    from ..worker.daemon import run_worker

    run_worker(app, burst=burst, echo=click.echo, verbose=verbose)


@click.command()
@pass_app
def tick(app: Nurture) -> None:
    """Queue what is due now (the worker does this every tick_interval seconds)."""
    from ..worker.daemon import run_tick

    report = run_tick(app)
    click.echo(", ".join(f"{k} {v}" for k, v in report.items()))


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context) -> None:
    """Apply schema migrations (also done automatically on first use)."""
    from ..db import make_engine, upgrade

    settings = obj.settings
    with errors_as_click():
        engine = make_engine(settings.database_url)
        try:
            applied = upgrade(engine)
        finally:
            engine.dispose()
    click.echo("schema upgraded" if applied else "schema already up to date")
