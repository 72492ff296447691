"""Reading the sender mailbox from a real IMAP server: a private Dovecot on loopback.

The session fixture writes a Dovecot configuration of its own in a temporary folder (its own
run and state folders, a passwd-file, maildirs there too), starts ``dovecot -F`` on free ports
of 127.0.0.1 (IMAP with STARTTLS, and IMAPS, with a self-signed certificate), and stops it at
the end. Each test gets a mailbox user of its own. Messages are delivered with IMAP APPEND:
the real samples of tests/mail-samples, pointed at touches the test sent.
"""

from __future__ import annotations

import ctypes
import getpass
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from imapclient import IMAPClient
from sqlalchemy import func, select

from nurture.app import Nurture
from nurture.cli import main
from nurture.clock import FakeClock
from nurture.inbound import imap as mailbox_module
from nurture.inbound.classify import classify
from nurture.inbound.imap import MailboxError, parse_imap_url, poll
from nurture.inbound.inbox import InboxConfig
from nurture.inbound.rawmail import parse_raw_message
from nurture.models import InboxCheckpoint, InboxMessage, Reply
from nurture.settings import Settings
from nurture.worker import jobs
from tests.conftest import make_settings
from tests.smtp_sink import free_port
from tests.test_inbox import outreach, retarget, sample, state_of
from tests.test_inbox import project as project  # noqa: F401 (a fixture: a project mailing the sink)

PASSWORD = "s3cret pass/word@"  # URL-encoded in imap_url
USERS = 100  # mailboxes, one per test


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Dovecot:
    folder: Path
    port: int  # IMAP, STARTTLS offered
    tls_port: int  # IMAPS
    process: subprocess.Popen[bytes]
    users: Iterator[int]

    @property
    def context(self) -> ssl.SSLContext:
        """Trusts the server's self-signed certificate, and verifies it."""
        return ssl.create_default_context(cafile=str(self.folder / "cert.pem"))

    def add_user(self) -> str:
        """A mailbox of its own for a test (written before the start: Dovecot may not see a
        passwd-file changed within the second it last read it)."""
        return f"u{next(self.users)}"

    def url(self, user: str, *, scheme: str = "imap", folder: str = "INBOX",
            starttls: bool = False, password: str = PASSWORD) -> str:
        from urllib.parse import quote

        port = self.tls_port if scheme == "imaps" else self.port
        query = "?starttls=true" if starttls else ""
        return f"{scheme}://{user}:{quote(password, safe='')}@127.0.0.1:{port}/{folder}{query}"

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(user, PASSWORD)
        return client

    def append(self, user: str, raw: bytes, when: datetime) -> None:
        with self.client(user) as client:
            client.append("INBOX", raw, msg_time=when)

    def flags(self, user: str) -> dict[int, tuple[bytes, ...]]:
        with self.client(user) as client:
            client.select_folder("INBOX", readonly=True)
            return dict(client.get_flags(client.search(["ALL"])))

    def doveadm(self, *args: str) -> None:
        subprocess.run([shutil.which("doveadm") or "/usr/bin/doveadm", "-c",
                        str(self.folder / "dovecot.conf"), *args], check=True,
                       capture_output=True, timeout=30)


