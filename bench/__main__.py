"""``python -m bench [--quick] [--only pipeline|tick]``: run the benchmarks, write RESULTS.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import machine_facts
from .report import facts_line, merge, table

RAW = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~5 minutes)")
    parser.add_argument("--only", choices=["pipeline", "tick"], help="run one benchmark")
    parser.add_argument("-n", type=int, help="due sends per pipeline run (10,000; quick 2,000)")
    parser.add_argument("--time-box", type=float,
                        help="seconds per nurture pipeline run before it is cut short "
                             "(30; quick 15); the rate is measured over what was sent")
    parser.add_argument("--enrollments", type=int,
                        help="enrollments in the tick cost database (1,000,000; quick 100,000)")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--rerender", action="store_true",
                        help="measure nothing: rewrite the sections from bench/results/*.json")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the per-step breakdown and what-if runs")
    parser.add_argument("--breakdown-n", type=int,
                        help="emails in the breakdown run (150; quick 100)")
    args = parser.parse_args()
    command = "python -m bench" + "".join(f" {a}" for a in sys.argv[1:])
    if args.rerender:
        rerender(args.only)
        return
    started = time.monotonic()
    facts = machine_facts()
    log(f"machine: {facts}")
    RAW.mkdir(exist_ok=True)

    def write(title: str, section: str, name: str, saved: dict[str, Any]) -> None:
        # Each section as soon as it is measured: a later failure does not lose it.
        if args.no_write:
            return
        (RAW / name).write_text(json.dumps(saved, indent=1, default=str))
        merge({title: section})
        log(f"wrote the {title!r} section of bench/RESULTS.md")

    if args.only in (None, "pipeline"):
        n = args.n or (2000 if args.quick else 10_000)
        box = args.time_box or (15.0 if args.quick else 30.0)
        data = measure_pipeline(n, box, breakdown_n=0 if args.no_breakdown else
                                args.breakdown_n or (100 if args.quick else 150))
        write("Pipeline throughput", render_pipeline(data, facts, command), "pipeline.json",
              {"facts": facts, "command": command, **data})
    if args.only in (None, "tick"):
        enrollments = args.enrollments or (100_000 if args.quick else 1_000_000)
        due = [0, 1000, enrollments // 10]
        section, raw = tick_section(enrollments, due, facts, command)
        write("Tick cost", section, "tick.json",
              {"facts": facts, "command": command, "enrollments": enrollments, "due": due,
               "results": raw})
    log(f"total {time.monotonic() - started:.0f}s")


# Pipeline -------------------------------------------------------------------------------------
CONFIGS = (("postgresql", 1, 50), ("postgresql", 2, 50), ("postgresql", 1, 200),
           ("postgresql", 2, 200), ("sqlite", 1, 50), ("sqlite", 1, 200), ("sqlite", 2, 200))


def measure_pipeline(n: int, box: float, *, breakdown_n: int) -> dict[str, Any]:
    """Run everything; the result is what :func:`render_pipeline` needs (saved as JSON)."""
    from .pipeline import Run, run_breakdown, run_noop, run_nurture, run_smtplib, run_unitcost
    from .sinkclient import Sink

    runs: list[Run] = []
    failures: list[str] = []

    def record(label: str, thunk: Any) -> Any:
        try:
            run = thunk()
        except Exception as exc:  # noqa: BLE001  (nurture is edited while we measure)
            message = f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
            log(f"  FAILED {message}")
            failures.append(message)
            return None
        if isinstance(run, Run):
            runs.append(run)
            extra = {k: round(v, 3) if isinstance(v, float) else v for k, v in run.extra.items()}
            log(f"  {run.label}: {run.n:,} in {run.seconds:.1f}s = {run.rate:.1f}/s {extra}")
        elif "cpu" in run:
            log(f"  {label}: {run['n']} emails, {1000 * run['cpu'] / run['n']:.2f} ms CPU, "
                f"{1000 * run['seconds'] / run['n']:.2f} ms wall per email")
        else:
            log(f"  {label}: {json.dumps(run)[:600]}")
        return run

    def noop_probe(workers: int, n: int, when: str) -> Run | None:
        """RQ no-op jobs with ``workers`` processes, labelled as a probe run ``when``."""
        got = record(f"no-op probe {when}", lambda: run_noop(workers, probe_noop_n(n)))
        if got is not None:
            got.label = f"probe: {got.label} {when}"
        return got

    log(f"pipeline: {n:,} due per run, nurture runs time-boxed at {box:.0f}s")
    probe_n = min(n, 1000)
    with Sink() as sink:
        send_message = record("smtplib send_message", lambda: run_smtplib("send_message", n, sink))
        raw_bytes = record("smtplib bytes", lambda: run_smtplib("sendmail_bytes", n, sink))
        record("SmtpTransport", lambda: run_smtplib("nurture_transport", min(n, 3000), sink))
        noop1 = record("no-op x1", lambda: run_noop(1, n))
        noop2 = record("no-op x2", lambda: run_noop(2, n))
        record("no-op fork", lambda: run_noop(1, min(n, 1000), "fork"))
        nurture: list[tuple[Run, Run | None, Run | None, Run | None]] = []
        configs: list[tuple[str, int, int, tuple[str, ...]]] = [(*c, ()) for c in CONFIGS]
        if has_mailbox_limits():  # the same 2-worker run without the mailbox row lock
            configs.insert(2, ("postgresql", 2, 50, ("nolimits",)))
        for database, workers, batch, whatif in configs:
            run_name = (f"\"{database}, {workers} worker{'s' * (workers > 1)}, batch {batch}"
                        f"{', what-if ' + '+'.join(whatif) if whatif else ''}\"")
            # A short raw run right before: this machine is shared, its speed drifts.
            probe = record("probe", lambda: run_smtplib("send_message", probe_n, sink))
            if probe is not None:
                probe.label = f"probe: raw send_message just before {run_name}"
            # And RQ's no-op jobs with as many processes, before and after, for the same reason.
            noop_before = noop_probe(workers, n, f"just before {run_name}")
            got = record(f"nurture, {run_name}",
                         lambda d=database, w=workers, b=batch, x=whatif: run_nurture(
                             d, w, b, n, sink, box, x))
            noop_after = noop_probe(workers, n, f"just after {run_name}")
            if got is not None:
                nurture.append((got, probe, noop_before, noop_after))
    breakdowns, units = [], []
    if breakdown_n:
        log(f"where the time goes: {breakdown_n} emails, PostgreSQL, batch 50; unit costs")
        got = record("breakdown", lambda: run_breakdown("postgresql", 50, breakdown_n, ()))
        if got is not None:
            breakdowns.append(got)
        for database in ("postgresql", "sqlite"):
            got = record(f"unit costs {database}", lambda d=database: run_unitcost(d))
            if got is not None:
                units.append(got)
    if send_message is None or raw_bytes is None or noop1 is None or noop2 is None \
            or not nurture:
        raise SystemExit("pipeline: a baseline or every nurture run failed:\n"
                         + "\n".join(failures))

    def at(run: Run | None) -> int | None:
        return None if run is None else next(i for i, r in enumerate(runs) if r is run)

    return {"n": n, "box": box, "runs": [asdict(r) for r in runs], "failures": failures,
            "roles": {"send_message": at(send_message), "raw_bytes": at(raw_bytes),
                      "noop1": at(noop1), "noop2": at(noop2)},
            "pairs": [[at(run) for run in runs_of_one] for runs_of_one in nurture],
            "breakdowns": breakdowns, "units": units}


def probe_noop_n(n: int) -> int:
    """No-op jobs in each probe run: a few seconds' worth."""
    return min(n, 2000)


