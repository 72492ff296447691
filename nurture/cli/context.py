"""What every command shares: the project found (upward from the current folder, as git finds
.git), its resolved settings and opened app, and one error format: ``Error: <what>`` plus the
location(s), exit 1 for bad input and 2 for usage, never a traceback for what a user can cause.

Nothing heavy is imported here (SQLAlchemy, redis, the app): ``nurture --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import update_wrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..clock import Clock
from ..errors import InputError, NurtureError
from ..settings import CONFIG_FILE, Settings, find_project, load_settings

if TYPE_CHECKING:
    from ..app import Nurture


class NoProject(click.ClickException):
    """A usage error without the usage text: the fix is a folder, not an option."""

    exit_code = 2


@dataclass
class Context:
    project_dir: Path | None
    clock: Clock
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _app: Nurture | None = None

    @property
    def project(self) -> Path:
        """The project folder: --project, else the nearest folder with nurture.toml upward."""
        if self.project_dir is not None:
            if not (self.project_dir / CONFIG_FILE).is_file():
                raise NoProject(f"no {CONFIG_FILE} in {self.project_dir}; run `nurture init "
                                f"{self.project_dir}` or pass --project")
            return self.project_dir
        found = find_project()
        if found is None:
            raise NoProject(f"no {CONFIG_FILE} here or above; run `nurture init` or pass "
                            "--project")
        return found

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            with errors_as_click():
                self._settings = load_settings(self.project, self.overrides)
        return self._settings

    @property
    def app(self) -> Nurture:
        if self._app is None:
            from ..app import Nurture

            with errors_as_click():
                self._app = Nurture.open(self.settings, self.clock)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def _outside_error(exc: Exception) -> str | None:
    """A database or Redis that cannot be reached is the user's to fix, not a crash: its
    message, or None for anything else (checked only against modules already imported)."""
    redis = sys.modules.get("redis.exceptions")
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"Redis: {exc}"
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is not None and isinstance(exc, sa.OperationalError | sa.ArgumentError):
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"database: {first}"
    return None


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
    except Exception as exc:
        if (message := _outside_error(exc)) is None:
            raise
        raise click.ClickException(message) from exc


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
        app = obj.app
        with errors_as_click():
            return f(app, *args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]


def pass_settings(f: F) -> F:
    """Give the command the project's resolved settings, and report library errors."""

    @click.pass_obj
    def wrapper(obj: Context, *args: Any, **kwargs: Any) -> Any:
        settings = obj.settings
        with errors_as_click():
            return f(settings, *args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]
