"""Rendering benchmarks: ``python -m bench.render_bench [--write]``.

1. **Compile once vs per send.** MJML is compiled once per template version and cached; only
   Jinja2 runs per email. This times composing N emails (render, text part, MIME message, bytes)
   with the cache, and with a compile per email (a fresh :class:`Renderer` each time), for the
   plainest email and the largest (the card layout, ~70 lines once spliced).
2. **Which MJML compiler.** Every shipped (template, layout) source is compiled by each
   implementation found: the ``mjml`` Python package (what nurture uses), the ``mrml`` binding
   (Rust; ``pip install mrml``; note that ``mjml-python``, another MRML binding, installs a module
   named ``mjml`` and would replace nurture's), and the reference npm ``mjml``
   (``npm install --prefix DIR mjml@4``; give ``--npm DIR``, repeatable). Speed is ms per compile
   inside one process (node's start-up is reported apart). Fidelity against the reference: the
   Jinja tags must come through intact, then the HTML is rendered for the sample contact and
   compared (a) as normalised HTML tokens and (b) as pixels of a headless-Chromium screenshot
   (when ``chromium-headless-shell`` or ``chromium`` is installed).

``--write`` replaces the "Rendering" section of bench/RESULTS.md with this run's numbers.
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP
from pathlib import Path
from typing import Any

import nurture.outbound.render
from bench.pixels import differing_pixels
from bench.render_compare import (
    compilers,
    jinja_tags,
    node_startup_ms,
    python_mjml,
    render_jinja,
    screenshot,
    tokens,
)
from nurture.content.library import load_library
from nurture.outbound.render import SLOT, Renderer, build_message, layout_file, sample_context

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
RESULTS = Path(__file__).with_name("RESULTS.md")
PRACTICE = {"name": "Harbor Physical Therapy", "address": "48 Dock Street, Portland, ME 04101",
            "phone": "(207) 555-0142", "website": "https://harborpt.example"}
SENDER = {"name": "Alex Moreau", "email": "alex@harborpt.example", "title": "Owner",
          "signature": "Warmly,"}
DATE = datetime(2026, 12, 7, 14, tzinfo=UTC)


# Inputs --------------------------------------------------------------------------------------
def sources() -> dict[str, tuple[str, str]]:
    """name → (spliced MJML source, layout) for every shipped email and layout it is used in."""
    found = {}
    bodies = sorted(p for p in TEMPLATES.glob("*.mjml") if not p.name.startswith("_"))
    for body in bodies:
        layouts = ["personal"] + (["card"] if body.stem in ("article-share", "book-suggestion")
                                  else [])
        for layout in layouts:
            frame = (TEMPLATES / layout_file(layout)).read_text(encoding="utf-8")
            found[f"{body.stem}/{layout}"] = (
                frame.replace(SLOT, body.read_text(encoding="utf-8")), layout)
    return found


def context(layout: str, name: str) -> dict[str, Any]:
    ctx = sample_context(practice=PRACTICE, sender=SENDER)
    kind = "book" if name.startswith("book") else "article"
    item = load_library(REPO / "campaigns").of_kind(kind)[0]
    return {**ctx, "step": {"id": "bench", "layout": layout},
            "item": item.view() if name.split("/")[0] in ("article-share", "book-suggestion")
            else None}


def per_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        runs.append((time.perf_counter() - started) * 1000 / repeat)
    return min(runs)


# 1. Compile once vs per send ----------------------------------------------------------------
def compose_email(renderer: Renderer, template: str, layout: str, ctx: dict[str, Any]) -> bytes:
    """What a send does to one email on the CPU, apart from the database and SMTP."""
    rendered = renderer.render(template, "Hello {{ contact.first_name }}", ctx, layout=layout)
    message = build_message(
        rendered, from_name="Alex", from_email="alex@harborpt.example", to_name="Dana",
        to_email="dana@example.com", message_id="<nurture.1.abc@harborpt.example>", date=DATE,
        unsubscribe_url=ctx["unsubscribe_url"], unsubscribe_mailto="")
    return message.as_bytes(policy=SMTP)


def compile_once_vs_per_send(emails: int) -> list[dict[str, Any]]:
    rows = []
    shipped = nurture.outbound.render.mjml_to_html
    for template, layout in (("appreciation.mjml", "personal"), ("article-share.mjml", "card")):
        name = f"{template[:-5]}/{layout}"
        args = (template, layout, context(layout, name))
        shared = Renderer(TEMPLATES)
        row = {"email": name, "lines": sources()[name][0].count("\n") + 1,
               "cached_ms": per_ms(lambda r=shared, a=args: compose_email(r, *a), emails)}
        for key, compiler in (("mrml", shipped), ("python", python_mjml())):
            if compiler is None:
                continue
            nurture.outbound.render.mjml_to_html = compiler  # type: ignore[assignment]
            try:
                row[key] = per_ms(lambda a=args: compose_email(Renderer(TEMPLATES), *a),
                                  max(5, emails // 10))
            finally:
                nurture.outbound.render.mjml_to_html = shipped
        rows.append(row)
    return rows


# 2. MJML implementations ----------------------------------------------------------------------
def compare(npm_dirs: list[Path], repeat: int, pixels: bool) -> dict[str, Any]:
    srcs = sources()
    names = list(srcs)
    results = {impl: fn([srcs[n][0] for n in names], repeat)
               for impl, fn in compilers(npm_dirs, per_ms).items()}
    reference = next((impl for impl in results if "npm" in impl and " 4." in impl),
                     next((impl for impl in results if "npm" in impl), None))
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    folder = Path(tempfile.mkdtemp(prefix="render-bench-"))
    rendered = {impl: {n: render_jinja(html, context(srcs[n][1], n))
                       for n, (html, _) in zip(names, out, strict=True)}
                for impl, out in results.items()}
    shots: dict[str, dict[str, Path]] = {}
    if pixels and browser:
        for i, (impl, pages) in enumerate(rendered.items()):
            shots[impl] = {n: screenshot(page, folder, f"{i}-{n.replace('/', '-')}", browser)
                           for n, page in pages.items()}
    report: dict[str, Any] = {"reference": reference, "sources": names, "impls": {},
                              "lines": {n: srcs[n][0].count("\n") + 1 for n in names},
                              "browser": browser if pixels else None}
    for impl, out in results.items():
        row: dict[str, Any] = {"ms": statistics.mean(ms for _, ms in out),
                               "ms_max": max(ms for _, ms in out),
                               "jinja_intact": sum(jinja_tags(srcs[n][0]) == jinja_tags(h)
                                                   for n, (h, _) in zip(names, out, strict=True))}
        if reference and impl != reference:
            ratios, same_tokens, same_pixels, worst = [], 0, 0, 0
            for n in names:
                mine, ref = tokens(rendered[impl][n]), tokens(rendered[reference][n])
                ratios.append(difflib.SequenceMatcher(None, mine, ref, autojunk=False).ratio())
                same_tokens += mine == ref
                if shots:
                    diff = differing_pixels(shots[impl][n], shots[reference][n])
                    same_pixels += diff == 0
                    worst = max(worst, diff)
            row.update(similarity=min(ratios), same_tokens=same_tokens,
                       same_pixels=same_pixels if shots else None, worst_pixels=worst)
        report["impls"][impl] = row
    if npm_dirs:
        report["node_startup_ms"] = node_startup_ms(npm_dirs[0])
    shutil.rmtree(folder, ignore_errors=True)
    return report


# Output -----------------------------------------------------------------------------------------
def markdown(once: list[dict[str, Any]], impls: dict[str, Any] | None) -> str:
    out = ["## Rendering", "",
           "`python -m bench.render_bench --write` (2-core machine, Python "
           f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start: "
           "other work on the machine slows every column alike). MJML is compiled once per "
           "template version; only Jinja2 runs per email.", "",
           "### Compile once vs per send", "",
           "Composing one email: render (Jinja2 in the sandbox, text part, checks), MIME "
           "message, wire bytes. Compiling per send means MJML and the two Jinja2 templates "
           "built from its output, every time.", "",
           "| email | MJML lines | compiled once (ms/email) | compiled per send, mrml | "
           "compiled per send, mjml (Python) |",
           "|---|---:|---:|---:|---:|"]
    for row in once:
        cells = [f"{row[k]:.2f} (+{row[k] - row['cached_ms']:.2f})" if k in row else "-"
                 for k in ("mrml", "python")]
        out.append(f"| {row['email']} | {row['lines']} | {row['cached_ms']:.2f} | "
                   f"{cells[0]} | {cells[1]} |")
    if impls:
        ref = impls["reference"]
        out += ["", "### MJML implementations", "",
                f"{len(impls['sources'])} sources: every shipped template in each layout it is "
                f"used with ({min(impls['lines'].values())}-{max(impls['lines'].values())} "
                f"lines). Reference: {ref}. Fidelity is measured on the rendered email (Jinja "
                "run for the sample contact): normalised HTML tokens (attributes and CSS "
                "declarations sorted, whitespace collapsed) and the pixels of a "
                f"headless-Chromium screenshot at 640 px"
                f"{'' if impls['browser'] else ' (not run)'}.", "",
                "| implementation | ms/compile (mean, max) | Jinja intact | token similarity "
                "(worst) | identical tokens | identical pixels |",
                "|---|---:|---:|---:|---:|---:|"]
        n = len(impls["sources"])
        for impl, row in impls["impls"].items():
            if impl == ref:
                fidelity = "reference | - | -"
            elif "similarity" not in row:  # no reference to compare with (no --npm)
                fidelity = "- | - | -"
            else:
                pixels = "-" if row.get("same_pixels") is None else (
                    f"{row['same_pixels']}/{n}" + (f" (worst {row['worst_pixels']} px)"
                                                   if row["same_pixels"] < n else ""))
                fidelity = (f"{row['similarity']:.1%} | {row['same_tokens']}/{n} | {pixels}")
            out.append(f"| {impl} | {row['ms']:.2f} ({row['ms_max']:.2f}) | "
                       f"{row['jinja_intact']}/{n} | {fidelity} |")
        rows = impls["impls"]
        rust = next((k for k in rows if k.startswith("mrml")), None)
        py = next((k for k in rows if k.startswith("mjml (Python)")), None)
        if rust and py and rows[rust].get("same_pixels") is not None:
            out += ["", f"**Chosen: mrml.** It compiles {rows[py]['ms'] / rows[rust]['ms']:.0f}x "
                        f"faster than the Python package and its emails are pixel-identical to "
                        f"the reference's on {rows[rust]['same_pixels']}/{n} sources (the Python "
                        f"package: {rows[py]['same_pixels']}/{n}). With the compile cache the "
                        "speed matters for a worker's first emails and for `nurture validate`; "
                        "the fidelity matters for every email."]
        if "node_startup_ms" in impls:
            out += ["", f"Starting node and loading the npm package: "
                        f"{impls['node_startup_ms']:.0f} ms, paid by every compile done by "
                        "running the `mjml` command."]
    return "\n".join(out) + "\n"


def write_results(section: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Rendering\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=300, help="emails per cached timing")
    parser.add_argument("--repeat", type=int, default=20, help="compiles per source and tool")
    parser.add_argument("--npm", type=Path, action="append", default=[],
                        help="an npm prefix where `npm install --prefix DIR mjml` ran")
    parser.add_argument("--no-pixels", action="store_true", help="skip the screenshots")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    once = compile_once_vs_per_send(args.emails)
    impls = compare([p for p in args.npm if (p / "node_modules/mjml").is_dir()], args.repeat,
                    not args.no_pixels)
    section = markdown(once, impls)
    print(section)
    if args.write:
        write_results(section)


if __name__ == "__main__":
    main()
