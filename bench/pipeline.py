"""Pipeline throughput: due touches → tick → RQ send jobs → SMTP acceptance, beside the raw
smtplib limit, in one run.

Each nurture run gets a fresh database (a PostgreSQL schema, or a SQLite file) holding ``n``
contacts, each enrolled in a one-step campaign with no send window and a touch already due.
``workers`` worker processes (:mod:`bench.worker`) wait idle on the queue. The clock starts when
``nurture.worker.jobs.tick_job`` is enqueued, as the worker's cron scheduler does; a worker
ticks, the send jobs it enqueues are worked, and the clock stops when the sink has accepted the
``n``-th message (or the time box is up: the rate is then taken over what was accepted). Then
the database must agree with the sink.

The limit is raw smtplib sending the same emails' wire bytes, pre-serialized, over one reused
connection to the same sink (:mod:`bench.rawsmtp`), measured at the start and at the end of the
run: the faster of the two counts. A short raw run just before each nurture run shows how the
shared machine's speed drifted meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

from .common import (
    CAMPAIGN_ID,
    PYTHON,
    REPO,
    database,
    flush_redis,
    machine_cpu,
    open_app,
    run_child,
    settings_values,
    workdir,
    write_campaigns,
)
from .data import load_due
from .report import table
from .sink import Sink

# (database, workers) → the least share of the raw limit asked for (issue 12).
FLOORS = {("sqlite", 2): 0.50, ("postgresql", 2): 0.35}
CONFIGS = (("sqlite", 2), ("postgresql", 2), ("sqlite", 1), ("postgresql", 1))


@dataclass
class Run:
    label: str
    kind: str  # raw, nurture, noop
    database: str = ""
    workers: int = 1
    n: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


def measure(n: int, box: float, redis_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Every run, in an order that puts the raw limit on both sides of the nurture runs."""
    runs: list[Run] = []
    pairs: list[tuple[int, int | None]] = []  # (nurture run, raw probe just before it)

    def record(run: Run) -> int:
        runs.append(run)
        log(f"  {run.label}: {run.n:,} in {run.seconds:.1f}s = {run.rate:.1f}/s")
        return len(runs) - 1

    with Sink() as sink:
        first = record(raw(sink, "sendmail_bytes", n, redis_url))
        record(raw(sink, "send_message", min(n, 3000), redis_url))
        record(raw(sink, "transport", min(n, 1000), redis_url))
        for workers in (1, 2):
            record(noop(workers, min(n, 1000), redis_url))
        for db, workers in CONFIGS:
            probe = record(raw(sink, "sendmail_bytes", min(n, 2000), redis_url, probe=True))
            try:
                pairs.append((record(nurture(db, workers, n, sink, box, redis_url)), probe))
            except Exception as exc:  # noqa: BLE001 - the other runs still count
                log(f"  FAILED {db}, {workers} workers: {exc}")
                runs[probe].extra["failed"] = f"{db}, {workers} workers: {exc}"[:500]
        last = record(raw(sink, "sendmail_bytes", n, redis_url))
    return {"n": n, "box": box, "runs": [asdict(r) for r in runs], "limit": [first, last],
            "pairs": pairs}


# The runs ---------------------------------------------------------------------------------
RAW_LABELS = {
    "sendmail_bytes": "raw smtplib `sendmail`, pre-serialized bytes (the limit)",
    "send_message": "raw smtplib `send_message` (serializes each; not the baseline)",
    "transport": "nurture `SmtpTransport.send` alone (stage + commit)",
}


def raw(sink: Sink, mode: str, n: int, redis_url: str, *, probe: bool = False) -> Run:
    with workdir("bench-raw-") as folder:
        before = sink.reset()
        result = run_child("bench.rawsmtp", {"n": n, "port": sink.port, "mode": mode,
                                             "settings": settings_values(folder, "", redis_url)})
        stats = sink.stats()
    if stats["count"] != n:
        raise RuntimeError(f"smtplib {mode}: the sink got {stats['count']} of {n}")
    label = "probe: raw `sendmail` bytes" if probe else RAW_LABELS[mode]
    return Run(label, "raw", n=n, seconds=result["seconds"],
               extra={"client_cpu": result["cpu"], "sink_cpu": stats["cpu"] - before["cpu"],
                      "avg_bytes": result["avg_bytes"], "probe": probe})


