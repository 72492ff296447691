"""Writing bench/RESULTS.md: a run replaces the sections it measured and keeps the others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTIONS = ("Pipeline throughput", "Tick cost", "Rendering")
INTRO = """# Benchmark results

Written by `python -m bench` (see [README.md](README.md) for what each number means). Each
section says when, on which commit and with which command it was measured: `--only` rewrites one
section and keeps the others.
"""


def merge(sections: dict[str, str]) -> None:
    """Write ``sections`` (title → markdown starting ``## title``), keeping the other known
    sections as they are in the file."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    old = {part.splitlines()[0][3:].strip(): part.strip()
           for part in re.split(r"(?m)^(?=## )", text) if part.startswith("## ")}
    body = [sections.get(title) or old.get(title) for title in SECTIONS]
    RESULTS.write_text("\n\n".join([INTRO.strip(), *[s.strip() for s in body if s]]) + "\n")


def header(facts: dict[str, str], command: str) -> str:
    return (f"Measured {facts['date']} with `{command}` on commit {facts['nurture']}; "
            f"{facts['nproc']} CPUs ({facts['cpu']}) shared with other people, load average "
            f"{facts['load']} (1, 5, 15 min) at the start. Python {facts['python']}, SQLite "
            f"{facts['sqlite']}, PostgreSQL {facts['postgresql']}, Redis {facts['redis']} (a "
            f"private server on a unix socket); rq {facts['rq']}, redis-py {facts['redis-py']}, "
            f"SQLAlchemy {facts['SQLAlchemy']}, psycopg {facts['psycopg']}, aiosmtpd "
            f"{facts['aiosmtpd']}, mrml {facts['mrml']}.")


def table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    def numeric(i: int) -> bool:
        cells = [row[i] for row in rows if row[i] != ""]
        return bool(cells) and all(isinstance(c, int | float) for c in cells)

    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if numeric(i) else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
