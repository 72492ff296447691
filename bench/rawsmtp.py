"""Raw smtplib baselines: ``python -m bench.rawsmtp CONFIG_JSON``.

Pre-renders ``distinct`` real nurture emails (nurture's own send path builds them, into a
transport that keeps them), then sends ``n`` of them, cycling, over ONE reused SMTP connection:

- ``send_message``: ``smtplib.SMTP.send_message(EmailMessage)`` (serializes each time);
- ``sendmail_bytes``: ``smtplib.SMTP.sendmail(from, [to], bytes)`` with bytes serialized beforehand;
- ``nurture_transport``: nurture's own ``SmtpTransport.send`` on one connection (its recipient
  parsing and bookkeeping on top of ``send_message``), for reference.
"""

from __future__ import annotations

import email.policy
import json
import resource
import smtplib
import sys
import time
from datetime import UTC, datetime


def render_messages(values: dict, distinct: int) -> list:
    """Real nurture emails: ``distinct`` touches due in a scratch SQLite project, ticked and
    delivered through nurture's own send path into a transport that keeps the messages."""
    import tempfile
    from pathlib import Path

    from nurture.engine import tick
    from nurture.outbound.sending import deliver
    from nurture.outbound.transport import Transport

    from .common import CAMPAIGN_ID, open_app, write_campaigns
    from .data import load_due
    from .profile import Collect

    class Keep(Transport):
        name = "keep"

        def __init__(self) -> None:
            self.messages: list = []

        def send(self, message) -> None:  # noqa: ANN001
            self.messages.append(message)

    with tempfile.TemporaryDirectory(prefix="nurture-raw-") as tmp:
        folder = Path(tmp)
        write_campaigns(folder / "campaigns")
        app = open_app(dict(values, project_dir=str(folder),
                            paths_campaigns=str(folder / "campaigns"),
                            database_url=f"sqlite:///{folder / 'raw.db'}",
                            worker_batch_size=distinct))
        app.sync_campaigns()
        load_due(app.db.engine, distinct, datetime.now(UTC), CAMPAIGN_ID,
                 app.campaigns[CAMPAIGN_ID].steps[0].id)
        collect = Collect()
        tick(app, collect)
        keep = Keep()
        deliver(app, [i for batch in collect.jobs for i in batch], keep)
        app.close()
    return keep.messages


def main() -> None:
    config = json.loads(sys.argv[1])
    n, port, mode = config["n"], config["port"], config["mode"]
    messages = render_messages(config["settings"], config.get("distinct", 200))
    size = sum(len(m.as_bytes(policy=email.policy.SMTP)) for m in messages) / len(messages)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if mode == "sendmail_bytes":
        prepared = [(m["From"].addresses[0].addr_spec, [m["To"].addresses[0].addr_spec],
                     m.as_bytes(policy=email.policy.SMTP)) for m in messages]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        smtp = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            sender, rcpts, data = prepared[i % len(prepared)]
            smtp.sendmail(sender, rcpts, data)
        smtp.quit()
    elif mode == "send_message":
        started = time.monotonic()
        smtp = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            smtp.send_message(messages[i % len(messages)])
        smtp.quit()
    elif mode == "nurture_transport":
        from nurture.outbound.transport import SmtpTransport

        started = time.monotonic()
        with SmtpTransport(f"smtp://127.0.0.1:{port}") as transport:
            for i in range(n):
                transport.send(messages[i % len(messages)])
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.monotonic() - started
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    print(json.dumps({"mode": mode, "n": n, "seconds": seconds, "rate": n / seconds,
                      "cpu": cpu, "avg_bytes": size, "started": started}))


if __name__ == "__main__":
    main()
