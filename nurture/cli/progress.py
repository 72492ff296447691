"""Helpers of long or picky commands: a progress bar on a terminal only (piped output stays
exactly the result), and the check of an address given as an argument."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..progress import Progress


@contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A :data:`~nurture.progress.Progress` callback drawing click's bar, or None when stdout
    is not a terminal. The bar appears at the first call, when the total is known."""
    if not sys.stdout.isatty():
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total, label=label).__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def email_param(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback for an address argument or a repeatable ``--email``: checked as every
    intake checks one (:func:`nurture.intake.contacts.normalize_email`), so a typo or a control
    character is refused here, by name, before anything is looked up."""
    from ..intake.contacts import normalize_email  # imported when used: start-up stays quick

    for email in value if isinstance(value, tuple) else (value,):
        try:
            normalize_email(email)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value
