"""``python -m bench.classify [-n 1000] [--repeat 3]``: how fast ``nurture inbox classify`` is.

Copies ``-n`` messages from ``tests/mail-samples`` (every sample, round-robin: bounces,
complaints, auto-replies, people's replies, in both parts of the corpus) to a temporary folder,
then runs the real command, ``nurture inbox classify FILE...``, on all of them in this one
process, ``--repeat`` times, and prints the throughput of the best run (and the kinds it found,
so a run that reads nothing is seen). The first run includes the imports the command makes
(``dateparser``, ``mailparser_reply`` are loaded on first use); the best run is the steady state.
Issue 17's target: under 10 ms per message on average.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from .common import REPO, machine_facts

SAMPLES = REPO / "tests" / "mail-samples"


def copy_samples(folder: Path, n: int) -> list[Path]:
    """``n`` sample files in ``folder``, the corpus repeated as often as needed."""
    sources = sorted(SAMPLES.rglob("*.eml"))
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}-{sources[i % len(sources)].name}"
        shutil.copyfile(sources[i % len(sources)], path)
        paths.append(path)
    return paths


def run(paths: list[Path]) -> tuple[float, float, Counter]:
    """Wall and CPU seconds for one ``nurture inbox classify`` over ``paths``, and the kinds it
    printed. CPU time says what the work costs on a machine that others share."""
    from nurture.cli.inbox import inbox

    started, cpu = time.perf_counter(), time.process_time()
    result = CliRunner().invoke(inbox, ["classify", *map(str, paths), "--today", "2026-03-04"])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.exit_code != 0:
        raise SystemExit(f"nurture inbox classify failed: {result.output[-2000:]}")
    kinds = Counter(json.loads(line)["kind"] for line in result.output.splitlines())
    return elapsed, cpu, kinds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.classify", description=__doc__)
    parser.add_argument("-n", type=int, default=1000, help="messages (default 1,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nurture-classify-") as tmp:
        paths = copy_samples(Path(tmp), args.n)
        times, cpus = [], []
        for attempt in range(1, args.repeat + 1):
            elapsed, cpu, kinds = run(paths)
            times.append(elapsed)
            cpus.append(cpu)
            print(f"run {attempt}: {len(paths)} messages in {elapsed:.2f} s = "
                  f"{elapsed / len(paths) * 1000:.2f} ms/message ({cpu / len(paths) * 1000:.2f} "
                  "ms of CPU)", flush=True)
    best = min(times)
    print(f"kinds: {dict(sorted(kinds.items()))}")
    print(f"best: {len(paths) / best:,.0f} messages/s, {best / len(paths) * 1000:.2f} ms per "
          f"message, {min(cpus) / len(paths) * 1000:.2f} ms of CPU (target: under 10 ms)")
    print(f"machine: {machine_facts()}")


if __name__ == "__main__":
    main()
