"""`nurture worker`, `nurture tick`, `nurture db upgrade`."""

from __future__ import annotations

import click

from ..app import Nurture
from ..db import make_engine, upgrade
from ..worker.daemon import run_tick, run_worker
from .context import Context, errors_as_click, pass_app


@click.command()
@click.option("--burst", is_flag=True, help="Tick once, send what is queued, then exit.")
@pass_app
def worker(app: Nurture, burst: bool) -> None:
    """Run the worker daemon: sends due emails and ticks periodically. Ctrl-C stops it cleanly."""
    run_worker(app, burst=burst, echo=click.echo)


@click.command()
@pass_app
def tick(app: Nurture) -> None:
    """Queue what is due now (the worker does this every tick_interval seconds)."""
    report = run_tick(app)
    click.echo(", ".join(f"{k} {v}" for k, v in report.items()))


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context) -> None:
    """Apply schema migrations (also done automatically on first use)."""
    with errors_as_click():
        engine = make_engine(obj.settings.database_url)
    try:
        applied = upgrade(engine)
    finally:
        engine.dispose()
    click.echo("schema upgraded" if applied else "schema already up to date")
