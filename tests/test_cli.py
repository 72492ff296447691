"""The command line, as a user types it: in-process for the quick commands, and as real
processes (embedded Redis, outbox folder) for the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.cli import main
from nurture.clock import parse_instant
from tests.conftest import REPO

NOW = "2026-12-07T15:00:00Z"  # a Monday: 10:00 in New York, 09:00 in Chicago


def run(project: Path, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    opts = ["--project", str(project)] + (["--database-url", db] if db else [])
    return subprocess.run([sys.executable, "-m", "nurture", *opts, *args], capture_output=True,
                          text=True, timeout=120, cwd=project)


@pytest.fixture
def project() -> Iterator[Path]:
    # A short path: the embedded Redis socket lives in it, and socket paths are short. Made by
    # mkdtemp: tests running in parallel (xdist, other people) never share one.
    folder = Path(tempfile.mkdtemp(prefix="nr-")) / "p"
    result = CliRunner().invoke(main, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    yield folder
    subprocess.run(["rm", "-rf", str(folder.parent)], check=False)


def invoke(project: Path, *args: str, db: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project", str(project), "--database-url", db, *args])
    return result.exit_code, result.output


def test_init_writes_a_project_that_validates(project: Path) -> None:
    for name in ("nurture.toml", "contacts.csv", "campaigns/referral-outreach.yaml",
                 "templates/appreciation.mjml"):
        assert (project / name).is_file(), name
    assert "GENERATED-SECRET" not in (project / "nurture.toml").read_text()
    again = CliRunner().invoke(main, ["init", str(project)])
    assert "kept" in again.output and "created" not in again.output
    code, out = invoke(project, "validate", db="sqlite://")
    assert code == 0, out
    assert out.startswith("ok: 2 campaigns")


def test_validate_lists_every_problem_with_file_and_line(project: Path) -> None:
    campaign = project / "campaigns" / "referral-outreach.yaml"
    text = campaign.read_text().replace("wait: 5 business days", "wiat: 5 business days")
    campaign.write_text(text.replace("template: check-in.mjml", "template: nope.mjml"))
    code, out = invoke(project, "validate", db="sqlite://")
    assert code == 1
    assert "referral-outreach.yaml:17: steps[1].wiat: \"wiat\" is not a field here" in out
    assert "nope.mjml" in out and "referral-outreach.yaml:" in out
    assert "Error: " in out


def test_import_enroll_reply_referral_status(project: Path, database_url: str) -> None:
    code, out = invoke(project, "contacts", "import", str(project / "contacts.csv"),
                       db=database_url)
    assert (code, out.strip()) == (0, "8 created, 0 updated, 0 unchanged")
    code, out = invoke(project, "--now", NOW, "enroll", "referral-outreach", "--tag", "physician",
                       db=database_url)
    assert code == 0, out
    assert out.startswith("referral-outreach: 3 enrolled")
    code, out = invoke(project, "enroll", "referral-outreach", "--email", "nobody@x.example",
                       db=database_url)
    assert "no contact nobody@x.example" in out
    code, out = invoke(project, "reply", "DR.LEE@lakeside-ortho.example.org", db=database_url)
    assert out.strip() == ("reply from dr.lee@lakeside-ortho.example.org recorded; "
                           "stopped: referral-outreach")
    code, out = invoke(project, "--now", NOW, "referral", "add",
                       "priya.shah@maplefamilymed.example.com", "--date", "2026-12-08",
                       "--ref", "EHR-123", db=database_url)  # tomorrow: within a day's slack
    assert code == 0, out
    assert "thank-you planned: referral-outreach/thank-you" in out
    assert "enrolled in: partner-care" in out
    code, out = invoke(project, "referral", "add", "priya.shah@maplefamilymed.example.com",
                       "--ref", "EHR-123", db=database_url)
    assert "already recorded; nothing changed" in out
    code, out = invoke(project, "referral", "add", "x@y.example", "--ref", "Jane Doe knee",
                       db=database_url)
    assert code == 1 and "not an opaque id" in out
    code, out = invoke(project, "status", db=database_url)
    assert code == 0
    assert "referral-outreach: 1 active, 2 stopped" in out
    assert "partner-care: 1 active" in out
    assert "priya.shah@maplefamilymed.example.com" in out and "thank-you" in out


def test_bad_csv_imports_nothing_and_names_lines(project: Path, database_url: str) -> None:
    bad = project / "bad.csv"
    bad.write_text("email,first_name,timezone\nok@a.example,A,\nnot-an-email,B,\n"
                   "c@a.example,C,Mars/Base\n")
    code, out = invoke(project, "contacts", "import", str(bad), db=database_url)
    assert code == 1
    assert "bad.csv:3: email:" in out and "bad.csv:4: timezone:" in out
    code, out = invoke(project, "enroll", "referral-outreach", "--email", "ok@a.example",
                       db=database_url)
    assert "no contact ok@a.example" in out


def test_enroll_exits_1_when_it_finds_no_contact(project: Path, database_url: str) -> None:
    invoke(project, "contacts", "import", str(project / "contacts.csv"), db=database_url)
    code, out = invoke(project, "enroll", "referral-outreach", "--email", "unknown@x.example",
                       db=database_url)
    assert code == 1 and "Error: no contact unknown@x.example (import it first)" in out
    code, out = invoke(project, "enroll", "referral-outreach", "--tag", "nobody",
                       db=database_url)
    assert code == 1 and "Error: no contact has the tag nobody" in out
    code, out = invoke(project, "--now", NOW, "enroll", "referral-outreach", "--tag",
                       "physician", db=database_url)
    assert code == 0 and out.startswith("referral-outreach: 3 enrolled")  # piped: no bar
    assert out.count("\n") == 1


def test_control_characters_are_refused_at_the_command_line(project: Path,
                                                            database_url: str) -> None:
    bad = project / "ctl.csv"
    bad.write_text("email,first_name\nok@a.example,A\x00nn\n")
    code, out = invoke(project, "contacts", "import", str(bad), db=database_url)
    assert code == 1 and "ctl.csv:2: first_name: the cell holds a control character (U+0000)" \
        in out
    for args in (["reply", "a\x01b@x.org"], ["unsubscribe", "a\x00b@x.org"],
                 ["enroll", "referral-outreach", "--email", "a\x01b@x.org"]):
        code, out = invoke(project, *args, db=database_url)
        assert code == 2 and "control character" in out, args
    code, out = invoke(project, "referral", "add", "a\x01b@x.org", db=database_url)
    assert code == 1 and "control character (U+0001)" in out
    code, out = invoke(project, "status", db=database_url)
    assert code == 0


def test_now_option_rejects_garbage(project: Path) -> None:
    code, out = invoke(project, "--now", "next tuesday", "status", db="sqlite://")
    assert code == 2 and "not an ISO-8601 time" in out


def _redis_pid(project: Path) -> int | None:
    out = subprocess.run(["pgrep", "-f", f"{project}/.nurture/redis.sock"], capture_output=True,
                         text=True).stdout.split()
    return int(out[0]) if out else None


def _eml(project: Path) -> list:
    return [message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted((project / "outbox").glob("*.eml"))]


def test_tick_then_burst_worker_on_embedded_defaults(project: Path) -> None:
    assert run(project, "contacts", "import", "contacts.csv").returncode == 0
    assert run(project, "--now", NOW, "enroll", "referral-outreach").returncode == 0
    ticked = run(project, "--now", NOW, "tick")
    assert ticked.returncode == 0, ticked.stderr
    assert "enqueued 5" in ticked.stdout  # the prospects in New York and Chicago
    assert _redis_pid(project) is None  # the command's embedded Redis went with it
    worked = run(project, "--now", NOW, "worker", "--burst")
    assert worked.returncode == 0, worked.stderr
    assert "redis:    embedded redis-server" in worked.stdout
    assert "mail:     outbox folder" in worked.stdout
    messages = _eml(project)
    assert len(messages) == 5
    for message in messages:  # sent at the --now time, not the machine's
        sent = parsedate_to_datetime(message["Date"])
        assert abs(sent - parse_instant(NOW)).total_seconds() < 120
    assert _redis_pid(project) is None
    again = run(project, "--now", NOW, "worker", "--burst")
    assert again.returncode == 0 and len(_eml(project)) == 5  # nothing twice


def test_worker_daemon_ticks_and_stops_cleanly_on_sigterm(project: Path) -> None:
    assert run(project, "contacts", "import", "contacts.csv").returncode == 0
    assert run(project, "--now", NOW, "enroll", "referral-outreach").returncode == 0
    env = {**os.environ, "NURTURE_WORKER_TICK_INTERVAL": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "worker.py"), "--now", NOW],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(_eml(project)) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_eml(project)) == 5  # the worker's first tick queued them, and sent them
        redis_pid = _redis_pid(project)
        assert redis_pid is not None
        children = _children(proc.pid)
        assert len(children) >= 2  # the embedded Redis and the cron scheduler
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    deadline = time.monotonic() + 10  # the embedded Redis is shut down as the worker exits
    while _redis_pid(project) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _redis_pid(project) is None
    assert [pid for pid in children if _alive(pid)] == []


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent (init) has yet to reap it
