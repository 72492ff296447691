"""What every benchmark shares: the project settings, databases, a private Redis, child
processes, and the facts about the machine that go at the top of RESULTS.md."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

# The tree whose ``nurture`` and ``templates`` are measured: the one ``bench`` is found in.
REPO = Path(__file__).parent.parent.absolute()
PYTHON = sys.executable
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

CAMPAIGN_ID = "bench"
CAMPAIGN_YAML = """\
# One step, no send window: everything due goes out at once.
id: bench
name: Benchmark one-step campaign
stop_on: []
steps:
  - id: hello
    subject: "Thank you for what you do at {{ contact.organization or 'your practice' }}"
    template: appreciation.mjml
"""


def write_campaigns(folder: Path, yaml: str = CAMPAIGN_YAML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text(yaml)
    return folder


def settings_values(project_dir: Path, database_url: str, redis_url: str,
                    **overrides: Any) -> dict[str, Any]:
    """Plain values for :class:`nurture.settings.Settings` (JSON-able, for child processes)."""
    values: dict[str, Any] = dict(
        project_dir=str(project_dir),
        database_url=database_url,
        redis_url=redis_url,
        paths_campaigns=str(project_dir / "campaigns"),
        paths_templates=str(REPO / "templates"),
        sender_name="Alex Rivera",
        sender_email="alex@riverapt.example",
        sender_title="Physical therapist and owner",
        practice_name="Rivera Physical Therapy",
        practice_address="120 Main Street, Springfield, IL 62701",
        practice_timezone="America/New_York",
        secret_key="bench-secret",
        worker_queue=f"bench-{uuid.uuid4().hex[:6]}",
        # The per-mailbox daily limit (100 by default) would stop a benchmark after 100 sends.
        limits_per_day=1_000_000_000,
        limits_spacing=0,
    )
    values.update(overrides)
    return values


def make_settings(values: dict[str, Any]):  # -> nurture.settings.Settings
    from nurture.settings import Settings

    return Settings(**{**values, "project_dir": Path(values["project_dir"])})


def open_app(values: dict[str, Any], clock: Any = None):  # -> nurture.app.Nurture
    from nurture.app import Nurture

    return Nurture.open(make_settings(values), clock)


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a fresh database: a PostgreSQL schema (dropped afterwards) or a SQLite file."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'nurture.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own for the whole run (the one ``nurture worker`` embeds, on a unix
    socket), so flushing it disturbs nobody; ``BENCH_REDIS_URL`` uses a running one instead."""
    if url := os.environ.get("BENCH_REDIS_URL"):
        yield url
        return
    from nurture.worker.redis_server import EmbeddedRedis

    with workdir("bench-redis-") as folder, EmbeddedRedis(folder) as server:
        yield server.url


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as conn:
        conn.flushdb()


class Collect:
    """A tick dispatcher that enqueues nothing; it keeps the batches if asked to."""

    def __init__(self, keep: bool = True) -> None:
        self.keep, self.batches = keep, []  # type: ignore[var-annotated]

    def enqueue(self, job_id: str, touch_ids: list[int]) -> None:
        if self.keep:
            self.batches.append(touch_ids)

    def lost(self, job_ids: Sequence[str], unleased: Collection[str] = ()) -> set[str]:
        return set()


def run_child(module: str, config: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run ``python -m module CONFIG_JSON``; its last stdout line is a JSON result."""
    proc = subprocess.run([PYTHON, "-m", module, json.dumps(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts[:8]) - idle, sum(parts[:8])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(redis_url: str) -> dict[str, str]:
    import redis
    from sqlalchemy import create_engine, text

    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nurture": nurture_commit(),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "load": load_average(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    admin = create_engine(PG_URL)
    try:
        with admin.connect() as conn:
            facts["postgresql"] = conn.execute(text("SHOW server_version")).scalar_one()
    except Exception as exc:  # noqa: BLE001 - the SQLite benchmarks still run
        facts["postgresql"] = f"unreachable ({exc.__class__.__name__})"
    admin.dispose()
    with redis.Redis.from_url(redis_url) as conn:
        facts["redis"] = conn.info("server")["redis_version"]
    for package in ("rq", "redis", "SQLAlchemy", "psycopg", "aiosmtpd", "mrml"):
        facts["redis-py" if package == "redis" else package] = version(package)
    return facts


def nurture_commit() -> str:
    """The commit measured, and whether nurture/ had uncommitted edits."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "nurture", "templates")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" + uncommitted edits under nurture/ or templates/" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"
