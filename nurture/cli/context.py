"""What every command shares: the resolved settings and an opened project, and the translation
of library errors into ``Error: …`` with exit code 1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import update_wrapper
from pathlib import Path
from typing import Any, TypeVar

import click

from ..app import Nurture
from ..clock import Clock
from ..errors import InputError, NurtureError
from ..settings import Settings, load_settings


@dataclass
class Context:
    project_dir: Path | None
    clock: Clock
    overrides: dict[str, Any] = field(default_factory=dict)
    _app: Nurture | None = None

    @property
    def settings(self) -> Settings:
        with errors_as_click():
            return load_settings(self.project_dir, self.overrides)

    @property
    def app(self) -> Nurture:
        if self._app is None:
            with errors_as_click():
                self._app = Nurture.open(self.settings, self.clock)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


@contextmanager
def errors_as_click() -> Iterator[None]:
    """Library errors are the user's to fix: show them plainly, without a traceback."""
    try:
        yield
    except InputError as exc:
        problems = [replace(p, file=relative(p.file)) for p in exc.problems]
        raise click.ClickException(str(InputError(problems))) from exc
    except NurtureError as exc:
        raise click.ClickException(str(exc)) from exc


def relative(path: str) -> str:
    """Show paths under the current folder as the user would type them."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


F = TypeVar("F", bound=Callable[..., Any])


def pass_app(f: F) -> F:
    """Give the command the opened project as its first argument, and report library errors."""

    @click.pass_obj
    def wrapper(obj: Context, *args: Any, **kwargs: Any) -> Any:
        with errors_as_click():
            return f(obj.app, *args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]
