"""`nurture contacts import FILE.csv`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .context import pass_app
from .progress import progress_bar

if TYPE_CHECKING:
    from ..app import Nurture


@click.group()
def contacts() -> None:
    """Referral sources: physicians, trainers, gyms, nutritionists."""


@contacts.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def import_(app: Nurture, path: Path) -> None:
    """Import or update contacts from a CSV file. A file with any bad row imports nothing.

    Columns: email, first_name, last_name, organization, role, tags, interests, timezone, owner,
    aliases
    (tags, interests and aliases separated by ";").
    """
    from ..intake.contacts import import_contacts

    with progress_bar("Importing contacts") as progress:
        result = import_contacts(app.db, path, app.clock, progress)
    click.echo(f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged")
