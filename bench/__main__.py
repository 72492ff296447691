"""``python -m bench [--quick] [--only pipeline|tick|render]``: measure, and rewrite
bench/RESULTS.md (see bench/README.md)."""

from __future__ import annotations

import argparse
import sys
import time

from .common import machine_facts, private_redis
from .report import header, merge


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=["pipeline", "tick", "render"],
                        help="run one benchmark (default: all three)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("-n", type=int,
                        help="due emails per pipeline run (10,000; quick 2,000)")
    parser.add_argument("--time-box", type=float,
                        help="seconds before a nurture pipeline run is cut short (60; quick 20); "
                             "the rate is then taken over what was sent")
    parser.add_argument("--enrollments", type=int,
                        help="enrollments in the tick database (1,000,000; quick 100,000)")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    command = "python -m bench" + "".join(f" {a}" for a in sys.argv[1:])
    started = time.monotonic()
    with private_redis() as redis_url:
        facts = machine_facts(redis_url)
        log(f"machine: {facts}")
        top = header(facts, command)

        def write(title: str, section: str) -> None:  # each as soon as it is measured
            if not args.no_write:
                merge({title: section})
                log(f"wrote the {title!r} section of bench/RESULTS.md")

        if args.only in (None, "pipeline"):
            from . import pipeline

            n = args.n or (2000 if args.quick else 10_000)
            box = args.time_box or (20.0 if args.quick else 60.0)
            log(f"pipeline: {n:,} due per run, nurture runs cut short after {box:.0f}s")
            data = pipeline.measure(n, box, redis_url, log)
            limit, verdicts, _ = pipeline.verdicts(data)
            log(f"raw limit {limit:.0f} emails/s")
            for line in verdicts:
                log(f"  {line.replace('**', '')}")
            write("Pipeline throughput", pipeline.section(data, top))
        if args.only in (None, "tick"):
            from . import tick

            enrollments = args.enrollments or (100_000 if args.quick else 1_000_000)
            results = [tick.measure(db, enrollments, redis_url, log)
                       for db in ("sqlite", "postgresql")]
            write("Tick cost", tick.section(results, top))
        if args.only in (None, "render"):
            from . import render

            rows = render.measure(100 if args.quick else 300)
            for row in rows:
                log(f"render {row['email']}: {row['render_ms'] + row['message_ms']:.2f} ms "
                    f"compiled once, {row['per_send_ms']:.1f} ms compiled per send")
            write("Rendering", render.section(rows, top))
    log(f"total {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