def start_workers(count: int, config: dict[str, Any]) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([PYTHON, "-m", "bench.worker", json.dumps(config)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    for p in procs:
        assert p.stdout is not None
        if not p.stdout.readline():  # {"ready": ...}
            stop_workers(procs)
            raise RuntimeError(f"a worker failed to start ({p.wait()})")
    return procs


def stop_workers(procs: list[subprocess.Popen[str]], *, wait_only: bool = False,
                 timeout: float = 300) -> list[dict[str, Any]]:
    """SIGTERM (a warm shutdown: the job at hand finishes) unless ``wait_only``; the results."""
    results = []
    for p in procs:
        if not wait_only and p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if p.returncode == 0 and lines:
            results.append(json.loads(lines[-1]))
    if len(results) != len(procs):
        raise RuntimeError(f"{len(procs) - len(results)} worker(s) failed")
    return results


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on the machine (ours and anyone else's)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if (proc.info["name"] or "").startswith("postgres"):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def nurture(db: str, workers: int, n: int, sink: Sink, box: float, redis_url: str) -> Run:
    """``n`` due touches; measured until the ``n``-th is accepted or ``box`` seconds pass.

    Then the workers stop (each finishes its job) and the database must agree with the sink:
    every touch ``sent``, still ``queued`` or put back ``scheduled``, as many ``sent`` as the
    sink received, no failed job.
    """
    import redis
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from sqlalchemy import func, select

    from nurture.models import Touch

    label = f"nurture, {'SQLite' if db == 'sqlite' else 'PostgreSQL'}, {workers} " \
            f"worker{'s' * (workers > 1)}"
    with workdir("bench-pipeline-") as folder, database(db, folder) as url:
        write_campaigns(folder / "campaigns")
        values = settings_values(folder, url, redis_url, smtp_url=sink.url)
        app = open_app(values)
        app.sync_campaigns()
        load_due(app.db.engine, n, datetime.now(UTC), CAMPAIGN_ID,
                 app.campaigns[CAMPAIGN_ID].steps[0].id)
        flush_redis(redis_url)
        conn = redis.Redis.from_url(redis_url)
        queue = Queue(values["worker_queue"], connection=conn)
        procs = start_workers(workers, {"settings": values, "redis_url": redis_url,
                                        "queue": values["worker_queue"], "mode": "listen"})
        try:
            sink0, pg0, machine0 = sink.reset(), _postgres_cpu(), machine_cpu()
            started = time.monotonic()
            tick = queue.enqueue("nurture.worker.jobs.tick_job", job_timeout=600)
            stats = sink.wait_for(n, box, procs)
            elapsed = time.monotonic() - started
            pg1, machine1 = _postgres_cpu(), machine_cpu()
        finally:
            results = stop_workers(procs)
        final = sink.stats()
        with app.db.transaction() as session:
            states = dict(session.execute(select(Touch.state, func.count())
                                          .group_by(Touch.state)).all())
        failed = FailedJobRegistry(queue=queue).count
        tick.refresh()
        tick_seconds = ((tick.ended_at - tick.started_at).total_seconds()
                        if tick.ended_at and tick.started_at else None)
        app.close()
        conn.close()
        flush_redis(redis_url)
    sent = states.get("sent", 0)
    if set(states) - {"sent", "queued", "scheduled"} or failed or sent != final["count"]:
        raise RuntimeError(f"{label}: touches {states}, {failed} failed jobs, "
                           f"the sink received {final['count']}")
    count = stats["count"]
    worker_cpu = sum(r["cpu"] for r in results)
    busy = (machine1[0] - machine0[0]) / os.sysconf("SC_CLK_TCK")
    return Run(label, "nurture", db, workers, count,
               (stats["last"] - started) if count else elapsed, extra={
                   "due": n, "complete": count >= n, "tick_seconds": tick_seconds,
                   "sessions": stats["sessions"] - sink0["sessions"],
                   "worker_cpu": worker_cpu, "sink_cpu": stats["cpu"] - sink0["cpu"],
                   "postgres_cpu": pg1 - pg0,
                   "machine_busy": busy / (elapsed * (os.cpu_count() or 1)),
                   "load": os.getloadavg()[0]})


def noop(workers: int, n: int, redis_url: str) -> Run:
    """RQ's floor for one job per email: ``n`` no-op jobs, enqueued beforehand, worked by
    ``workers`` SimpleWorker processes in burst mode."""
    import redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    flush_redis(redis_url)
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("bench-noop", connection=conn)
    with conn.pipeline() as pipe:
        queue.enqueue_many([Queue.prepare_data("bench.worker.noop", (i,)) for i in range(n)],
                           pipeline=pipe)
        pipe.execute()
    procs = start_workers(workers, {"redis_url": redis_url, "queue": "bench-noop",
                                    "mode": "burst"})
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = stop_workers(procs, wait_only=True)
    done = FinishedJobRegistry(queue=queue).count
    conn.close()
    flush_redis(redis_url)
    if done != n:
        raise RuntimeError(f"RQ no-op: {done} of {n} jobs finished")
    seconds = max(r["stopped"] for r in results) - min(r["started"] for r in results)
    return Run(f"RQ no-op jobs, {workers} SimpleWorker process{'es' * (workers > 1)}", "noop",
               workers=workers, n=n, seconds=seconds,
               extra={"client_cpu": sum(r["cpu"] for r in results)})


# RESULTS.md -------------------------------------------------------------------------------
def verdicts(data: dict[str, Any]) -> tuple[float, list[str], bool]:
    """The raw limit, one line per floor, and whether every floor is met."""
    runs = [Run(**r) for r in data["runs"]]
    limit = max(runs[i].rate for i in data["limit"])
    lines, ok = [], True
    for (db, workers), floor in FLOORS.items():
        mine = [runs[i] for i, _ in data["pairs"]
                if runs[i].database == db and runs[i].workers == workers]
        name = f"{'SQLite' if db == 'sqlite' else 'PostgreSQL'}, {workers} workers"
        if not mine:
            lines.append(f"{name}: ≥ {floor:.0%} of the limit → **not measured** (the run failed)")
            ok = False
            continue
        rate = mine[0].rate
        met = rate >= floor * limit
        ok = ok and met
        lines.append(f"{name}: {rate:.0f} emails/s = {rate / limit:.0%} of {limit:.0f}/s, "
                     f"≥ {floor:.0%} asked (≥ {floor * limit:.0f}/s) → "
                     f"**{'met' if met else 'NOT met'}**")
    return limit, lines, ok


def section(data: dict[str, Any], header: str) -> str:
    runs = [Run(**r) for r in data["runs"]]
    limit, lines, _ = verdicts(data)
    nurture_rows = []
    for i, probe in data["pairs"]:
        r, e = runs[i], runs[i].extra
        per = 1000 / max(1, r.n)
        floor = FLOORS.get((r.database, r.workers))
        nurture_rows.append([
            r.label, f"{r.n:,} / {e['due']:,}", r.seconds, r.rate, f"{r.rate / limit:.0%}",
            f"≥ {floor:.0%}" if floor else "", f"{r.rate / runs[probe].rate:.0%}",
            e["worker_cpu"] * per, e["sink_cpu"] * per,
            e["postgres_cpu"] * per if r.database == "postgresql" else "",
            e["tick_seconds"] or "", f"{e['machine_busy']:.0%}", f"{e['load']:.1f}"])
    other_rows = [[r.label, r.n, r.seconds, r.rate,
                   f"{r.rate / limit:.0%}" if r.kind == "raw" else "",
                   1000 * r.extra["client_cpu"] / r.n,
                   1000 * r.extra["sink_cpu"] / r.n if "sink_cpu" in r.extra else ""]
                  for r in runs if r.kind != "nurture"]
    size = runs[data["limit"][0]].extra["avg_bytes"] / 1024
    return "\n".join([
        "## Pipeline throughput",
        "",
        header,
        "",
        f"{data['n']:,} touches due (one-step campaign, no send window, `appreciation.mjml`, "
        f"~{size:.1f} KB emails) go from the tick to acceptance by an aiosmtpd sink in its own "
        "process. The limit is raw smtplib `sendmail` of the same emails' pre-serialized wire "
        "bytes over one reused connection to that sink: the faster of the runs at the start "
        f"and the end, **{limit:.0f} emails/s**.",
        "",
        "**Verdicts** (issue 12):",
        "",
        *[f"- {line}" for line in lines],
        "",
        table(["run", "sent / due", "s", "emails/s", "of the limit", "floor",
               "of the raw probe just before", "worker CPU ms/email", "sink CPU ms/email",
               "PostgreSQL CPU ms/email", "tick s", "machine busy", "load"], nurture_rows),
        "",
        table(["baseline", "messages / jobs", "s", "per s", "of the limit",
               "client / worker CPU ms each", "sink CPU ms each"], other_rows),
        "",
        "Workers are `bench.worker` processes: what `nurture worker` runs (a `SimpleWorker`, "
        "the jobs bound to the app, `Database.analyze()` at start; default batch size, lease "
        "and retries), without the cron scheduler, idle on the queue with the MJML compiled. "
        f"A nurture run is cut short after {data['box']:.0f} s; *sent / due* then says how far "
        "it got. After each run every touch must be `sent` (or still `queued`), as many as the "
        "sink received. *Worker CPU* is both workers' together; *PostgreSQL CPU* counts every "
        "postgres process on the machine, other people's too; *machine busy* is the share of "
        "both cores in use during the run, by anyone. *Of the raw probe*: against 2,000 raw "
        "messages sent just before that run, to show the drift of this shared machine. The "
        "RQ no-op jobs (one job per message, nothing to do) are for reference only.",
    ])