def _config(folder: Path, port: int, tls_port: int) -> str:
    if os.geteuid() == 0:  # Dovecot refuses to give mail to root: the "mail" system user
        user, group = "mail", "mail"
        shutil.chown(folder / "mail", user, group)
        internal = ""
    else:  # everything runs as whoever runs the tests
        user, group = getpass.getuser(), grp.getgrgid(os.getegid()).gr_name
        internal = (f"default_internal_user = {user}\ndefault_login_user = {user}\n"
                    f"default_internal_group = {group}\n")
    uid = pwd.getpwnam(user).pw_uid
    return f"""\
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
{internal}first_valid_uid = {min(uid, 500)}
ssl = yes
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0  # and no penalty (anvil below): a wrong password fails at once
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={folder}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                         if Path("/usr/sbin/dovecot").exists() else None)
    if binary is None:
        pytest.fail("Dovecot is not installed: apt-get install dovecot-imapd (scripts/test does)")
    folder = Path(tempfile.mkdtemp(prefix="nr-dovecot-"))
    folder.chmod(0o755)  # Dovecot's own users read the passwd-file and the maildirs in it
    for sub in ("run", "state", "mail"):
        (folder / sub).mkdir()
    (folder / "passwd").write_text("".join(f"u{n}:{{PLAIN}}{PASSWORD}::::::\n"
                                           for n in range(USERS)))
    (folder / "passwd").chmod(0o644)  # test passwords only
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    port, tls_port = free_port(), free_port()
    (folder / "dovecot.conf").write_text(_config(folder, port, tls_port))
    process = subprocess.Popen([binary, "-F", "-c", str(folder / "dovecot.conf")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with_parent)
    server = Dovecot(folder, port, tls_port, process, iter(range(USERS)))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "dovecot.log")
                    out = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"Dovecot did not start: {out}\n"
                                f"{log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clock() -> FakeClock:
    """Wednesday 4 March 2026, 09:00 in New York: in the past, since Dovecot gives a message
    APPENDed with a future date the current time instead."""
    return FakeClock(datetime(2026, 3, 4, 14, tzinfo=UTC))


@pytest.fixture
def mailbox(dovecot: Dovecot) -> str:
    return dovecot.add_user()


def config(dovecot: Dovecot, user: str, **kwargs: Any) -> InboxConfig:
    return InboxConfig(imap_url=dovecot.url(user, **kwargs), soft_bounce_limit=3,
                       pause_days=7)


SOURCES = [{"email": "sam.chen.md@gmail.com", "first_name": "Sam", "last_name": "Chen"},
           {"email": "mpatel@lakeviewortho.example", "first_name": "Maya"},
           {"email": "dr.lee@clinic.example", "first_name": "Dana"}]


def deliver_mail(dovecot: Dovecot, user: str, ids: dict[str, str], when: datetime) -> None:
    """A reply, an out-of-office notice, a hard bounce and a stranger's message."""
    dovecot.append(user, retarget(sample("human/gmail-web.eml"), ids["sam.chen.md@gmail.com"]),
                   when)
    dovecot.append(user, retarget(sample("autoreplies/outlook-en.eml"),
                                  ids["mpatel@lakeviewortho.example"]), when)
    dovecot.append(user, retarget(sample("sisimai/lhost-postfix-13.eml"),
                                  ids["dr.lee@clinic.example"],
                                  recipient="dr.lee@clinic.example"), when)
    dovecot.append(user, retarget(sample("human/german.eml"), None), when)


# Tests -------------------------------------------------------------------------------------------
def test_poll_acts_once_and_leaves_the_mailbox_untouched(
        dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock,
        smtp_sink: Any, database_url: str, tmp_path: Path) -> None:
    ids = outreach(project, SOURCES)
    deliver_mail(dovecot, mailbox, ids, clock.now())
    before = dovecot.flags(mailbox)
    cfg = config(dovecot, mailbox)

    report = poll(project, config=cfg)
    assert report.scanned == "first" and report.fetched == 4
    assert report.actions == {"reply": 1, "paused": 1, "bounced": 1, "unmatched": 1}
    assert report.notified == 1
    assert state_of(project, "sam.chen.md@gmail.com")[1] == [("stopped", "reply")]
    assert state_of(project, "mpatel@lakeviewortho.example") == ("active", [("active", None)])
    assert state_of(project, "dr.lee@clinic.example")[0] == "bounced"
    notice = smtp_sink.wait_for(1)[0]
    assert notice["Subject"] == "Reply from Sam Chen: answer personally"
    assert "send over a few of those handouts" in " ".join(notice.get_content().split())

    # Nothing marked read, flagged or deleted: the owner's inbox looks as it did.
    after = dovecot.flags(mailbox)
    assert after == before and len(after) == 4
    assert not any(b"\\Seen" in flags or b"\\Deleted" in flags for flags in after.values())

    # Polling again, or from a restarted process, reads nothing twice...
    assert poll(project, config=cfg).fetched == 0
    restarted = Nurture.open(make_settings(tmp_path, database_url=database_url,
                                           smtp_url=smtp_sink.url), clock)
    try:
        assert poll(restarted, config=cfg).fetched == 0
        # ...and misses nothing that arrives later.
        clock.advance(hours=2)
        dovecot.append(mailbox, retarget(sample("human/outlook-desktop.eml"),
                                         ids["mpatel@lakeviewortho.example"]), clock.now())
        report = poll(restarted, config=cfg)
        assert (report.fetched, report.actions, report.notified) == (1, {"reply": 1}, 1)
    finally:
        restarted.close()
    assert state_of(project, "mpatel@lakeviewortho.example")[1] == [("stopped", "reply")]
    assert len(smtp_sink.wait_for(2)) == 2
    with project.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Reply)) == 2
        checkpoint = session.scalars(select(InboxCheckpoint)).one()
    assert checkpoint.last_uid == 5 and checkpoint.mailbox == f"{mailbox}@127.0.0.1/INBOX"


