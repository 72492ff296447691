"""Pipeline throughput: due touches → tick → RQ send jobs → SMTP acceptance, and baselines.

Each nurture run gets a fresh database (a PostgreSQL schema, or a SQLite file) holding ``n``
contacts, each enrolled in a one-step campaign with no send window and a touch already due.
``workers`` worker processes (``bench.worker``: a SimpleWorker bound to the app, as
``nurture worker`` runs it) are started and left idle on the queue. The clock starts when
``nurture.worker.jobs.tick_job`` is enqueued, exactly what the worker's cron scheduler does; a
worker
ticks, the send jobs it enqueues are worked, and the clock stops when the sink has accepted the
``n``-th message. Then the database is checked: every touch must be ``sent``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

from .common import (
    CAMPAIGN_ID,
    PYTHON,
    REDIS_URL,
    REPO,
    flush_redis,
    machine_cpu,
    open_app,
    pg_schema,
    redis_conn,
    run_child,
    settings_values,
    workdir,
    write_campaigns,
)
from .data import load_due
from .sinkclient import Sink


@dataclass
class Run:
    label: str
    kind: str  # nurture, smtplib, rq-noop
    database: str = ""
    workers: int = 1
    batch: int = 0
    n: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


# CPU of the other processes on the machine (PostgreSQL backends, Redis) -------------------
def _named_cpu(names: tuple[str, ...]) -> float:
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] and proc.info["name"].startswith(names):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def _service_cpu() -> dict[str, float]:
    return {"postgres": _named_cpu(("postgres",)), "redis": _named_cpu(("redis-server",))}


# Worker processes ---------------------------------------------------------------------------
def start_workers(count: int, config: dict[str, Any]) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([PYTHON, "-m", "bench.worker", json.dumps(config)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            p.wait()
            raise RuntimeError(f"worker failed to start ({p.returncode})")
    return procs


def finish_workers(procs: list[subprocess.Popen[str]], *, terminate: bool,
                   timeout: float = 600) -> list[dict[str, Any]]:
    if terminate:
        for p in procs:
            p.send_signal(signal.SIGTERM)
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"worker exited with {p.returncode}: {out[-2000:]}")
        results.append(json.loads(lines[-1]))
    return results


# nurture itself -------------------------------------------------------------------------------
def run_nurture(database: str, workers: int, batch: int, n: int, sink: Sink,
                time_box: float, whatif: tuple[str, ...] = ()) -> Run:
    """``n`` due touches; measured until the ``n``-th is accepted or ``time_box`` seconds pass.

    Either way the workers are then stopped (warm shutdown: the current job finishes) and the
    database must agree with the sink: every touch ``sent`` or still ``queued``, as many
    ``sent`` as the sink received, nothing failed, uncertain or sent twice. Rows the worker
    put back to ``scheduled`` (the mailbox limits said "later") are counted, not failed.
    """
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from sqlalchemy import func, select

    from nurture.models import Touch

    run = Run(f"nurture, {database}, {workers} worker{'s' * (workers > 1)}, batch {batch}"
              + (f", what-if {'+'.join(whatif)}" if whatif else ""),
              "nurture", database, workers, batch, n)
    with workdir("nurture-bench-") as tmp:
        write_campaigns(tmp / "campaigns")
        db = pg_schema() if database == "postgresql" else contextlib.nullcontext(
            f"sqlite:///{tmp / 'nurture.db'}")
        with db as url:
            values = settings_values(tmp, url, smtp_url=sink.url, worker_batch_size=batch)
            app = open_app(values)
            app.sync_campaigns()
            step = app.campaigns[CAMPAIGN_ID].steps[0].id
            load_due(app.db.engine, n, datetime.now(UTC), CAMPAIGN_ID, step)
            flush_redis()
            procs = start_workers(workers, {"settings": values, "redis_url": REDIS_URL,
                                            "queue": values["worker_queue"], "mode": "listen",
                                            "whatif": list(whatif)})
            conn = redis_conn()
            try:
                sink.reset()
                sink0, services0, machine0 = sink.stats(), _service_cpu(), machine_cpu()
                load0 = os.getloadavg()[0]
                started = time.monotonic()
                tick = Queue(values["worker_queue"], connection=conn).enqueue(
                    "nurture.worker.jobs.tick_job", job_timeout=600)
                stats = sink.wait_for(n, timeout=time_box, alive=procs)
                elapsed = time.monotonic() - started
                services1, machine1 = _service_cpu(), machine_cpu()
            finally:
                results = finish_workers(procs, terminate=True)
            final = sink.stats()
            tick.refresh()
            tick_result = tick.return_value(refresh=True) or {}
            with app.db.transaction() as session:
                states = dict(session.execute(select(Touch.state, func.count())
                                              .group_by(Touch.state)).all())
            failed = FailedJobRegistry(queue=Queue(values["worker_queue"],
                                                   connection=conn)).count
            app.close()
            conn.close()
            flush_redis()
    sent = states.get("sent", 0)
    # ``scheduled``: rows the worker put back for later (the mailbox limits said "not now").
    if set(states) - {"sent", "queued", "scheduled"} or failed or sent != final["count"]:
        raise RuntimeError(f"{run.label}: touches {states}, {failed} failed jobs, "
                           f"sink received {final['count']}")
    run.n = stats["count"]
    run.seconds = (stats["last"] - started) if stats["count"] else elapsed
    tick_seconds = ((tick.ended_at - tick.started_at).total_seconds()
                    if tick.ended_at and tick.started_at else None)
    busy = (machine1[0] - machine0[0]) / os.sysconf("SC_CLK_TCK")
    ours = sum(r["cpu"] for r in results) + (stats["cpu"] - sink0["cpu"])
    services = sum(services1.values()) - sum(services0.values())
    run.extra = {
        "due": n,
        "complete": stats["count"] >= n,
        "first_after": (stats["first"] - started) if stats["first"] else None,
        "tick_seconds": tick_seconds,
        "tick_jobs": tick_result.get("jobs"),
        "smtp_sessions": stats["sessions"] - sink0["sessions"],
        "worker_cpu": sum(r["cpu"] for r in results),
        "sink_cpu": stats["cpu"] - sink0["cpu"],
        "postgres_cpu": services1["postgres"] - services0["postgres"],
        "redis_cpu": services1["redis"] - services0["redis"],
        "other_cpu": max(0.0, busy - ours - services),
        "machine_busy": busy / (elapsed * (os.cpu_count() or 1)),
        "loadavg_before": load0,
        "avg_bytes": stats["bytes"] / max(1, stats["count"]),
        "sent_after_stop": final["count"] - stats["count"],
        "rescheduled": states.get("scheduled", 0),
    }
    return run


# Baselines ----------------------------------------------------------------------------------
def run_smtplib(mode: str, n: int, sink: Sink) -> Run:
    with workdir("nurture-bench-") as tmp:
        values = settings_values(tmp, "sqlite://")
        before = sink.reset()  # the sink's CPU time is cumulative: keep the start
        result = run_child("bench.rawsmtp", {"n": n, "port": sink.port, "mode": mode,
                                             "settings": values})
        stats = sink.stats()
        stats["cpu"] -= before["cpu"]
    if stats["count"] != n:
        raise RuntimeError(f"smtplib {mode}: sink got {stats['count']} of {n}")
    label = {"send_message": "raw smtplib send_message, 1 reused connection",
             "sendmail_bytes": "raw smtplib sendmail(pre-serialized bytes), 1 reused connection",
             "nurture_transport": "nurture SmtpTransport.send, 1 reused connection"}[mode]
    return Run(label, "smtplib", n=n, seconds=result["seconds"],
               extra={"client_cpu": result["cpu"], "sink_cpu": stats["cpu"],
                      "avg_bytes": result["avg_bytes"]})


def run_noop(workers: int, n: int, worker_class: str = "simple") -> Run:
    from rq import Queue

    flush_redis()
    conn = redis_conn()
    queue = Queue("bench-noop", connection=conn)
    for start in range(0, n, 1000):
        with conn.pipeline() as pipe:
            queue.enqueue_many([Queue.prepare_data("bench.noop.noop", (i,))
                                for i in range(start, min(n, start + 1000))], pipeline=pipe)
            pipe.execute()
    procs = start_workers(workers, {"redis_url": REDIS_URL, "queue": "bench-noop",
                                    "mode": "burst", "worker_class": worker_class})
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = finish_workers(procs, terminate=False)
    seconds = max(r["stopped"] for r in results) - min(r["started"] for r in results)
    from rq.registry import FinishedJobRegistry

    done = FinishedJobRegistry(queue=queue).count
    conn.close()
    flush_redis()
    if done != n:
        raise RuntimeError(f"no-op: {done} of {n} jobs finished")
    name = "SimpleWorker" if worker_class == "simple" else "Worker (forking)"
    return Run(f"RQ no-op jobs, {name}, {workers} process{'es' * (workers > 1)}", "rq-noop",
               workers=workers, n=n, seconds=seconds,
               extra={"worker_cpu": sum(r["cpu"] + r["children_cpu"] for r in results)})


def run_breakdown(database: str, batch: int, n: int, whatif: tuple[str, ...]) -> dict[str, Any]:
    """``bench.breakdown`` in a child process: milliseconds per email for each step."""
    proc = subprocess.run([PYTHON, "-m", "bench.breakdown", "--db", database, "-n", str(n),
                           "--batch", str(batch), "--whatif", ",".join(whatif), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"breakdown failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_unitcost(database: str, n: int = 100) -> dict[str, Any]:
    """``bench.unitcost`` in a child process."""
    proc = subprocess.run([PYTHON, "-m", "bench.unitcost", "--db", database, "-n", str(n),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"unitcost failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
