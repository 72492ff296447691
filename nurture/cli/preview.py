"""`nurture preview CAMPAIGN [STEP] --contact EMAIL|--sample [--out DIR] [--open]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .context import pass_app, relative

if TYPE_CHECKING:
    from ..app import Nurture


@click.command()
@click.argument("campaign")
@click.argument("step", required=False)
@click.option("--contact", "email", metavar="EMAIL", help="Preview for this contact.")
@click.option("--sample", is_flag=True, help="Preview for the sample contact of `validate`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the .html, .txt and .eml files. Default: preview/")
@click.option("--open", "open_", is_flag=True, help="Open the HTML in the browser.")
@pass_app
def preview(app: Nurture, campaign: str, step: str | None, email: str | None, sample: bool,
            out: Path | None, open_: bool) -> None:
    """Write a campaign's emails (or one STEP's) exactly as they would be sent; nothing is sent
    or recorded."""
    from ..outbound.preview import preview as preview_emails

    if bool(email) == sample:
        raise click.UsageError("give either --contact EMAIL or --sample")
    folder = out or app.settings.project_dir / "preview"
    results = preview_emails(app, campaign, step, email=email, out=folder)
    for result in results:
        if result.skipped:
            click.echo(f"{result.step}: would be skipped: {result.skipped}")
            continue
        item = f"  [{result.item}]" if result.item else ""
        click.echo(f"{result.step}: {result.subject}{item}")
        for path in result.files:
            click.echo(f"  {relative(str(path))}")
        if open_:
            click.launch(str(result.files[0]))