def test_mail_with_blank_lines_before_its_headers_is_read(
        dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock,
        smtp_sink: Any) -> None:
    """Some servers hand a message over with blank lines first: it is still a reply, known by
    its Message-ID; an automatic acknowledgement (not an absence) changes nothing."""
    ids = outreach(project, SOURCES)
    reply = retarget(sample("human/gmail-web.eml"), ids["sam.chen.md@gmail.com"])
    dovecot.append(mailbox, b"\r\n\r\n" + reply, clock.now())
    dovecot.append(mailbox, retarget(sample("flufl/qmail_08.eml"), None).replace(
        b"contact@example.com", b"mpatel@lakeviewortho.example"), clock.now())
    report = poll(project, config=config(dovecot, mailbox))
    assert report.actions == {"reply": 1, "other": 1}
    assert state_of(project, "sam.chen.md@gmail.com")[1] == [("stopped", "reply")]
    assert state_of(project, "mpatel@lakeviewortho.example") == ("active", [("active", None)])
    with project.db.transaction() as session:
        keys = set(session.scalars(select(InboxMessage.key)))
    assert classify(reply).in_reply_to and keys >= {
        parse_raw_message(reply)["Message-ID"].strip()}


def test_a_new_uidvalidity_rescans_without_acting_twice(
        dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock,
        smtp_sink: Any) -> None:
    ids = outreach(project, SOURCES)
    deliver_mail(dovecot, mailbox, ids, clock.now())
    cfg = config(dovecot, mailbox)
    assert poll(project, config=cfg).fetched == 4

    dovecot.doveadm("mailbox", "update", "-u", mailbox, "--uid-validity", "4242", "INBOX")
    clock.advance(days=1)
    dovecot.append(mailbox, retarget(sample("human/outlook-desktop.eml"),
                                     ids["mpatel@lakeviewortho.example"]), clock.now())
    report = poll(project, config=cfg)
    assert (report.scanned, report.uidvalidity) == ("uidvalidity", 4242)
    assert report.fetched == 5
    assert report.actions == {"duplicate": 4, "reply": 1}
    assert report.notified == 1
    with project.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Reply)) == 2
        assert session.scalar(select(func.count()).select_from(InboxMessage)) == 5
    assert len(smtp_sink.wait_for(2)) == 2
    assert poll(project, config=cfg).fetched == 0


def test_the_first_poll_skips_mail_older_than_our_first_email(
        dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock) -> None:
    old = clock.now().replace(year=2025)
    dovecot.append(mailbox, sample("human/gmail-web.eml"), old)  # years of mail before us
    report = poll(project, config=config(dovecot, mailbox))  # nothing sent yet
    assert (report.scanned, report.fetched) == ("first", 0)
    ids = outreach(project, SOURCES[:1])
    dovecot.append(mailbox, retarget(sample("human/gmail-web.eml"),
                                     ids["sam.chen.md@gmail.com"],
                                     new_id="<second@mail.gmail.com>"), clock.now())
    report = poll(project, config=config(dovecot, mailbox))
    assert (report.fetched, report.actions) == (1, {"reply": 1})


def test_the_first_poll_reads_what_came_since_the_first_email(
        dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock) -> None:
    dovecot.append(mailbox, sample("human/apple-mail.eml"), clock.now().replace(year=2025))
    ids = outreach(project, SOURCES[:1])
    clock.advance(days=3)  # the mailbox is set up a few days after the first emails went out
    dovecot.append(mailbox, retarget(sample("human/gmail-web.eml"),
                                     ids["sam.chen.md@gmail.com"]), clock.now())
    report = poll(project, config=config(dovecot, mailbox))
    assert (report.scanned, report.fetched, report.actions) == ("first", 1, {"reply": 1})


