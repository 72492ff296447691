"""Shared fixtures: real databases (SQLite and PostgreSQL), a real Redis, a fake clock.

Every test that takes ``database_url`` runs once per database in NURTURE_TEST_DATABASES
(default ``sqlite,postgresql``). PostgreSQL tests each get a schema of their own, so they are
isolated without recreating the database. Redis tests use NURTURE_TEST_REDIS_URL (a database
number of its own, flushed around each test) or, when unset, a private embedded redis-server.
Under pytest-xdist each worker flushes a database of its own: the URL's number plus the worker's
index (see :func:`worker_redis_url`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, text

from nurture.clock import FakeClock
from nurture.db import Database, open_database

if TYPE_CHECKING:
    from nurture.app import Nurture
    from nurture.settings import Settings

PG_URL = os.environ.get("NURTURE_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATABASES = [d.strip() for d in os.environ.get("NURTURE_TEST_DATABASES",
                                               "sqlite,postgresql").split(",") if d.strip()]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nurture.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # make the cause obvious instead of a wall of driver errors
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {exc}. Start it, set "
                    "NURTURE_TEST_POSTGRES_URL, or run with NURTURE_TEST_DATABASES=sqlite.")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_database(database_url)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    # A Monday morning in New York, inside the usual weekday send window.
    return FakeClock(datetime(2026, 12, 7, 14, 0, tzinfo=UTC))


REDIS_DATABASES = 16  # redis-server's default number of databases


def worker_redis_url(url: str, worker: str | None, workers: int) -> str:
    """The database this process may flush: with xdist's worker ``gwN`` of ``workers``, the
    URL's database number plus N, wrapping within 0..15, so no two workers of a run share one."""
    if not worker:
        return url
    if workers > REDIS_DATABASES:
        pytest.exit(f"{workers} test workers but Redis has {REDIS_DATABASES} databases: use "
                    f"at most {REDIS_DATABASES} (-n)", returncode=4)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    in_path = parts.scheme != "unix" and "db" not in query
    base = int((parts.path.strip("/") or 0) if in_path else query.get("db", 0))
    db = (base + int(worker.removeprefix("gw"))) % REDIS_DATABASES
    if in_path:
        return urlunsplit(parts._replace(path=f"/{db}"))
    return f"{url.partition('?')[0]}?{urlencode({**query, 'db': db})}"  # keeps unix:///'s "//"


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    url = os.environ.get("NURTURE_TEST_REDIS_URL")
    if url:
        yield worker_redis_url(url, os.environ.get("PYTEST_XDIST_WORKER"),
                               int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        return
    from nurture.worker.redis_server import EmbeddedRedis

    state = Path(tempfile.mkdtemp(prefix="nr-test-"))
    server = EmbeddedRedis(state)
    server.start()
    yield server.url
    server.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    conn = redis.Redis.from_url(redis_server_url)
    conn.flushdb()
    yield redis_server_url
    conn.flushdb()
    conn.close()


@pytest.fixture
def smtp_sink() -> Iterator[object]:
    from tests.smtp_sink import SmtpSink

    with SmtpSink() as sink:
        yield sink


# Under pytest-xdist (scripts/test: --dist loadgroup hands out one test at a time) ---------------
# Tests sharing one costly session server run on one worker, which starts it once: a headless
# chromium, a Dovecot. The slowest tests (real worker processes, killed and restarted) go first,
# each to a worker of its own, so the run does not end waiting on one of them.
SHARED_SERVERS = ("chrome", "dovecot")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for server in SHARED_SERVERS:
            if server in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(server))
    items.sort(key=lambda item: item.path.name != "test_faults.py")


# A skipped test is a test that did not run: CI must not pass quietly on one.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == 0 and not os.environ.get("NURTURE_TEST_ALLOW_SKIP"):
        print(f"\nfailing the run: {len(_skipped)} test(s) skipped: {_skipped[:5]}")
        session.exitstatus = 1


def make_settings(project_dir: Path, **overrides: object) -> Settings:
    """Settings for a test project that uses the shipped campaigns and templates."""
    from nurture.settings import Settings

    values: dict[str, object] = dict(
        project_dir=project_dir,
        paths_campaigns=str(REPO / "campaigns"),
        paths_templates=str(REPO / "templates"),
        sender_name="Alex Rivera",
        sender_email="alex@riverapt.example",
        sender_title="Physical therapist and owner",
        practice_name="Rivera Physical Therapy",
        practice_address="120 Main Street, Springfield, IL 62701",
        practice_timezone="America/New_York",
        secret_key="test-secret",
        worker_queue=f"nurture-test-{uuid.uuid4().hex[:6]}",
    )
    values.update(overrides)
    # A project folder is one with nurture.toml: commands run with --project refuse any other.
    config = project_dir / "nurture.toml"
    if project_dir.is_dir() and not config.exists():
        config.write_text("# a test project: its settings are given in the test\n")
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Nurture]:
    """A project on the test database, sending to the outbox folder unless told otherwise."""
    from nurture.app import Nurture

    project = Nurture.open(make_settings(tmp_path, database_url=database_url), clock)
    yield project
    project.close()
