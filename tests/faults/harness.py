"""A fault-test project: campaigns of its own, seeded contacts, real `nurture` processes.

Everything runs on 127.0.0.1 with the real clock: the touches are made due in the past, so the
worker's own tick (every second) queues them at once. Every process is started in a session of
its own and killed by process group, so the worker's cron child goes with it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select, update

from nurture.app import Nurture
from nurture.clock import SystemClock
from nurture.engine import enroll
from nurture.intake.contacts import import_contacts
from nurture.models import Contact, Enrollment, Touch, TouchState
from nurture.settings import Settings
from tests.conftest import REPO, make_settings

# One step, no send window: due the moment it is enrolled, whatever the day and hour.
ONE_STEP = """\
id: {id}
name: Fault test {id}
stop_on: [reply, referral]
steps:
  - id: hello
    subject: "Hello {{{{ contact.first_name or 'there' }}}}"
    template: appreciation.mjml
"""

# A first step due now and a second a week later: what a bounce must cancel.
TWO_STEPS = ONE_STEP + """\
  - id: later
    wait: 1 weeks
    subject: "Later, {{{{ contact.first_name or 'friend' }}}}"
    template: check-in.mjml
"""

# Nothing due for a week: an enrollment a bounce elsewhere must stop.
NOT_YET = """\
id: {id}
name: Fault test {id}
stop_on: [reply, referral]
steps:
  - id: hello
    wait: 1 weeks
    subject: "Hello {{{{ contact.first_name or 'there' }}}}"
    template: appreciation.mjml
