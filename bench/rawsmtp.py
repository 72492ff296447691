"""The SMTP baselines, one process: ``python -m bench.rawsmtp CONFIG_JSON``.

It first makes ``distinct`` real nurture emails (due touches in a scratch SQLite project, ticked
and delivered by nurture's own send path into a transport that keeps them), then sends ``n`` of
them, cycling, over ONE reused connection, and times only that:

- ``sendmail_bytes``: ``smtplib.SMTP.sendmail(from, [to], bytes)``, the bytes being exactly what
  nurture puts on the wire, serialized before the clock starts. The honest limit: nothing left
  to do but the SMTP conversation.
- ``send_message``: ``smtplib.SMTP.send_message(message)``, where the email package serializes
  each message again (several ms of CPU each): a reference, not the baseline.
- ``transport``: nurture's ``SmtpTransport.send`` (stage, then commit: the same conversation
  with the closing ``.`` as a step of its own).
"""

from __future__ import annotations

import json
import smtplib
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any


def nurture_emails(values: dict[str, Any], distinct: int) -> list[EmailMessage]:
    from nurture.outbound.sending import deliver
    from nurture.outbound.transport import Staged, Transport
    from nurture.ticking import tick

    from .common import CAMPAIGN_ID, Collect, open_app, workdir, write_campaigns
    from .data import load_due

    class Keep(Transport, Staged):  # staging is keeping; nothing to commit or abort
        name = "keep"

        def __init__(self) -> None:
            self.messages: list[EmailMessage] = []

        def stage(self, message: EmailMessage) -> Staged:
            self.messages.append(message)
            return self

        def commit(self) -> None:
            pass

        def abort(self) -> None:
            pass

    with workdir("bench-raw-") as folder:
        app = open_app(dict(values, project_dir=str(folder),
                            paths_campaigns=str(write_campaigns(folder / "campaigns")),
                            database_url=f"sqlite:///{folder / 'raw.db'}",
                            worker_batch_size=distinct))
        app.sync_campaigns()
        load_due(app.db.engine, distinct, datetime.now(UTC), CAMPAIGN_ID,
                 app.campaigns[CAMPAIGN_ID].steps[0].id)
        collect = Collect()
        tick(app, collect)
        keep = Keep()
        deliver(app, [i for batch in collect.batches for i in batch], keep)
        app.close()
    return keep.messages


def main() -> None:
    from nurture.outbound.smtp import SmtpTransport
    from nurture.outbound.transport import envelope

    config = json.loads(sys.argv[1])
    n, port, mode = config["n"], config["port"], config["mode"]
    messages = nurture_emails(config["settings"], config.get("distinct", 200))
    prepared = [envelope(m) for m in messages]  # (from, [to], the wire bytes)
    cpu, started = time.process_time(), time.monotonic()
    if mode == "sendmail_bytes":
        smtp = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            smtp.sendmail(*prepared[i % len(prepared)])
        smtp.quit()
    elif mode == "send_message":
        smtp = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            smtp.send_message(messages[i % len(messages)])
        smtp.quit()
    elif mode == "transport":
        with SmtpTransport(f"smtp://127.0.0.1:{port}") as transport:
            for i in range(n):
                transport.send(messages[i % len(messages)])
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu,
                      "avg_bytes": sum(len(p[2]) for p in prepared) / len(prepared)}))


if __name__ == "__main__":
    main()
