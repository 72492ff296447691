"""Shared pieces of the benchmarks: machine facts, databases, settings, child processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The tree whose ``nurture`` and ``templates`` are measured: the one ``bench`` is found in, NOT
# resolved, so a copy of another version with a symlink to this ``bench`` measures that version
# (``cd /tmp/nurture-head && ln -s /work/main/bench && /work/main/.venv/bin/python -m bench``).
REPO = Path(__file__).parent.parent.absolute()
PYTHON = sys.executable
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

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


def write_campaigns(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text(CAMPAIGN_YAML)
    return folder


def settings_values(project_dir: Path, database_url: str, **overrides: Any) -> dict[str, Any]:
    """Plain values for :class:`nurture.settings.Settings` (JSON-able, for child processes)."""
    values: dict[str, Any] = dict(
        project_dir=str(project_dir),
        database_url=database_url,
        redis_url=REDIS_URL,
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
    from dataclasses import fields

    from nurture.settings import Settings

    known = {f.name for f in fields(Settings)}  # settings come and go while nurture evolves
    v = {k: val for k, val in values.items() if k in known}
    v["project_dir"] = Path(v["project_dir"])
    return Settings(**v)


def open_app(values: dict[str, Any]):  # -> nurture.app.Nurture
    from nurture.app import Nurture

    return Nurture.open(make_settings(values))


@contextlib.contextmanager
def pg_schema(prefix: str = "bench") -> Iterator[str]:
    """A fresh PostgreSQL schema for one benchmark, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
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


def redis_conn():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def flush_redis() -> None:
    """Flush only the benchmark's own Redis database (db 14 by default)."""
    conn = redis_conn()
    conn.flushdb()
    conn.close()


def run_child(module: str, config: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m module CONFIG_JSON``; its last stdout line is a JSON result."""
    proc = subprocess.run([PYTHON, "-m", module, json.dumps(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rusage_self() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": r.ru_utime + r.ru_stime, "maxrss_kb": r.ru_maxrss}


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a live process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


def machine_facts() -> dict[str, str]:
    from sqlalchemy import create_engine, text

    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nurture": nurture_source(),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        admin = create_engine(PG_URL)
        with admin.connect() as conn:
            facts["postgresql"] = conn.execute(text("SHOW server_version")).scalar_one()
        admin.dispose()
    except Exception as exc:  # noqa: BLE001
        facts["postgresql"] = f"unreachable ({exc.__class__.__name__})"
    try:
        facts["redis"] = redis_conn().info("server")["redis_version"]
    except Exception as exc:  # noqa: BLE001
        facts["redis"] = f"unreachable ({exc.__class__.__name__})"
    from importlib.metadata import version

    for pkg in ("rq", "redis", "SQLAlchemy", "psycopg", "aiosmtpd"):
        facts["redis-py" if pkg == "redis" else pkg] = version(pkg)
    return facts


def nurture_source() -> str:
    """Which nurture is measured: the tree, its commit, and whether it has uncommitted edits."""
    note = REPO / ".bench-source"
    if note.exists():
        return f"{REPO} ({note.read_text().strip()})"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nurture"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return str(REPO)
    edits = f" + uncommitted edits to {len(dirty)} files under nurture/" if dirty else ""
    return f"{REPO} at {rev}{edits}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