"""

# Settings that make recovery happen in test time. The lease must outlast the SMTP timeout (the
# settings insist); a row left `sending` by a killed worker becomes `uncertain` 10 s after its
# claim, and the queued rows of a killed job are queued again 10 s after its last renewal. 5 s is
# long for a server on loopback, even on a loaded machine.
FAST: dict[str, Any] = dict(
    smtp_timeout=5,
    worker_tick_interval=1,
    worker_batch_size=5,
    worker_lease_seconds=10,
    worker_requeue_grace=2,  # a queued row whose job Redis lost is queued again after 2 s
    worker_retry_intervals="2,2,2",  # RQ's Retry after a temporary SMTP failure
    limits_per_day=1_000_000,
    limits_spacing=0,
    web_base_url="https://nurture.example",  # required once mail really goes out over SMTP
)

FINAL = {TouchState.SENT, TouchState.UNCERTAIN, TouchState.FAILED, TouchState.SKIPPED,
         TouchState.CANCELLED}
# <nurture.ENROLLMENT.STEP[.TRIGGER].HMAC@domain> (nurture.outbound.mime.make_message_id)
_MESSAGE_ID = re.compile(r"<nurture\.(\d+)\.([A-Za-z0-9-]+)(?:\.([A-Za-z0-9-]+))?\.[0-9a-f]{12}@")


def email_of(i: int) -> str:
    return f"source{i:04d}@clinic{i % 7}.example"


@dataclass
class Project:
    """A project folder with its own campaigns, an in-process app on it (real clock) for seeding
    and inspecting, and the environment its `nurture` processes run with."""

    dir: Path
    app: Nurture
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)

    # Seeding -----------------------------------------------------------------------------
    def add_contacts(self, count: int, start: int = 0) -> list[str]:
        emails = [email_of(i) for i in range(start, start + count)]
        csv = self.dir / f"contacts-{start}.csv"
        rows = [f"{e},Dana{i},Lee,Clinic {i % 7},physician,fault,,America/New_York"
                for i, e in zip(range(start, start + count), emails, strict=True)]
        csv.write_text("email,first_name,last_name,organization,role,tags,interests,timezone\n"
                       + "\n".join(rows) + "\n")
        import_contacts(self.app.db, csv, self.app.clock)
        return emails

    def enroll(self, campaign: str, emails: Sequence[str], *, backdate: float = 60) -> None:
        """Enroll, then move the new due times ``backdate`` seconds into the past: due now."""
        result = enroll(self.app, campaign, emails=list(emails))
        assert len(result.enrolled) == len(emails), result
        past = datetime.now(UTC) - timedelta(seconds=backdate)
        with self.app.db.transaction() as session:
            session.execute(update(Touch).where(
                Touch.state == TouchState.SCHEDULED, Touch.due_at <= datetime.now(UTC),
                Touch.enrollment_id.in_(select(Enrollment.id).where(
                    Enrollment.campaign_id == campaign))).values(due_at=past))

    def spread_due(self, seconds: float) -> None:
        """Make the scheduled rows fall due one after another over the next ``seconds``."""
        start = datetime.now(UTC)
        with self.app.db.transaction() as session:
            ids = session.scalars(select(Touch.id).where(Touch.state == TouchState.SCHEDULED)
                                  .order_by(Touch.id)).all()
            for i, touch_id in enumerate(ids):
                due = start + timedelta(seconds=seconds * i / max(1, len(ids)))
                session.execute(update(Touch).where(Touch.id == touch_id).values(due_at=due))

    # Processes ---------------------------------------------------------------------------
    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`nurture ARGS` in a session of its own; output goes to a log file in the project."""
        log = self.dir / f"proc-{len(self.logs):03d}-{args[0]}.log"
        out = open(log, "wb")  # noqa: SIM115 (closed in close())
        self._files.append(out)
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "nurture", "--project", str(self.dir), *args],
            cwd=self.dir, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start("worker", env=env)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nurture", "--project", str(self.dir), *args],
                              cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)

    @staticmethod
    def group_alive(proc: subprocess.Popen[bytes]) -> bool:
        """Whether any process is left in the group the process was started in."""
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group may outlive its leader
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for out in self._files:
            out.close()
        self.app.close()

    def log_tail(self, lines: int = 40, logs: int = 3) -> str:
        parts = []
        for log in self.logs[-logs:]:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # Inspecting --------------------------------------------------------------------------
    def touches(self) -> list[Touch]:
        with self.app.db.transaction() as session:
            rows = session.scalars(select(Touch).order_by(Touch.id)).all()
            session.expunge_all()
            return list(rows)

    def states(self) -> Counter[str]:
        return Counter(str(t.state) for t in self.touches())

    def contact(self, email: str) -> Contact:
        with self.app.db.transaction() as session:
            contact = session.scalars(select(Contact).where(Contact.email == email)).one()
            session.expunge(contact)
            return contact

    def touch(self, email: str, campaign: str, step: str = "hello") -> Touch:
        with self.app.db.transaction() as session:
            touch = session.scalars(select(Touch).join(Enrollment, Touch.enrollment_id
                                                       == Enrollment.id)
                                    .join(Contact, Enrollment.contact_id == Contact.id)
                                    .where(Contact.email == email,
                                           Enrollment.campaign_id == campaign,
                                           Touch.step_id == step)).unique().one()
            session.expunge_all()
            return touch

    def enrollments(self, email: str) -> dict[str, tuple[str, str | None]]:
        with self.app.db.transaction() as session:
            rows = session.execute(select(Enrollment.campaign_id, Enrollment.state,
                                          Enrollment.stop_reason).join(Enrollment.contact)
                                   .where(Contact.email == email)).all()
        return {campaign: (state, reason) for campaign, state, reason in rows}

    def settled(self) -> bool:
        """Nothing due is waiting: every row due by now is in a final state."""
        now = datetime.now(UTC)
        return all(t.state in FINAL or (t.state == TouchState.SCHEDULED and t.due_at > now)
                   for t in self.touches())

    def wait_until(self, condition: Callable[[], bool], timeout: float,
                   poll: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(poll)
        return condition()


def settings_env(settings: Settings) -> dict[str, str]:
    """The NURTURE_* variables that give a subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    for f in fields(Settings):
        if f.name != "project_dir":
            env[f"NURTURE_{f.name.upper()}"] = str(getattr(settings, f.name))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def fault_project(tmp_path: Path, database_url: str, redis_url: str, smtp_url: str,
                  campaigns: dict[str, str], **overrides: Any) -> Iterator[Project]:
    """A project whose campaigns are ``{id: yaml template}``, on the shipped templates."""
    folder = tmp_path / "campaigns"
    folder.mkdir()
    for campaign_id, text in campaigns.items():
        (folder / f"{campaign_id}.yaml").write_text(text.format(id=campaign_id))
    values: dict[str, Any] = dict(FAST)
    values.update(database_url=database_url, redis_url=redis_url, smtp_url=smtp_url,
                  paths_campaigns=str(folder), paths_templates=str(REPO / "templates"))
    values.update(overrides)
    settings = make_settings(tmp_path, **values)
    project = Project(tmp_path, Nurture.open(settings, SystemClock()), settings_env(settings))
    try:
        yield project
    finally:
        project.close()


# What the SMTP server holds ---------------------------------------------------------------
def delivered(messages: Iterable[Any]) -> Counter[str]:
    """How many times each Message-ID reached the server."""
    return Counter(str(m["Message-ID"]) for m in messages)


def touch_key_of(message_id: str) -> tuple[int, str, str]:
    """The (enrollment, step, trigger key) a Message-ID was made from."""
    found = _MESSAGE_ID.match(message_id)
    assert found, message_id
    return int(found.group(1)), found.group(2), found.group(3) or ""


def assert_delivered_once(messages: Iterable[Any], touches: Sequence[Touch]) -> Counter[str]:
    """Each Message-ID at most once, each (enrollment, step, trigger) at most once, and each
    message one of ours. Returns the Message-ID counts."""
    counts = delivered(messages)
    twice = {mid: n for mid, n in counts.items() if n > 1}
    assert not twice, f"delivered more than once: {twice}"
    by_key = {(t.enrollment_id, t.step_id, t.trigger_key): t for t in touches}
    for message_id in counts:
        touch = by_key.get(touch_key_of(message_id))
        assert touch is not None, f"{message_id} is no touch of ours"
        assert touch.message_id in (None, message_id), (touch.id, touch.message_id, message_id)
    return counts


def job_status(client: Any, job_id: str | None) -> str:
    """What RQ says about a job: its status, "missing" or why Redis could not say."""
    from redis import RedisError
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    if not job_id:
        return "no job id"
    try:
        return str(Job.fetch(job_id, connection=client).get_status(refresh=False))
    except NoSuchJobError:
        return "missing from Redis"
    except RedisError as exc:
        return f"redis error {exc!r}"


def explain(project: Project, client: Any) -> str:
    """Where the rows that are not done stand, and what RQ says about their jobs."""
    now = datetime.now(UTC)
    touches = project.touches()
    lines = [f"states: {dict(Counter(str(t.state) for t in touches))}"]
    queued = Counter(t.job_id for t in touches if t.state == TouchState.QUEUED)
    for job_id, count in queued.most_common(8):
        lines.append(f"  {count} row(s) queued under RQ job {job_id}: "
                     f"{job_status(client, job_id)}")
    for t in touches:
        if t.state == TouchState.SENDING:
            lines.append(f"  touch {t.id} sending, lease until {t.lease_until} (now {now})")
        elif t.state == TouchState.SCHEDULED and t.due_at <= now:
            lines.append(f"  touch {t.id} scheduled and due since {t.due_at}")
    lines.append(project.log_tail(12))
    return "\n".join(lines)
