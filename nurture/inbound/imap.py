"""Reading the sender mailbox over IMAP, leaving it looking untouched.

``nurture inbox poll`` (and :func:`nurture.worker.jobs.inbox_job`, periodically inside
``nurture worker``) opens the mailbox of ``imap_url``, reads the messages that arrived since
the last poll, and hands each to :func:`nurture.inbound.inbox.process_message`, then sends the
owner the notifications it queued.

**Untouched.** The folder is opened read-only (EXAMINE) and bodies are fetched with
``BODY.PEEK``, so no message is marked read, flagged, moved or deleted, whatever the server.

**Checkpoint.** IMAP numbers a folder's messages with ascending UIDs that stay valid while its
UIDVALIDITY does. ``inbox_checkpoints`` keeps (UIDVALIDITY, last UID done) per mailbox and is
advanced after each batch, so a restart neither reprocesses nor misses mail: new mail always
gets a higher UID. When there is no checkpoint yet, or the server changed UIDVALIDITY (the
folder was rebuilt or migrated and its UIDs mean nothing now), the folder is scanned by date
instead: since the first email nurture sent (nothing older can be about us), or since two days
before the last poll; every message is recorded once by Message-ID, so what was processed
before is skipped (see :mod:`nurture.inbound.inbox`).

``imap://user:password@host[:143][/FOLDER][?starttls=true]`` or ``imaps://…[:993]``; the
folder defaults to INBOX, and user and password are percent-encoded (``@`` is ``%40``).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..app import Nurture
from ..errors import NurtureError
from ..models import InboxCheckpoint, Touch
from ..outbound.notify import send_notifications
from ..settings import Settings
from .inbox import InboxConfig, Outcome, process_message

log = logging.getLogger(__name__)

BATCH = 50  # messages per FETCH; the checkpoint advances after each batch
MAX_PER_POLL = 1000  # a first scan of a full mailbox goes on at the next poll
MAX_BYTES = 1 << 20  # of each message: enough for any reply, bounce or notice, not the video
RESCAN_MARGIN = timedelta(days=2)  # before the last poll, when UIDVALIDITY changed
TIMEOUT = 60.0  # seconds for any one network operation


def inbox_config(settings: Settings) -> InboxConfig:
    """The inbox settings, gathered for the poller."""
    return InboxConfig(imap_url=settings.imap_url, poll_interval=settings.inbox_poll_interval,
                       soft_bounce_limit=settings.inbox_soft_bounce_limit,
                       pause_days=settings.inbox_pause_days)


class MailboxError(NurtureError):
    """The mailbox could not be read (configuration, connection, login, server). The message
    never quotes the URL: it holds a password."""


@dataclass(frozen=True)
class ImapUrl:
    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str
    starttls: bool

    @property
    def name(self) -> str:
        """For messages and logs: no password."""
        security = "implicit tls" if self.scheme == "imaps" else (
            "starttls" if self.starttls else "plain")
        return f"{self.scheme}://{self.host}:{self.port}/{self.folder} ({security}, user " \
               f"{self.username})"

    @property
    def key(self) -> str:
        """What the checkpoint is kept under: the same mailbox however it is reached."""
        return f"{self.username}@{self.host.lower()}/{self.folder}"


def parse_imap_url(url: str) -> ImapUrl:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("imap", "imaps") or not parts.hostname:
        raise MailboxError("[imap] url must look like imaps://user:password@host/INBOX or "
                           "imap://user:password@host/INBOX?starttls=true")
    query = parse_qs(parts.query, keep_blank_values=True)
    starttls = query.pop("starttls", ["false"])[-1].lower()
    if query or starttls not in ("true", "false") or (starttls == "true" and scheme == "imaps"):
        raise MailboxError("the only [imap] url option is ?starttls=true, for imap://")
    if not parts.username:
        raise MailboxError("[imap] url needs a user: imaps://user:password@host/INBOX")
    try:
        port = parts.port or (993 if scheme == "imaps" else 143)
    except ValueError:
        raise MailboxError("the [imap] url's port is not a port number") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapUrl(scheme, parts.hostname, port, unquote(parts.username),
                   unquote(parts.password or ""), folder, starttls == "true")


@contextlib.contextmanager
def connect(url: ImapUrl, ssl_context: ssl.SSLContext | None = None) -> Iterator[IMAPClient]:
    """A logged-in client with ``url.folder`` selected read-only; logged out afterwards."""
    context = ssl_context or ssl.create_default_context()
    try:
        client = IMAPClient(url.host, port=url.port, ssl=url.scheme == "imaps",
                            ssl_context=context, timeout=TIMEOUT)
    except (OSError, IMAPClientError) as exc:
        raise MailboxError(f"cannot connect to {url.name}: {exc}") from exc
    client.normalise_times = False  # INTERNALDATE as aware datetimes, not local naive ones
    try:
        try:
            if url.starttls:
                client.starttls(context)
            client.login(url.username, url.password)
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(f"cannot log in to {url.name}: {exc}") from exc
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()


@dataclass
class PollReport:
    mailbox: str
    uidvalidity: int = 0
    scanned: str = ""  # "", "first" (no checkpoint yet) or "uidvalidity" (it changed)
    fetched: int = 0
    # nurture.inbound.inbox.ACTIONS + duplicate
    actions: dict[str, int] = field(default_factory=dict)
    more: bool = False  # MAX_PER_POLL was reached: the rest comes at the next poll
    notified: int = 0
    notify_failed: int = 0

    def add(self, outcome: Outcome) -> None:
        self.actions[outcome.action] = self.actions.get(outcome.action, 0) + 1

    def summary(self) -> str:
        seen = ", ".join(f"{n} {action}" for action, n in sorted(self.actions.items()))
        scan = {"first": " (first poll: scanned since the first email sent)",
                "uidvalidity": " (UIDVALIDITY changed: re-scanned, duplicates skipped)"}
        text = f"{self.mailbox}: {self.fetched} new message(s){scan.get(self.scanned, '')}"
        text += f": {seen}" if seen else ""
        text += f"; {self.notified} notification(s) sent"
        if self.notify_failed:
            text += f", {self.notify_failed} failed (tried again at the next poll)"
        if self.more:
            text += "; more to read at the next poll"
        return text


def poll(app: Nurture, *, config: InboxConfig | None = None,
         ssl_context: ssl.SSLContext | None = None) -> PollReport:
    """Read what arrived since the last poll, act on each message, notify the owner."""
    config = config or inbox_config(app.settings)
    if not config.imap_url.strip():
        raise MailboxError("no mailbox to read: set [imap] url (NURTURE_IMAP_URL)")
    if not app.settings.sender_email.strip():
        raise MailboxError("[sender] email is required: reply notifications are sent there")
    url = parse_imap_url(config.imap_url)
    report = PollReport(url.name)
    try:
        with connect(url, ssl_context) as client:
            _read(app, client, url, config, report)
    except (OSError, IMAPClientError, imaplib.IMAP4.abort) as exc:
        raise MailboxError(f"reading {url.name} failed: {exc}") from exc
    notices = send_notifications(app)
    report.notified, report.notify_failed = notices.sent, notices.failed
    return report


def _read(app: Nurture, client: IMAPClient, url: ImapUrl, config: InboxConfig,
          report: PollReport) -> None:
    try:
        selected = client.select_folder(url.folder, readonly=True)
    except IMAPClientError as exc:
        raise MailboxError(f"cannot open folder {url.folder!r} of {url.name}: {exc}") from exc
    uidvalidity = int(selected[b"UIDVALIDITY"])
    started = app.now()
    report.uidvalidity = uidvalidity
    uids = _new_uids(app, client, url.key, uidvalidity, int(selected.get(b"UIDNEXT") or 0),
                     report)
    if len(uids) > MAX_PER_POLL:
        uids, report.more = uids[:MAX_PER_POLL], True
    for start in range(0, len(uids), BATCH):
        batch = uids[start:start + BATCH]
        fetched = client.fetch(batch, [f"BODY.PEEK[]<0.{MAX_BYTES}>", "INTERNALDATE"])
        done = 0
        try:
            for uid in batch:
                data = fetched.get(uid)
                if data is not None:  # None: expunged between SEARCH and FETCH
                    raw = next((v for k, v in data.items() if k.startswith(b"BODY[")), b"")
                    report.fetched += 1
                    report.add(process_message(app, raw or b"", config=config,
                                               received_at=_internaldate(data)))
                done = uid
        finally:  # what was processed stays processed, even if the next message fails
            if done:
                _advance(app, url.key, uidvalidity, done)
    with app.db.transaction() as session:  # the time of this poll's search, for a re-scan
        session.execute(update(InboxCheckpoint).where(
            InboxCheckpoint.mailbox == url.key, InboxCheckpoint.uidvalidity == uidvalidity)
            .values(polled_at=started))


def _new_uids(app: Nurture, client: IMAPClient, key: str, uidvalidity: int, uidnext: int,
              report: PollReport) -> list[int]:
    """The UIDs to read, ascending; resets the checkpoint when it cannot be trusted."""
    with app.db.transaction() as session:  # not held during the network calls below
        checkpoint = session.get(InboxCheckpoint, key)
        first_sent = session.scalar(select(func.min(Touch.sent_at)))
    if checkpoint is not None and checkpoint.uidvalidity == uidvalidity:
        last = checkpoint.last_uid
        return sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
    if checkpoint is None:
        report.scanned, since = "first", first_sent
    else:
        report.scanned = "uidvalidity"
        since = checkpoint.polled_at - RESCAN_MARGIN
        if first_sent is not None:
            since = max(since, first_sent)
        log.warning("%s: UIDVALIDITY changed from %s to %s; scanning since %s",
                    key, checkpoint.uidvalidity, uidvalidity, since)
    uids = sorted(client.search(["SINCE", _day(since)])) if since is not None else []
    if uids:
        start = uids[0] - 1
    else:  # nothing to read: start after what is there now
        start = uidnext - 1 if uidnext else max(client.search(["ALL"]), default=0)
    _reset(app, key, uidvalidity, start)
    return uids


def _day(moment: datetime) -> date:
    """IMAP's SINCE is a date in the server's zone: a day earlier covers any zone."""
    return (moment - timedelta(days=1)).date()


def _reset(app: Nurture, key: str, uidvalidity: int, last_uid: int) -> None:
    now = app.now()
    with app.db.transaction() as session:
        done = session.execute(update(InboxCheckpoint).where(InboxCheckpoint.mailbox == key)
                               .values(uidvalidity=uidvalidity, last_uid=last_uid,
                                       polled_at=now))
        if done.rowcount:  # type: ignore[attr-defined]
            return
        try:
            with session.begin_nested():
                session.add(InboxCheckpoint(mailbox=key, uidvalidity=uidvalidity,
                                            last_uid=last_uid, polled_at=now))
        except IntegrityError:  # another poll created it meanwhile: it has it in hand
            pass


def _advance(app: Nurture, key: str, uidvalidity: int, uid: int) -> None:
    """Move the checkpoint forward, never back (two polls at once cannot undo each other)."""
    with app.db.transaction() as session:
        session.execute(update(InboxCheckpoint).where(
            InboxCheckpoint.mailbox == key, InboxCheckpoint.uidvalidity == uidvalidity,
            InboxCheckpoint.last_uid < uid).values(last_uid=uid))


def _internaldate(data: dict[bytes, Any]) -> datetime | None:
    value = data.get(b"INTERNALDATE")
    return value if isinstance(value, datetime) and value.tzinfo is not None else None