def render_pipeline(data: dict[str, Any], facts: dict[str, str], command: str) -> str:
    from .pipeline import Run

    n, box, failures = data["n"], data["box"], data["failures"]
    runs = [Run(**r) for r in data["runs"]]
    roles = {k: runs[i] for k, i in data["roles"].items()}
    send_message, raw_bytes = roles["send_message"], roles["raw_bytes"]
    noop1, noop2 = roles["noop1"], roles["noop2"]
    # [nurture, raw probe, no-op probe before, no-op probe after]; older runs saved fewer.
    nurture = [tuple(None if j is None else runs[j] for j in (*pair, None, None, None)[:4])
               for pair in data["pairs"]]
    breakdowns, units = data["breakdowns"], data["units"]
    noop_by_workers = {1: noop1.rate, 2: noop2.rate}
    rows = []
    for r, probe, *noop_probes in nurture:
        e = r.extra
        per = 1000 / max(1, r.n)
        rows.append([
            r.label.removeprefix("nurture, "), f"{r.n:,} / {e['due']:,}", r.seconds, r.rate,
            f"{r.rate / send_message.rate:.0%}",
            f"{r.rate / probe.rate:.0%}" if probe else "",
            f"{r.rate / raw_bytes.rate:.0%}",
            f"{r.rate / noop_by_workers[r.workers]:.0%}",
            " / ".join(f"{r.rate / q.rate:.0%}" for q in noop_probes if q),
            e["worker_cpu"] * per, e["sink_cpu"] * per, e["postgres_cpu"] * per,
            e["tick_seconds"] or 0.0, e["smtp_sessions"], e["rescheduled"],
            f"{e['machine_busy']:.0%} / {e['other_cpu'] / r.seconds / 2:.0%}"])
    base_rows = [[r.label, r.n, r.seconds, r.rate,
                  1000 * (r.extra.get("client_cpu") or r.extra.get("worker_cpu", 0)) / r.n,
                  1000 * r.extra["sink_cpu"] / r.n if "sink_cpu" in r.extra else ""]
                 for r in runs if r.kind != "nurture"]
    # The verdicts count nurture as it is: a what-if run measures a patched copy.
    as_is = [(r, p, [q for q in qs if q]) for r, p, *qs in nurture if "what-if" not in r.label]
    best = max((r for r, _, _ in as_is), key=lambda r: r.rate)
    best_probe = max((r.rate / p.rate for r, p, _ in as_is if p), default=0.0)
    target = 0.8 * send_message.rate
    verdict_smtp = "met" if best.rate >= target else "NOT met"
    # Against the no-op jobs, per number of processes: 1 worker vs 1 process, 2 vs 2. The
    # machine's speed drifts by a third within minutes, so the verdict compares the best run
    # with the no-op probes run right before and after it (it must beat the faster); the
    # main no-op run, minutes away, is quoted beside.
    versus_noop = []
    for workers, noop_rate in noop_by_workers.items():
        mine = [(r, qs) for r, _, qs in as_is if r.workers == workers]
        if mine:
            top, near = max(mine, key=lambda rq: rq[0].rate)
            bar = max((q.rate for q in near), default=noop_rate)
            around = " and ".join(f"{q.rate:.0f}" for q in near)
            versus_noop.append(
                f"{workers} process{'es' * (workers > 1)}: the best {workers}-worker nurture "
                f"run, {top.rate:.1f}/s ({top.label.removeprefix('nurture, ')}), against "
                + (f"{around} no-op jobs/s just before"
                   f"{' and after' if len(near) > 1 else ''} it" if near else
                   f"{noop_rate:.0f} no-op jobs/s")
                + f" → **{'met' if top.rate > bar else 'NOT met'}** "
                f"({top.rate / noop_rate:.0%} of the main no-op run, {noop_rate:.0f} jobs/s)")
    cpu_ceiling = max(1000 / (r.extra["worker_cpu"] * 1000 / r.n) for r, _, _ in as_is
                      if r.workers == 1 and r.n)
    lines = [
        "## Pipeline throughput",
        "",
        facts_line(facts, command),
        "",
        f"{n:,} touches due (one-step campaign, no send window, `appreciation.mjml`, "
        f"~{send_message.extra['avg_bytes'] / 1024:.1f} KB emails) go from the tick to "
        "acceptance by an aiosmtpd sink running in its own process. Workers are "
        "`bench.worker` processes: a `SimpleWorker` bound to the app, as `nurture worker` "
        "runs it (logging at WARNING, no RQ scheduler), idle on the queue, MJML already "
        "compiled. The clock starts when `nurture.worker.jobs.tick_job` is enqueued (as the cron "
        "scheduler does) and stops when the sink accepts the last message; a run is cut "
        f"short after {box:.0f}s and the rate is taken over what was accepted by then. After "
        "each run the database is checked against the sink: every touch sent or still "
        "queued (or rescheduled by the worker), as many sent as received. Mailbox limits "
        "(`limits_per_day`) are raised out of the way.",
        "",
        "**Targets.** "
        f"≥ 80% of raw smtplib `send_message` on one reused connection "
        f"({send_message.rate:.0f}/s → ≥ {target:.0f}/s): best nurture run "
        f"{best.rate:.1f}/s = {best.rate / send_message.rate:.0%} (best against the probe "
        f"run just before it: {best_probe:.0%}) → **{verdict_smtp}**. "
        "Faster than one-RQ-job-per-email no-op throughput with the same worker class "
        f"(SimpleWorker) and process count: {'; '.join(versus_noop)}. Even with a CPU to "
        "itself, one worker "
        f"could not exceed ~{cpu_ceiling:.0f} emails/s (1 / its CPU time per email, best "
        "run).",
        "",
        table(["nurture run", "sent / due", "s", "emails/s", "vs send_message",
               "vs probe before", "vs bytes", "vs no-op (same procs)",
               "vs no-op probes before / after",
               "worker CPU ms/email",
               "sink CPU ms/email", "PG CPU ms/email", "tick s", "SMTP sessions",
               "rescheduled", "machine busy / others"], rows),
        "",
        *(["Runs that failed (nurture is being edited while this runs):", "",
           *[f"- {f}" for f in failures], ""] if failures else []),
        "*vs probe before*: against a 1,000-message raw `send_message` run made just before "
        "(the machine is shared, so its speed drifts); *vs no-op probes*: against "
        f"{probe_noop_n(n):,} RQ no-op jobs with as many processes, run just before the "
        "raw probe and just after the nurture run. "
        "*worker CPU*: user+system time of the "
        "worker processes per email sent; *PG CPU*: all PostgreSQL processes on the machine "
        "(other users of the server included); *machine busy / others*: share of both CPUs "
        "busy during the run, and the share used by processes that are not part of the "
        "benchmark (other engineers' test runs share this machine; a high value makes that "
        "run's rate pessimistic). *rescheduled*: touches the worker put back to `scheduled` "
        "instead of sending.",
        "",
        "Baselines, same sink, same run:",
        "",
        table(["baseline", "messages / jobs", "s", "per s", "client/worker CPU ms each",
               "sink CPU ms each"], base_rows),
        "",
        "Raw smtplib runs send pre-rendered nurture emails (200 distinct, made by nurture's own "
        "send path into a transport that keeps them) from one process over one connection. "
        "RQ no-op jobs are enqueued beforehand; the clock runs from the workers' start to the "
        "last one finishing (burst mode).",
    ]
    if breakdowns:
        lines += ["", *breakdown_table(breakdowns)]
    if units:
        lines += ["", *unit_table(units)]
    return "\n".join(lines)


