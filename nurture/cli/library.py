"""`nurture library list` and `nurture library check [--online]`."""

from __future__ import annotations

import click

from .context import Context, errors_as_click, relative


@click.group()
def library() -> None:
    """The content library (campaigns/library.yaml) that steps with `content:` pick from."""


@library.command("list")
@click.option("--kind", type=click.Choice(["article", "book"]), help="Only this kind.")
@click.pass_obj
def list_items(obj: Context, kind: str | None) -> None:
    """Every article and book, with the tags and audiences that pick them."""
    from ..content.library import load_library

    with errors_as_click():
        items = load_library(obj.settings.campaigns_dir).items
    shown = [item for item in items if kind in (None, item.kind)]
    if not shown:
        click.echo("the library is empty: add articles and books to campaigns/library.yaml")
    for item in shown:
        click.echo(f"{item.kind:<8} {item.id:<40} {item.title}")
        click.echo(f"{'':<8} {item.byline} · {item.url}")
        if item.tags or item.audiences:
            click.echo(f"{'':<8} tags: {', '.join(item.tags) or '-'}; "
                       f"audiences: {', '.join(item.audiences) or 'everyone'}")


@library.command("check")
@click.option("--online", is_flag=True,
              help="Also ask every link whether it still answers (uses the network; off by "
                   "default).")
@click.option("--timeout", default=10.0, show_default=True, metavar="SECONDS",
              help="With --online: how long to wait for each server.")
@click.pass_obj
def check(obj: Context, online: bool, timeout: float) -> None:
    """Check every item's fields and URLs. Exit 1 listing every problem."""
    from ..content.library import load_library
    from ..content.linkcheck import check_links

    with errors_as_click():
        loaded = load_library(obj.settings.campaigns_dir)
    counts = {kind: len(loaded.of_kind(kind)) for kind in ("article", "book")}
    if online:
        problems = check_links(loaded, timeout=timeout)
        for problem in problems:
            where = f"{relative(problem.file)}:{problem.line}"
            click.echo(f"{where}: {problem.field}: {problem.message}", err=True)
        if problems:
            raise click.ClickException(f"{len(problems)} link(s) did not answer")
    click.echo(f"ok: {counts['article']} articles, {counts['book']} books"
               + (", every link answers" if online else " (links not fetched; --online does)"))
