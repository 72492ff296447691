"""Unit costs of the send path: ``python -m bench.unitcost [--db postgresql|sqlite] [--json]``.

On a shared machine, timing a whole send job with and without a change is noisy (the "what
if" runs of ``bench.breakdown --whatif`` move by ±20% between rounds). Here each suspect is
timed on its own, many times, keeping the *fastest* run (noise only ever adds time), and is
counted during a real send job. Cost per email = unit cost × occurrences per email.

What it measures:

- how often each suspect happens per email in a real ``send_touches`` batch (counted);
- ``ssl.create_default_context()`` (``SmtpTransport._connect`` makes one per SMTP connection,
  TLS or not);
- one ``Nurture.campaigns`` access (it stats every campaign and template file each time);
- loading touch → enrollment → contact the way the send path does (``session.get_one(Touch,
  populate_existing=True)`` in a fresh transaction), as is and without the eager
  ``Contact.tags`` (``lazy="selectin"``), which the send path never reads;
- one database round trip (``SELECT 1``) and one empty commit;
- the pure-CPU floor of one email: ``Renderer.render``, ``build_message`` and serializing the
  message (what ``smtplib.send_message`` does), replaying the arguments seen during the job.
"""

from __future__ import annotations

import argparse
import contextlib
import email.policy
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from .common import CAMPAIGN_ID, open_app, pg_schema, settings_values, workdir, write_campaigns
from .data import load_due
from .profile import Collect
from .sinkclient import Sink


def fastest(fn: Any, repeat: int) -> float:
    """Milliseconds of the fastest of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql")
    parser.add_argument("-n", type=int, default=100, help="emails in the counted send job")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ssl

    from sqlalchemy import event, text
    from sqlalchemy.orm import defaultload

    from nurture import app as app_mod
    from nurture import delivery, jobs
    from nurture.engine import tick
    from nurture.models import Contact, Enrollment, Touch
    from nurture.render import Renderer

    counts: Counter[str] = Counter()
    seen: dict[str, tuple[Any, ...]] = {}

    def counting(name: str, fn: Any, keep: bool = False) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            counts[name] += 1
            if keep:
                seen[name] = (a, k)
            return fn(*a, **k)
        return wrapper

    with Sink() as sink, workdir("nurture-unit-") as tmp:
        write_campaigns(tmp / "campaigns")
        db = pg_schema() if args.db == "postgresql" else contextlib.nullcontext(
            f"sqlite:///{tmp / 'nurture.db'}")
        with db as url:
            app = open_app(settings_values(tmp, url, smtp_url=sink.url, worker_batch_size=50))
            app.sync_campaigns()
            load_due(app.db.engine, args.n + 1, datetime.now(UTC), CAMPAIGN_ID,
                     app.campaigns[CAMPAIGN_ID].steps[0].id)
            jobs.bind(app)
            collect = Collect()
            tick(app, collect)
            ids = [i for b in collect.jobs for i in b]
            jobs.send_touches(ids[:1])  # warm

            # 1. Count what happens during real send jobs of 50.
            real_ctx = delivery.ssl.create_default_context
            delivery.ssl.create_default_context = counting("ssl context", real_ctx)
            prop = app_mod.Nurture.campaigns
            app_mod.Nurture.campaigns = property(counting("Nurture.campaigns", prop.fget))
            render_real = Renderer.render
            Renderer.render = counting("render", render_real, keep=True)
            modules = [m for m in ("nurture.sending", "nurture.compose")]
            import importlib

            patched = []
            for name in modules:
                with contextlib.suppress(ImportError):
                    mod = importlib.import_module(name)
                    if hasattr(mod, "build_message"):
                        patched.append((mod, mod.build_message))
                        mod.build_message = counting("build_message", mod.build_message,
                                                     keep=True)

            @event.listens_for(app.db.engine, "before_cursor_execute")
            def _count(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
                counts["SQL statements"] += 1
                if "contact_tags" in statement:
                    counts["SQL contact_tags SELECT"] += 1

            precompiled = getattr(importlib.import_module("nurture.db"), "Precompiled", None)
            precompiled_rows = precompiled.rows if precompiled is not None else None
            if precompiled is not None:
                precompiled.rows = counting("SQL statements", precompiled_rows)

            @event.listens_for(app.db.engine, "commit")
            def _commit(conn):  # noqa: ANN001
                counts["SQL commits"] += 1

            rest = ids[1:]
            for start in range(0, len(rest), 50):
                jobs.send_touches(rest[start:start + 50])
            event.remove(app.db.engine, "before_cursor_execute", _count)
            event.remove(app.db.engine, "commit", _commit)
            if precompiled is not None:
                precompiled.rows = precompiled_rows
            delivery.ssl.create_default_context = real_ctx
            app_mod.Nurture.campaigns = prop
            Renderer.render = render_real
            for mod, fn in patched:
                mod.build_message = fn
            emails = len(rest)
            per_email = {k: v / emails for k, v in counts.items()}

            # 2. Unit costs, fastest of many.
            unit: dict[str, float] = {}
            unit["ssl.create_default_context()"] = fastest(ssl.create_default_context, 30)
            app.campaigns  # noqa: B018  (cached)
            unit["Nurture.campaigns access"] = fastest(lambda: app.campaigns, 300)
            touch_id = rest[0]

            def load(options: list[Any]) -> None:
                with app.db.transaction() as session:
                    session.get_one(Touch, touch_id, populate_existing=True, options=options)

            no_tags = [defaultload(Touch.enrollment).defaultload(Enrollment.contact)
                       .lazyload(Contact.tags)]
            unit["load touch→enrollment→contact (as is, tags eager)"] = fastest(
                lambda: load([]), 200)
            unit["load touch→enrollment→contact (tags not loaded)"] = fastest(
                lambda: load(no_tags), 200)

            def round_trip() -> None:
                with app.db.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))

            with app.db.engine.connect() as conn:
                unit["one SQL round trip (SELECT 1)"] = fastest(
                    lambda: conn.execute(text("SELECT 1")), 300)

            def empty_commit() -> None:
                with app.db.transaction() as session:
                    session.execute(text("SELECT 1"))

            unit["transaction with one statement (BEGIN…COMMIT)"] = fastest(empty_commit, 200)
            if "render" in seen:
                a, k = seen["render"]
                unit["Renderer.render (one email)"] = fastest(lambda: render_real(*a, **k), 100)
            if "build_message" in seen:
                a, k = seen["build_message"]
                fn = patched[-1][1] if patched else None
                if fn is not None:
                    unit["build_message (one email)"] = fastest(lambda: fn(*a, **k), 100)
                    message = fn(*a, **k)
                    unit["serialize the message (as send_message does)"] = fastest(
                        lambda: message.as_bytes(policy=email.policy.SMTP), 100)
            app.close()

    result = {"db": args.db, "emails": emails, "per_email": per_email, "unit_ms": unit}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.db}: counted over {emails} emails in jobs of 50")
    for k, v in per_email.items():
        print(f"  {k:50} {v:8.2f} per email")
    for k, v in unit.items():
        print(f"  {k:50} {v:8.3f} ms (fastest)")


if __name__ == "__main__":
    main()