def has_mailbox_limits() -> bool:
    import importlib

    return hasattr(importlib.import_module("nurture.outbound.sending"), "take_send")


def breakdown_table(breakdowns: list[dict[str, Any]]) -> list[str]:
    """Where one email's time goes, step by step."""
    b = breakdowns[0]
    n = b["n"]
    statements = sum(v["calls"] for k, v in b["steps"].items() if k.startswith("SQL "))
    steps = [[name.replace("  ", "· "), v["wall_ms"], v["cpu_ms"], v["calls"]]
             for name, v in b["steps"].items()]
    return [
        "### Where the time goes (send jobs in one process)",
        "",
        f"`python -m bench.breakdown --db postgresql -n {n + 1}`: send jobs of 50 run in one "
        "process (no RQ), each step wrapped in a timer. As is: "
        f"**{1000 * b['seconds'] / n:.1f} ms wall, {1000 * b['cpu'] / n:.1f} ms CPU and "
        f"{statements:.0f} SQL statements per email** (commits included). Nested steps (·) "
        "are included in the step above them; SQL lines are the cursor time of each kind of "
        "statement. Wall times include waiting for the CPU on this shared machine.",
        "",
        table(["step", "wall ms/email", "CPU ms/email", "calls per email"], steps),
    ]


def unit_table(units: list[dict[str, Any]]) -> list[str]:
    """Unit costs (fastest of many runs) × occurrences per email: what each fix would save."""
    out = ["### Unit costs (what each change saves)", "",
           "`python -m bench.unitcost`: each suspect timed alone, fastest of 30-300 runs (noise "
           "only ever adds time), and counted during real send jobs of 50 "
           f"({units[0]['emails']} emails).", ""]
    rows = []
    for u in units:
        ms, per, db = u["unit_ms"], u["per_email"], u["db"]
        ssl_per = per.get("ssl context", 0.0)
        tags = per.get("SQL contact_tags SELECT", 0.0)
        eager = ms["load touch→enrollment→contact (as is, tags eager)"]
        camp = per.get("Nurture.campaigns", 0.0)
        rows += [
            [db, "`ssl.create_default_context()` per SMTP connection (delivery.py `_connect`)",
             ms["ssl.create_default_context()"], ssl_per,
             ms["ssl.create_default_context()"] * ssl_per,
             "done: one per process, only for STARTTLS/SMTPS", ""],
            [db, "load touch→enrollment→contact, `Contact.tags` eager (selectin)", eager, tags,
             eager * tags, "done: the send path leaves the tags unloaded", ""],
            [db, "`Nurture.campaigns` access (a file check, unless pinned)",
             ms["Nurture.campaigns access"], camp, "",
             "done: pinned per job (`campaigns_pinned`), so these accesses check no files", ""],
            [db, "SQL statements (one round trip alone: "
             f"{ms['one SQL round trip (SELECT 1)']:.3f} ms)", "",
             per.get("SQL statements", 0.0), "", "fewer statements (breakdown above)", ""],
            [db, "commits (a one-statement transaction: "
             f"{ms['transaction with one statement (BEGIN…COMMIT)']:.3f} ms)", "",
             per.get("SQL commits", 0.0), "", "", ""],
        ]
        paid = ("Renderer.render (one email)", "build_message (one email)")
        floor = sum(ms.get(k, 0.0) for k in paid)
        rows += [[db, k, v, 1.0, v, "", ""] for k, v in ms.items() if k in paid]
        serialize = ms.get("serialize the message (as send_message does)")
        if serialize is not None:
            rows.append([db, "serialize the message (as send_message does)", serialize, 0.0, 0.0,
                         "done: build_message writes the wire bytes itself", ""])
        rows.append([db, "**CPU floor of one email** (render + build, no database)",
                     "", "", floor, f"≤ {1000 / floor:.0f} emails/s per worker", ""])
    out += [table(["db", "item", "unit ms (fastest)", "per email", "ms per email",
                   "proposed change", "saves ms/email"], rows)]
    return out


