"""One settings object, resolved in one place.

Precedence, highest first (12-factor, as pydantic-settings, Docker and most CLIs do): a
command-line option, a ``NURTURE_*`` environment variable, ``nurture.toml``, the embedded default.
The defaults are the field defaults of :class:`Settings` below, and nowhere else. They run the
whole loop on a fresh machine: a SQLite file in the project folder, an embedded Redis (see
:mod:`nurture.worker.redis_server`) and mail written to ``outbox/``. Each resolved value remembers
where it came from (:meth:`Settings.source`), which ``nurture worker`` prints at start.

In ``nurture.toml`` a setting lives in a section named after its first word, so ``sender_name`` is
``[sender] name = …`` and its environment variable is ``NURTURE_SENDER_NAME``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InputError, Problem

CONFIG_FILE = "nurture.toml"
SOURCES = ("default", "file", "environment", "option")  # lowest first


@dataclass(frozen=True)
class Settings:
    project_dir: Path = field(default_factory=Path.cwd)
    database_url: str = "sqlite:///nurture.db"
    redis_url: str = ""  # empty: an embedded redis-server owned by the command
    smtp_url: str = ""  # empty: write .eml files to outbox_dir instead of sending
    smtp_outbox: str = "outbox"
    smtp_timeout: int = 30  # seconds one SMTP connect or command may wait on the server
    sender_name: str = ""
    sender_email: str = ""
    sender_title: str = ""
    sender_signature: str = ""
    practice_name: str = ""
    practice_address: str = ""
    practice_phone: str = ""
    practice_website: str = ""
    practice_timezone: str = "UTC"  # used when a contact has no time zone
    paths_campaigns: str = "campaigns"
    paths_templates: str = "templates"
    paths_state: str = ".nurture"  # embedded Redis files, the generated secret
    worker_queue: str = "nurture"
    worker_tick_interval: int = 60  # seconds between periodic ticks
    worker_batch_size: int = 50  # touches per send job
    worker_lease_seconds: int = 300  # a claimed touch not recorded by then is `uncertain`;
    # more than smtp_timeout, so a send waiting on a slow server never outlives its claim
    worker_max_attempts: int = 4  # transient failures before a touch is `failed`
    worker_retry_intervals: str = "10,30,60"  # seconds RQ waits before retrying a job
    worker_requeue_grace: int = 30  # seconds before a queued row whose job is gone is requeued
    limits_per_day: int = 100  # emails per sender mailbox per day (the practice's time zone)
    limits_spacing: int = 0  # minimum seconds between two sends from one mailbox
    web_base_url: str = "http://localhost:8000"
    web_webhook_secret: str = ""  # shared with webhook senders; empty: secret_key
    imap_url: str = ""  # empty: no mailbox is read; imaps://user:pass@host:993/INBOX
    inbox_poll_interval: int = 300  # seconds between mailbox polls inside `nurture worker`
    inbox_soft_bounce_limit: int = 3  # soft bounces in a row (one per email) that bounce a contact
    inbox_pause_days: int = 7  # an out-of-office notice without a readable return date
    secret_key: str = ""  # signs unsubscribe links; generated into paths_state if empty
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        """Where a setting's value came from: option, environment, file or default."""
        return self.sources.get(name, "default")

    # Resolved paths -------------------------------------------------------------------------
    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.project_dir / p

    @property
    def campaigns_dir(self) -> Path:
        return self.path(self.paths_campaigns)

    @property
    def templates_dir(self) -> Path:
        return self.path(self.paths_templates)

    @property
    def state_dir(self) -> Path:
        return self.path(self.paths_state)

    @property
    def outbox_dir(self) -> Path:
        return self.path(self.smtp_outbox)

    @property
    def retry_intervals(self) -> list[int]:
        return [int(part) for part in self.worker_retry_intervals.split(",") if part.strip()]

    @property
    def sender_domain(self) -> str:
        return self.sender_email.rpartition("@")[2] or "localhost"

    def identity_problems(self) -> list[Problem]:
        """What every real email needs: a sender, a postal address (CAN-SPAM) and, once mail
        really goes out, an unsubscribe link that a recipient can reach."""
        src = str(self.project_dir / CONFIG_FILE)
        need = {"sender_name": "[sender] name", "sender_email": "[sender] email",
                "practice_name": "[practice] name", "practice_address": "[practice] address"}
        problems = [Problem(src, None, label, "is required: it goes into every email")
                    for name, label in need.items() if not getattr(self, name).strip()]
        if self.smtp_url and not self.web_base_url.startswith("https://"):
            problems.append(Problem(src, None, "[web] base_url", "must be an https:// address "
                                    "where `nurture serve` answers, once [smtp] url sends real "
                                    "mail: unsubscribe links must work"))
        return problems


_FIELDS = {f.name: f for f in fields(Settings) if f.name not in ("project_dir", "sources")}

# Values below these would stall sending (a batch of 0) or make RQ refuse the job (no retries).
# The lease's real floor follows from smtp_timeout: it must be more (checked in load_settings).
MINIMUMS = {"smtp_timeout": 1, "worker_tick_interval": 1, "worker_batch_size": 1,
            "worker_lease_seconds": 2, "worker_max_attempts": 2, "worker_requeue_grace": 0,
            "limits_per_day": 1, "limits_spacing": 0, "inbox_poll_interval": 30,
            "inbox_soft_bounce_limit": 1, "inbox_pause_days": 1}


