"""``python -m bench.startup``: how long nurture commands take to start, as a user runs them.

Each command runs as a new process (``python -m nurture ...``), ``--runs`` times; the table shows
the median and the fastest wall time. Help must answer under 0.3 s: nothing heavy (SQLAlchemy,
Alembic, redis, RQ, Flask, the app) is imported before a command needs it.

    python -m bench.startup [--runs 7] [--source DIR] [--status N]

``--source DIR`` times another checkout's ``nurture`` package (e.g. an older commit unpacked
with ``git archive``), for a before/after comparison on the same machine. ``--status N`` also
times ``nurture status`` on a project with N contacts, each with ten touches (N=100000: one
million touches; building it takes a few minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP = [["--help"], ["status", "--help"], ["worker", "--help"], ["enroll", "--help"],
        ["contacts", "import", "--help"], ["serve", "--help"], ["init", "--help"]]
BUDGET = 0.3  # seconds, for help


def timed(args: list[str], cwd: Path, env: dict[str, str], runs: int,
          command: tuple[str, ...] = ("-m", "nurture")) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env,
                              capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"nurture {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return times


def row(label: str, times: list[float], budget: float | None = None) -> str:
    median = statistics.median(times)
    verdict = "" if budget is None else (" ok" if median < budget else " OVER")
    return f"| `nurture {label}` | {median:.3f} | {min(times):.3f} |{verdict}"


def seed_status_project(folder: Path, contacts: int, env: dict[str, str]) -> None:
    """A project whose database holds ``contacts`` contacts, one enrollment and ten touches
    each, inserted in bulk through the models (the engine would take hours for a million)."""
    code = f"""
from datetime import UTC, datetime, timedelta
from sqlalchemy import insert
from nurture.db import open_database
from nurture.models import CampaignRow, Contact, Enrollment, Touch
db = open_database("sqlite:///{folder}/nurture.db")
now = datetime(2026, 12, 7, 15, tzinfo=UTC)
n, chunk = {contacts}, 10_000
states = ["sent"] * 8 + ["scheduled", "cancelled"]
with db.transaction() as s:
    s.add(CampaignRow(id="referral-outreach", name="x", content_hash="x", updated_at=now))
for lo in range(1, n + 1, chunk):
    ids = range(lo, min(lo + chunk, n + 1))
    with db.transaction() as s:
        s.execute(insert(Contact), [dict(id=i, email=f"c{{i}}@x.example", first_name="A",
                                         created_at=now, updated_at=now) for i in ids])
        s.execute(insert(Enrollment), [dict(id=i, contact_id=i, campaign_id="referral-outreach",
                                            enrolled_at=now) for i in ids])
        s.execute(insert(Touch), [dict(enrollment_id=i, step_id=f"s{{k}}", state=states[k],
                                       due_at=now + timedelta(days=k), created_at=now,
                                       sent_at=now - timedelta(days=10 - k) if k < 8 else None)
                                  for i in ids for k in range(10)])
"""
    subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--source", type=Path, help="time this checkout's nurture instead")
    parser.add_argument("--status", type=int, default=0, metavar="N",
                        help="also time `nurture status` with N contacts and 10 N touches")
    opts = parser.parse_args()
    env = {**os.environ}
    if opts.source:
        env["PYTHONPATH"] = str(opts.source.resolve())
    folder = Path(tempfile.mkdtemp(prefix="nr-bench-")) / "p"
    try:
        subprocess.run([sys.executable, "-m", "nurture", "init", str(folder)], env=env,
                       check=True, capture_output=True)
        print(f"nurture from {opts.source or 'this checkout'}; {opts.runs} runs each, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n")
        print("| command | median s | fastest s | under 0.3 s |\n|---|---|---|---|")
        floor = timed([], folder, env, opts.runs, ("-c", "pass"))
        print(f"| `python -c pass` (the floor: Python itself) | {statistics.median(floor):.3f} "
              f"| {min(floor):.3f} |", flush=True)
        for args in HELP:
            print(row(" ".join(args), timed(args, folder, env, opts.runs), BUDGET), flush=True)
        print(row("validate", timed(["validate"], folder, env, opts.runs)), flush=True)
        timed(["status"], folder, env, 1)  # creates the database
        print(row("status (empty)", timed(["status"], folder, env, opts.runs)), flush=True)
        if opts.status:
            seed_status_project(folder, opts.status, env)
            label = f"status ({opts.status:,} contacts, {10 * opts.status:,} touches)"
            print(row(label, timed(["status"], folder, env, opts.runs), 1.0), flush=True)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