@pytest.mark.parametrize("how", ["imaps", "starttls"])
def test_tls(dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock,
             how: str) -> None:
    ids = outreach(project, SOURCES[:1])
    dovecot.append(mailbox, retarget(sample("human/gmail-web.eml"),
                                     ids["sam.chen.md@gmail.com"]), clock.now())
    kwargs = {"scheme": "imaps"} if how == "imaps" else {"starttls": True}
    report = poll(project, config=config(dovecot, mailbox, **kwargs),
                  ssl_context=dovecot.context)
    assert "plain" not in report.mailbox
    assert report.actions == {"reply": 1}
    with pytest.raises(MailboxError, match="cannot (connect|log in)"):  # an untrusted cert
        poll(project, config=config(dovecot, mailbox, **kwargs))


def test_errors_never_show_the_password(dovecot: Dovecot, mailbox: str,
                                        project: Nurture) -> None:
    with pytest.raises(MailboxError, match="cannot log in") as bad:
        poll(project, config=config(dovecot, mailbox, password="wrong-password"))
    assert "wrong-password" not in str(bad.value)
    with pytest.raises(MailboxError, match="cannot open folder 'Nope'"):
        poll(project, config=config(dovecot, mailbox, folder="Nope"))
    for url in ("pop3://u:p@host", "imaps://u:p@host?starttls=true", "imap://host/INBOX",
                "imap://u:p@host:99999/"):
        with pytest.raises(MailboxError) as bad:
            parse_imap_url(url)
        assert ":p@" not in str(bad.value)
    parsed = parse_imap_url("imaps://me%40clinic.example:pw@mail.example/Replies%20In")
    assert (parsed.username, parsed.password, parsed.port, parsed.folder) == (
        "me@clinic.example", "pw", 993, "Replies In")
    assert "pw" not in repr(parsed) and "pw" not in parsed.name


def _configure(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point the project at the mailbox, as nurture.toml's [imap] url will."""
    monkeypatch.setenv("NURTURE_IMAP_URL", url)
    if "imap_url" not in Settings.__dataclass_fields__:  # until Settings has the field
        real = mailbox_module.inbox_config
        monkeypatch.setattr(mailbox_module, "inbox_config", lambda settings: InboxConfig(
            **{**real(settings).__dict__, "imap_url": url}))


def test_cli_inbox_poll(dovecot: Dovecot, mailbox: str, project: Nurture, clock: FakeClock,
                        tmp_path: Path, database_url: str, smtp_sink: Any,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = outreach(project, SOURCES[:1])
    dovecot.append(mailbox, retarget(sample("human/gmail-web.eml"),
                                     ids["sam.chen.md@gmail.com"]), clock.now())
    (tmp_path / "nurture.toml").write_text(
        f'[database]\nurl = "{database_url}"\n[smtp]\nurl = "{smtp_sink.url}"\n'
        '[sender]\nname = "Alex Rivera"\nemail = "alex@riverapt.example"\n'
        '[practice]\nname = "Rivera PT"\naddress = "120 Main Street"\n'
        f'[paths]\ncampaigns = "{project.settings.campaigns_dir}"\n'
        f'templates = "{project.settings.templates_dir}"\n')
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--now", clock.now().isoformat()]
    result = runner.invoke(main, [*base, "inbox", "poll"], env={"NURTURE_IMAP_URL": ""})
    assert result.exit_code == 1 and "no mailbox to read: set [imap] url" in result.output
    _configure(monkeypatch, dovecot.url(mailbox))
    result = runner.invoke(main, [*base, "inbox", "poll"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"imap://127.0.0.1:{dovecot.port}/INBOX (plain, user {mailbox}): 1 new message(s) "
        "(first poll: scanned since the first email sent): 1 reply; 1 notification(s) sent\n")
    assert state_of(project, "sam.chen.md@gmail.com")[1] == [("stopped", "reply")]


def test_the_worker_job_polls(dovecot: Dovecot, mailbox: str, project: Nurture,
                              clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = outreach(project, SOURCES[:1])
    dovecot.append(mailbox, retarget(sample("human/gmail-web.eml"),
                                     ids["sam.chen.md@gmail.com"]), clock.now())
    _configure(monkeypatch, dovecot.url(mailbox))
    if "imap_url" in Settings.__dataclass_fields__:
        project.settings = make_settings(project.settings.project_dir,
                                         database_url=project.settings.database_url,
                                         smtp_url=project.settings.smtp_url,
                                         imap_url=dovecot.url(mailbox))
    jobs.bind(project)
    try:
        result = jobs.inbox_job()
    finally:
        jobs.bind(None)
    assert result["actions"] == {"reply": 1}