def default(name: str) -> Any:
    """The embedded default of a setting (the one place defaults are defined)."""
    return _FIELDS[name].default


def env_name(name: str) -> str:
    return f"NURTURE_{name.upper()}"


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` holding nurture.toml, as git finds .git."""
    start = (start or Path.cwd()).resolve()
    return next((d for d in (start, *start.parents) if (d / CONFIG_FILE).is_file()), None)


def _coerce(name: str, value: Any, source: str, line: int | None = None) -> Any:
    if isinstance(default(name), int):
        try:
            if isinstance(value, bool | float):
                raise TypeError
            return int(value)
        except (TypeError, ValueError):
            raise InputError([Problem(source, line, name,
                                      f"{value!r} is not a whole number")]) from None
    if not isinstance(value, str):
        raise InputError([Problem(source, line, name, f"{value!r} is not text: quote it")])
    return value


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _lines(text: str) -> dict[tuple[str | None, str], int]:
    """The line of each ``[section] key`` (and each section header, as key ""): tomllib
    gives values only, and an error should say where to look."""
    found: dict[tuple[str | None, str], int] = {}
    section: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if m := _HEADER.match(line):
            section = m.group(1)
            found.setdefault((section, ""), number)
        elif m := _KEY.match(line):
            found.setdefault((section, m.group(1)), number)
    return found


def _from_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import tomllib  # here, not at the top: every command's --help imports this module

    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = str(exc).replace(at.group(0), "").strip() if at else str(exc)
        raise InputError([Problem(str(path), int(at.group(1)) if at else None, "",
                                  message)]) from None
    lines = _lines(text)
    flat: dict[str, Any] = {}
    problems = []
    for section, body in data.items():
        items = body.items() if isinstance(body, dict) else [(None, body)]
        for key, value in items:
            name = section if key is None else f"{section}_{key}"
            line = lines.get((None, section)) if key is None else lines.get((section, key))
            label = section if key is None else f"[{section}] {key}"
            if name not in _FIELDS:
                problems.append(Problem(str(path), line or lines.get((section, "")), label,
                                        "unknown setting"))
                continue
            try:
                flat[name] = _coerce(name, value, str(path), line)
            except InputError as exc:
                problems.extend(replace(p, field=label) for p in exc.problems)
    if problems:
        raise InputError(problems)
    return flat


def load_settings(project_dir: Path | None = None, overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings for a project folder: option > NURTURE_* > nurture.toml > default."""
    project_dir = (project_dir or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    layers = {
        "file": _from_toml(project_dir / CONFIG_FILE),
        "environment": {name: _coerce(name, environ[env_name(name)], env_name(name))
                        for name in _FIELDS if env_name(name) in environ},
        "option": {name: _coerce(name, value, f"--{name.replace('_', '-')}")
                   for name, value in (overrides or {}).items() if value is not None},
    }
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers.items():  # lowest first: a later layer wins
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))
    values["database_url"] = _anchored(values.get("database_url", default("database_url")),
                                       project_dir)
    settings = Settings(project_dir=project_dir, sources=sources, **values)
    problems = _problems(settings)
    if problems:
        raise InputError(problems)
    if not settings.secret_key:
        settings = replace(settings, secret_key=_generated_secret(settings.state_dir))
    return settings


def _problems(settings: Settings) -> list[Problem]:
    """Values no command could work with, each named where it was set."""

    def where(name: str) -> str:
        return {"environment": env_name(name), "option": f"--{name.replace('_', '-')}",
                "file": str(settings.project_dir / CONFIG_FILE)}.get(settings.source(name),
                                                                    "default")

    problems = [Problem(where(name), None, name, f"must be at least {low}")
                for name, low in MINIMUMS.items() if getattr(settings, name) < low]
    if settings.worker_lease_seconds <= settings.smtp_timeout:
        problems.append(Problem(where("worker_lease_seconds"), None, "worker_lease_seconds",
                                f"must be more than smtp_timeout ({settings.smtp_timeout} s): a "
                                "send still waiting on the server would outlive its claim"))
    if not settings.database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        problems.append(Problem(where("database_url"), None, "database_url",
                                f"{settings.database_url!r}: nurture works with sqlite:///FILE "
                                "or postgresql+psycopg://user@host/db"))
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(settings.practice_timezone)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        problems.append(Problem(where("practice_timezone"), None, "practice_timezone",
                                f"{settings.practice_timezone!r} is not a time zone (e.g. "
                                "America/Chicago)"))
    return problems


def _anchored(url: str, project_dir: Path) -> str:
    """A relative SQLite file lives in the project folder, wherever the command runs from."""
    prefix = "sqlite:///"
    rest = url[len(prefix):] if url.startswith(prefix) else ""
    if not rest or rest.startswith(("/", ":memory:", "file:")):
        return url
    return prefix + str(project_dir / rest)


def _generated_secret(state_dir: Path) -> str:
    """A per-project secret kept in the state folder, so links stay valid across runs."""
    import secrets

    path = state_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"secret.{os.getpid()}.tmp"
    tmp.write_text(secrets.token_urlsafe(32))
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)  # atomic and exclusive: two first runs at once agree on one secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