# Tick cost ------------------------------------------------------------------------------------
def rerender(only: str | None) -> None:
    """Rewrite the sections from their saved measurements (after a wording change)."""
    from .tickcost import TickResults

    sections = {}
    if only in (None, "pipeline") and (RAW / "pipeline.json").exists():
        saved = json.loads((RAW / "pipeline.json").read_text())
        sections["Pipeline throughput"] = render_pipeline(saved, saved["facts"],
                                                          saved["command"])
    if only in (None, "tick") and (RAW / "tick.json").exists():
        saved = json.loads((RAW / "tick.json").read_text())
        results = [TickResults(**r) for r in saved["results"]]
        sections["Tick cost"] = tick_section(saved["enrollments"], saved["due"],
                                             saved["facts"], saved["command"],
                                             results=results)[0]
    merge(sections)
    log(f"rewrote {', '.join(sections) or 'nothing'}")


def tick_section(enrollments: int, due: list[int], facts: dict[str, str], command: str,
                 results: list[Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    from .tickcost import run_tick_cost

    if results is None:
        log(f"tick cost: {enrollments:,} enrollments, due {due}")
        results = [run_tick_cost(db, enrollments, due, log=log)
                   for db in ("postgresql", "sqlite")]
    lines = [
        "## Tick cost",
        "",
        facts_line(facts, command),
        "",
        f"{enrollments:,} contacts and enrollments and ~{2 * enrollments:,} touches, bulk-loaded "
        "(COPY on PostgreSQL, one executemany transaction on SQLite). Every enrollment's first "
        "touch was sent in the past; 85% have their next touch scheduled 1 hour to 60 days "
        "ahead, 10% completed, 5% stopped (touch cancelled). For each due count, the earliest "
        "scheduled touches are moved an hour into the past and ONE tick is measured in a fresh "
        "process, after a warm-up tick (clock a year back, nothing due) has opened the "
        "connection and compiled the statements. Dispatcher: no-op unless said. *RSS growth*: "
        "`ru_maxrss` after the tick minus before; *tracemalloc peak*: a second run of the same "
        "tick under tracemalloc. Batch size 50, so one tick queues at most "
        "`MAX_BATCHES_PER_TICK` 200 × 50 = 10,000 touches.",
        "",
    ]
    raw = []
    for r in results:
        raw.append(asdict(r))
        lines += [f"**{r.database}**: loaded in {r.load_seconds:.0f}s "
                  f"({', '.join(f'{k} {v:,}' for k, v in sorted(r.counts.items()))}).", ""]
        lines.append(table(
            ["due", "tick ms", "queued by the tick", "jobs", "RSS growth kB",
             "tracemalloc peak kB", "cold first tick ms (nothing due)"],
            [[row["due"], row["tick_ms"], row["enqueued"], row["jobs"], row["rss_growth_kb"],
              row.get("tracemalloc_peak_kb", "not repeated (tick > 30 s)"),
              row["cold_empty_ms"]] for row in r.rows]))
        q, d, f, s = r.rq, r.drain, r.inflight, r.send
        per_tick = 200 * 50
        lines += [
            "",
            f"- With the real `RQDispatcher` and {q['due']:,} due: tick {q['tick_ms']:.1f} ms, "
            f"of which {q['enqueue_ms']:.1f} ms in {q['jobs']} `enqueue` calls "
            f"({q['enqueue_ms'] / max(1, q['jobs']):.2f} ms per job).",
            drain_line(d, per_tick),
            f"- A tick with nothing due while {f['inflight_jobs']} jobs are queued in Redis "
            f"(older than the requeue grace, so `_requeue_lost` checks them): "
            f"{f['inflight_tick_ms']:.1f} ms, of which `RQDispatcher.lost` "
            f"{f['inflight_lost_ms']:.1f} ms for {f['inflight_checked']} job ids "
            f"({f['inflight_lost_ms'] / max(1, f['inflight_checked']):.2f} ms each). Asking "
            f"Redis for the same {f['lost_jobs_checked']} statuses in one pipeline "
            f"(`HGET rq:job:<id> status` each) took {f['lost_pipelined_ms']:.2f} ms "
            f"(same answer: {f['lost_agree']}).",
            f"- The send path on this database ({s['send_n']} touches, a transport that "
            f"serializes and drops the message): {s['send_ms_each']:.1f} ms wall, "
            f"{s['send_cpu_ms_each']:.1f} ms CPU per email.",
            "",
        ]
        a = r.analyzed
        if a:
            lines += [
                f"The table above is SQLite without statistics: a database never analyzed, or "
                "analyzed while it was small (a worker started before the data grew and not "
                "restarted since). It then reads `state = ?` through `ix_touches_state_due_at` "
                "even when the row ids are known. After "
                f"{a.get('how', '`PRAGMA analysis_limit=1000; ANALYZE`')} "
                f"({a['analyze_ms']:.0f} ms on this database):",
                "",
                table(["due", "tick ms", "queued by the tick", "jobs"],
                      [[row["due"], row["tick_ms"], row["enqueued"], row["jobs"]]
                       for row in a["rows"]]),
                "",
                f"- The send path after ANALYZE: {a['send']['send_ms_each']:.1f} ms wall, "
                f"{a['send']['send_cpu_ms_each']:.1f} ms CPU per email "
                f"({a['send']['send_n']} touches).",
                "",
            ]
        lines += ["<details><summary>query plans</summary>", ""]
        for name, plan in r.plans.items():
            lines += [f"{name}:", "", "```", *plan, "```", ""]
        if a:
            lines += ["After ANALYZE:", ""]
            for name, plan in a["plans"].items():
                lines += [f"{name}:", "", "```", *plan, "```", ""]
        lines += ["</details>", ""]
    return "\n".join(lines), raw


def drain_line(d: dict[str, Any], per_tick: int) -> str:
    ticks_needed = -(-d["due"] // per_tick)
    each = ", ".join(f"{x:.0f}" for x in d["tick_ms_each"][:12])
    if d.get("complete", True):
        return (f"- {d['due']:,} due: one tick queues at most {per_tick:,}; draining them took "
                f"{d['ticks']} ticks ({d['drain_ms']:.0f} ms of tick time in all, {each} ms "
                f"each). With `tick_interval` 60 s the last of them is queued "
                f"~{d['ticks'] - 1} minutes after it fell due.")
    if not d.get("measured", True):
        return (f"- {d['due']:,} due: one tick queues at most {per_tick:,} and took "
                f"{d['drain_ms'] / 1000:.0f} s, so draining all takes ~{ticks_needed} ticks of "
                f"~{d['drain_ms'] / 1000:.0f} s (not repeated: too slow).")
    return (f"- {d['due']:,} due: one tick queues at most {per_tick:,}; the drain was stopped "
            f"after {d['ticks']} ticks and {d['drain_ms'] / 1000:.0f} s of tick time "
            f"({d['total_enqueued']:,} queued; {each} ms each), so draining all takes "
            f"~{ticks_needed} ticks of ~{d['drain_ms'] / len(d['tick_ms_each']) / 1000:.0f} s: "
            f"with `tick_interval` 60 s the last is queued ~{ticks_needed - 1} minutes after it "
            "fell due.")


if __name__ == "__main__":
    main()
