"""Writing bench/RESULTS.md: our sections are replaced, anyone else's are kept as they are."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# Benchmarks\n\n"
BEGIN, END = "<!-- bench: how to run -->", "<!-- /bench -->"
HEADER = BEGIN + """
Run from the repository root, with PostgreSQL (127.0.0.1:5432, database `test`) and Redis
(127.0.0.1:6379; only database 14 is used and flushed) running:

```sh
.venv/bin/python -m bench            # everything: 13 min here when quiet, ~18 when shared
.venv/bin/python -m bench --quick    # smaller sizes: ~7 min
.venv/bin/python -m bench --only pipeline   # or --only tick; --help for sizes
```

Each run rewrites its own sections below ("Pipeline throughput", "Tick cost") and keeps the
others. Tools it uses, also useful alone: `python -m bench.breakdown` (milliseconds per email
for each step of a send job; `--whatif ssl,tags,campaigns,nolimits` applies the changes of
`bench/whatif.py` at run time), `python -m bench.unitcost` (unit costs × occurrences per
email), `python -m bench.profile` (cProfile of send jobs). Not run by it:
`python -m bench.sqlite_writers` (two SQLite writers taking turns, SQLite's busy handler
against nurture's polling), `python -m bench.statements` (one send-path statement through
SQLAlchemy's `execute` and precompiled). To measure another version of nurture:
`cd COPY && ln -s /work/main/bench && /work/main/.venv/bin/python -m bench`.
""" + END + "\n"


def merge(sections: dict[str, str]) -> None:
    """Replace the ``## name`` sections given, keep every other section in its place."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    parts = re.split(r"(?m)^(?=## )", text)
    header, body = (parts[0], parts[1:]) if parts and not parts[0].startswith("## ") else (
        "", parts)
    if BEGIN in header and END in header:
        header = header[:header.index(BEGIN)] + HEADER + header[header.index(END) + len(END):]
    else:
        # Keep an existing title and text; the way to run these benchmarks goes right under
        # the title, so it is at the top.
        lines = header.strip().splitlines()
        title = lines[0] + "\n\n" if lines and lines[0].startswith("# ") else TITLE
        rest = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()
        header = title + HEADER + ("\n" + rest + "\n" if rest else "")
    out, done = [], set()
    for part in body:
        title = part.splitlines()[0][3:].strip() if part.strip() else ""
        if title in sections:
            out.append(sections[title].rstrip() + "\n\n")
            done.add(title)
        else:
            out.append(part if part.endswith("\n\n") else part.rstrip() + "\n\n")
    for title, section in sections.items():
        if title not in done:
            out.append(section.rstrip() + "\n\n")
    RESULTS.write_text(header.rstrip() + "\n\n" + "".join(out).rstrip() + "\n")


def facts_line(facts: dict[str, str], command: str) -> str:
    return (f"Measured {facts['date']} with `{command}`, nurture from {facts['nurture']}, on "
            f"{facts['nproc']} CPUs "
            f"({facts['cpu']}); Python {facts['python']}, SQLite {facts['sqlite']}, "
            f"PostgreSQL {facts['postgresql']}, Redis {facts['redis']}; rq {facts['rq']}, "
            f"redis-py {facts['redis-py']}, SQLAlchemy {facts['SQLAlchemy']}, psycopg "
            f"{facts['psycopg']}, aiosmtpd {facts['aiosmtpd']}.")


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float):
            if v != v:  # NaN
                return ""
            return (f"{v:,.2f}" if abs(v) < 1 else f"{v:,.1f}" if abs(v) < 100
                    else f"{v:,.0f}")
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    def numeric(i: int) -> bool:
        cells = [row[i] for row in rows if i < len(row) and row[i] != ""]
        return bool(cells) and all(isinstance(c, int | float) and not isinstance(c, bool)
                                   for c in cells)

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if numeric(i) else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
