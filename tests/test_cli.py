"""The command line, as a user types it: in-process for the quick commands, and as real
processes (embedded Redis, outbox folder) for the worker."""

from __future__ import annotations

import json
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
from typing import Any

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
    assert again.exit_code == 1
    assert again.output.startswith(f"Error: {project / 'nurture.toml'}: a project is here "
                                   "already; `nurture init --force`")
    (project / "templates" / "coffee.mjml").unlink()
    forced = CliRunner().invoke(main, ["init", "--force", str(project)])
    assert forced.exit_code == 0, forced.output
    assert "created" in forced.output and "coffee.mjml" in forced.output
    assert forced.output.count("created") == 1 and "kept" in forced.output
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


def test_outside_a_project_commands_refuse_and_create_nothing(tmp_path: Path) -> None:
    for args in (["status"], ["validate"], ["tick"], ["referral", "add", "a@b.example"],
                 ["library", "list"]):
        done = subprocess.run([sys.executable, "-m", "nurture", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr == ("Error: no nurture.toml here or above; run `nurture init` or "
                               "pass --project\n"), args
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(main, ["--project", str(tmp_path), "status"])
    assert result.exit_code == 2 and "no nurture.toml in" in result.output
    assert list(tmp_path.iterdir()) == []


def test_commands_find_the_project_upward_like_git(project: Path) -> None:
    below = project / "campaigns"
    done = subprocess.run([sys.executable, "-m", "nurture", "validate"], capture_output=True,
                          text=True, timeout=120, cwd=below)
    assert done.returncode == 0, done.stderr
    assert not (below / ".nurture").exists() and not (below / "nurture.db").exists()


def test_init_into_a_folder_with_other_files_writes_the_project(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "nurture.toml").is_file() and (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "campaigns", "contacts.csv", "notes.txt", "nurture.toml", "templates"]  # no staging left


def test_status_in_the_practice_zone_utc_or_json(project: Path) -> None:
    db = f"sqlite:///{project}/nurture.db"
    assert invoke(project, "contacts", "import", str(project / "contacts.csv"), db=db)[0] == 0
    assert invoke(project, "--now", NOW, "enroll", "referral-outreach", db=db)[0] == 0
    code, out = invoke(project, "status", db=db)
    assert code == 0 and " CST  #" in out  # the practice is in America/Chicago
    code, out = invoke(project, "status", "--utc", db=db)
    assert code == 0 and " UTC  #" in out and " CST " not in out
    code, out = invoke(project, "status", "--json", db=db)
    data = json.loads(out)
    assert data["enrollments"]["referral-outreach"] == {"active": 6}
    assert data["next"][0]["at"].endswith("+00:00")


def test_worker_summary_says_where_each_setting_came_from(project: Path) -> None:
    env = {**os.environ, "NURTURE_DATABASE_URL": f"sqlite:///{project}/env.db"}
    done = subprocess.run([sys.executable, "-m", "nurture", "worker", "--burst"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("database: sqlite:///")
    assert lines[0].endswith("env.db  (environment)")
    assert lines[1].startswith("redis:    embedded") and lines[1].endswith("(default)")
    assert lines[2].startswith("mail:     outbox") and lines[2].endswith("(default)")
    done = subprocess.run([sys.executable, "-m", "nurture", "--database-url",
                           f"sqlite:///{project}/opt.db", "worker", "--burst"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert done.stdout.splitlines()[0].endswith("opt.db  (option)"), done.stdout + done.stderr


def test_the_worker_says_what_it_does(project: Path, smtp_sink: Any) -> None:
    assert run(project, "contacts", "import", "contacts.csv").returncode == 0
    assert run(project, "--now", NOW, "enroll", "referral-outreach").returncode == 0
    smtp_sink.reject["dr.lee@lakeside-ortho.example.org"] = (550, "5.1.1 no such mailbox")
    smtp_sink.reject["j.brooks@brooks-chiro.example.com"] = (451, "4.3.0 try again later")
    env = {**os.environ, "NURTURE_SMTP_URL": smtp_sink.url,
           "NURTURE_WEB_BASE_URL": "https://riverapt.example"}
    done = subprocess.run([sys.executable, "-m", "nurture", "--now", NOW, "worker", "--burst"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[2].startswith("mail:     smtp") and lines[2].endswith("(environment)")
    assert lines[4] == "2026-12-07 09:00:00 CST  tick: 5 emails due, queued in 1 jobs"
    emails = lines[5:]
    assert len(emails) == 5, done.stdout
    sent = [line for line in emails if line.endswith("]") and "  sent  [touch" in line]
    assert len(sent) == 3
    assert ('2026-12-07 09:00:00 CST  coach.rivera@ironworks-gym.example.com  '
            'referral-outreach/hello  "Thank you for what you do at Ironworks Gym"  sent  '
            '[touch 1]') in sent
    (failed,) = [line for line in emails if "dr.lee@" in line]
    assert "  FAILED (" in failed and "5.1.1" in failed
    (retry,) = [line for line in emails if "j.brooks@" in line]
    assert "  NOT SENT, will retry (" in retry and "4.3.0" in retry
    assert "result is kept" not in done.stdout + done.stderr  # RQ's own lines: only --verbose
    verbose = subprocess.run([sys.executable, "-m", "nurture", "--now", NOW, "worker", "--burst",
                              "--verbose"], env=env, capture_output=True, text=True,
                             timeout=120, cwd=project)
    assert verbose.returncode == 0, verbose.stderr
    assert "done, quitting" in verbose.stdout + verbose.stderr  # RQ speaks at INFO
    assert "done, quitting" not in done.stdout + done.stderr
