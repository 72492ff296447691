"""`nurture init`, `nurture validate`, `nurture status`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..app import Nurture
from ..project import init_project, validate_project
from ..report import TouchLine
from ..report import status as project_status
from .context import Context, pass_app, relative


@click.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(folder: Path) -> None:
    """Create a working example project: nurture.toml, campaigns/, templates/, contacts.csv."""
    result = init_project(folder)
    for path in result.created:
        click.echo(f"created {path}")
    for path in result.kept:
        click.echo(f"kept    {path} (already there)")
    click.echo("next: edit nurture.toml ([sender], [practice]), then `nurture validate`")


@click.command()
@click.pass_obj
def validate(obj: Context) -> None:
    """Check settings, every campaign and every template. Exit 1 listing every problem."""
    result = validate_project(obj.settings)
    if not result.ok:
        for problem in result.problems:
            click.echo(f"{replace(problem, file=relative(problem.file))}", err=True)
        raise click.ClickException(f"{len(result.problems)} problem(s) found")
    steps = sum(len(c.steps) for c in result.campaigns.values())
    click.echo(f"ok: {len(result.campaigns)} campaigns, {steps} steps, every template renders")


def _line(t: TouchLine) -> str:
    at = t.at.strftime("%Y-%m-%d %H:%M UTC") if t.at else "-"
    note = f"  {t.note}" if t.note else ""
    return f"  {at}  #{t.touch_id:<6} {t.email:<32} {t.campaign}/{t.step}{note}"


@click.command()
@pass_app
def status(app: Nurture) -> None:
    """Enrollments per campaign and state, the next and last sends, the inbox's messages."""
    report = project_status(app)
    click.echo("enrollments:")
    if not report.enrollments:
        click.echo("  none yet: `nurture enroll CAMPAIGN`")
    for campaign, states in report.enrollments.items():
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        paused = " (paused: `nurture resume` it)" if campaign in report.paused else ""
        click.echo(f"  {campaign}: {counts}{paused}")
    click.echo("emails: " + (", ".join(f"{n} {s}" for s, n in sorted(report.touches.items()))
                             or "none planned"))
    click.echo("inbox: " + (", ".join(f"{n} {kind}" for kind, n in sorted(report.inbox.items()))
                            or "nothing read yet")
               + (f"; {report.inbox_unmatched} matched no contact (left alone)"
                  if report.inbox_unmatched else ""))
    if report.needs_details:
        more = report.needs_details_count - len(report.needs_details)
        click.echo(f"contacts needing details (a name or an organization): "
                   f"{', '.join(report.needs_details)}" + (f" and {more} more" if more else ""))
    for title, lines in (("next sends:", report.next), ("last sends:", report.last),
                         ("needs attention (uncertain or failed):", report.attention),
                         ("recently skipped:", report.skipped)):
        if lines:
            click.echo(title)
            for line in lines:
                click.echo(_line(line))
