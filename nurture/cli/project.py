"""`nurture init`, `nurture validate`, `nurture status`."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .context import Context, errors_as_click, pass_app, relative

if TYPE_CHECKING:  # heavy modules are imported by the commands that need them
    from ..app import Nurture
    from ..report import TouchLine


@click.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Over an existing project: add the starter files it lacks, keep every file.")
def init(folder: Path, force: bool) -> None:
    """Create a working example project: nurture.toml, campaigns/, templates/, contacts.csv."""
    from ..project import init_project

    with errors_as_click():
        result = init_project(folder, force=force)
    for path in result.created:
        click.echo(f"created {relative(str(path))}")
    for path in result.kept:
        click.echo(f"kept    {relative(str(path))} (already there)")
    click.echo("next: edit nurture.toml ([sender], [practice]), then `nurture validate`")


@click.command()
@click.pass_obj
def validate(obj: Context) -> None:
    """Check settings, every campaign and every template. Exit 1 listing every problem."""
    from ..project import validate_project

    settings = obj.settings
    with errors_as_click():
        result = validate_project(settings)
    if not result.ok:
        for problem in result.problems:
            click.echo(f"{replace(problem, file=relative(problem.file))}", err=True)
        raise click.ClickException(f"{len(result.problems)} problem(s) found")
    steps = sum(len(c.steps) for c in result.campaigns.values())
    click.echo(f"ok: {len(result.campaigns)} campaigns, {steps} steps, every template renders")


def _when(at: datetime | None, zone: tzinfo) -> str:
    from ..clock import as_utc

    return as_utc(at).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if at else "-"


def _line(t: TouchLine, zone: tzinfo) -> str:
    note = f"  {t.note}" if t.note else ""
    return f"  {_when(t.at, zone)}  #{t.touch_id:<6} {t.email:<32} {t.campaign}/{t.step}{note}"


def _json_default(value: Any) -> str:
    from ..clock import as_utc

    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


@click.command()
@click.option("--utc", is_flag=True, help="Times in UTC, not the practice's time zone.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (times in ISO-8601 UTC), for scripts.")
@pass_app
def status(app: Nurture, utc: bool, as_json: bool) -> None:
    """Enrollments per campaign and state, the next and last sends, the inbox's messages.

    Times are in the practice's time zone ([practice] timezone) unless --utc.
    """
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from ..report import status as project_status

    report = project_status(app)
    if as_json:
        click.echo(json.dumps(asdict(report), default=_json_default, indent=2))
        return
    zone = UTC if utc else ZoneInfo(app.settings.practice_timezone)
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
                click.echo(_line(line, zone))
