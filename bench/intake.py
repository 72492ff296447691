"""``python -m bench.intake [--rows 50000] [--db sqlite|postgresql|both]``: intake at list size.

Times ``import_contacts`` of a generated CSV (first import, then the same file again) and
``enroll`` of every contact in the shipped ``referral-outreach`` campaign (a weekday send window
in each contact's zone, eight zones), on a fresh database. Each step runs in a process of its
own, so its peak memory (``ru_maxrss``) is that step's alone; ``seconds`` is the library call's
wall time and ``CPU s`` this process's CPU time in it (the database server's is not counted: on a
shared machine the CPU time is the steadier figure); ``base MB`` is what the process held before
the call (Python, SQLAlchemy, the opened project).
Results are printed as a Markdown table; see bench/INTAKE.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import database

REPO = Path(__file__).parent.parent.absolute()
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "Europe/London", "Asia/Kolkata", "Australia/Sydney", ""]
STEPS = ("import", "re-import", "enroll")


def write_csv(path: Path, rows: int) -> None:
    """``rows`` contacts like a real export: names, organizations, two tags, interests, zones,
    and an alias on one row in a hundred."""
    with path.open("w") as out:
        out.write("email,first_name,last_name,organization,role,tags,interests,timezone,"
                  "aliases\n")
        for i in range(rows):
            alias = f"office{i}@alias{i % 89}.example" if i % 100 == 0 else ""
            out.write(f"contact{i}@clinic{i % 997}.example,Dana{i % 50},Lee,"
                      f"Clinic {i % 300},physician,prospect;t{i % 7},knee;running,"
                      f"{ZONES[i % len(ZONES)]},{alias}\n")


def _settings(project: Path, database_url: str) -> Any:
    from nurture.settings import Settings

    return Settings(project_dir=project, database_url=database_url,
                    paths_campaigns=str(REPO / "campaigns"),
                    paths_templates=str(REPO / "templates"), sender_name="Alex Rivera",
                    sender_email="alex@riverapt.example", practice_name="Rivera PT",
                    practice_address="120 Main Street, Springfield, IL 62701",
                    practice_timezone="America/New_York", secret_key="bench")


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One step in this process: the library call's seconds and the process's peak memory."""
    from nurture.app import Nurture
    from nurture.clock import SystemClock
    from nurture.engine import enroll
    from nurture.intake.contacts import import_contacts

    app = Nurture.open(_settings(Path(config["project"]), config["url"]), SystemClock())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    if config["step"] == "enroll":
        result = enroll(app, "referral-outreach", tags=["prospect"])
        outcome = f"{len(result.enrolled)} enrolled, {len(result.already)} already"
    else:
        done = import_contacts(app.db, Path(config["csv"]), app.clock)
        outcome = f"{done.created} created, {done.updated} updated, {done.unchanged} unchanged"
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    app.close()
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak / 1024),
            "base_mb": round(base / 1024), "outcome": outcome}


def run(kind: str, rows: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp, \
            database(kind, Path(tmp)) as url:
        csv = Path(tmp) / "contacts.csv"
        write_csv(csv, rows)
        for step in STEPS:
            config = {"step": step, "url": url, "csv": str(csv), "project": tmp}
            proc = subprocess.run([sys.executable, "-m", "bench.intake", "--child",
                                   json.dumps(config)], cwd=REPO, capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{step} on {kind} failed:\n{proc.stderr[-3000:]}")
            result = {"db": kind, "rows": rows, "step": step,
                      **json.loads(proc.stdout.splitlines()[-1])}
            print(f"  {kind} {rows:,} {step}: {result['seconds']} s ({result['cpu_s']} s CPU), "
                  f"{result['peak_mb']} MB "
                  f"({result['outcome']})", file=sys.stderr, flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__)
    parser.add_argument("--rows", type=int, action="append",
                        help="contacts in the file (repeatable; default 50,000)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = [r for rows in args.rows or [50_000] for kind in kinds for r in run(kind, rows)]
    print("| rows | database | step | seconds | CPU s | peak MB | base MB | outcome |\n"
          "|---:|---|---|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['db']} | {r['step']} | {r['seconds']} | {r['cpu_s']} | "
              f"{r['peak_mb']} | "
              f"{r['base_mb']} | {r['outcome']} |")


if __name__ == "__main__":
    main()
