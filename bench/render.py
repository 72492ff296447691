"""Rendering cost: what one email costs on the CPU, apart from the database and SMTP.

For the plainest shipped email and the largest (the card layout), in one process:

- **render**: Jinja2 in the sandbox on the compiled MJML, the text part, the checks, with the
  compile cache warm (as in a running worker);
- **wire message**: ``build_message``, the MIME message and its wire bytes;
- **compiled per send**: render + message with a fresh :class:`Renderer` each time, so MJML (mrml)
  and the Jinja2 templates built from its output are compiled for every email: what the
  compile cache saves;
- **email package serialization**: ``as_bytes`` of the finished message, which smtplib's
  ``send_message`` does for every email and nurture's transports do not.

Each figure is the fastest of 3 rounds of ``repeat`` emails (other work on a shared machine only
ever adds time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP
from typing import Any

from .common import REPO
from .report import table

TEMPLATES = REPO / "templates"
PRACTICE = {"name": "Harbor Physical Therapy", "address": "48 Dock Street, Portland, ME 04101",
            "phone": "(207) 555-0142", "website": "https://harborpt.example"}
SENDER = {"name": "Alex Moreau", "email": "alex@harborpt.example", "title": "Owner",
          "signature": "Warmly,"}
EMAILS = (("appreciation.mjml", "personal", None), ("article-share.mjml", "card", "article"))


def fastest_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    rounds = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append(1000 * (time.perf_counter() - t) / repeat)
    return min(rounds)


def measure(repeat: int) -> list[dict[str, Any]]:
    from nurture.content.library import load_library
    from nurture.outbound.mime import build_message
    from nurture.outbound.render import Renderer
    from nurture.outbound.samples import sample_context

    rows = []
    for template, layout, kind in EMAILS:
        context = {**sample_context(practice=PRACTICE, sender=SENDER),
                   "step": {"id": "bench", "layout": layout},
                   "item": load_library(REPO / "campaigns").of_kind(kind)[0].view()
                   if kind else None}

        def render(renderer: Renderer, t: str = template, c: dict = context,
                   lay: str = layout) -> Any:
            return renderer.render(t, "Hello {{ contact.first_name }}", c, layout=lay)

        def message(rendered: Any, c: dict = context) -> Any:
            return build_message(
                rendered, from_name="Alex", from_email="alex@harborpt.example", to_name="Dana",
                to_email="dana@example.com", message_id="<nurture.1.abc@harborpt.example>",
                date=datetime(2026, 12, 7, 14, tzinfo=UTC),
                unsubscribe_url=c["unsubscribe_url"], unsubscribe_mailto="")

        shared = Renderer(TEMPLATES)
        rendered = render(shared)
        built = message(rendered)
        rows.append({
            "email": f"{template.removesuffix('.mjml')} ({layout} layout)",
            "bytes": len(built.wire),
            "render_ms": fastest_ms(lambda r=shared: render(r), repeat),
            "message_ms": fastest_ms(lambda r=rendered: message(r), repeat),
            "per_send_ms": fastest_ms(lambda: message(render(Renderer(TEMPLATES))),
                                      max(5, repeat // 10)),
            "serialize_ms": fastest_ms(lambda b=built: b.as_bytes(policy=SMTP), repeat),
        })
    return rows


def section(rows: list[dict[str, Any]], header: str) -> str:
    return "\n".join([
        "## Rendering",
        "",
        header,
        "",
        table(["email", "KB", "render ms", "wire message ms", "one email, compiled once ms",
               "one email, compiled per send ms", "email package serialization ms"],
              [[r["email"], r["bytes"] / 1024, r["render_ms"], r["message_ms"],
                r["render_ms"] + r["message_ms"], r["per_send_ms"], r["serialize_ms"]]
               for r in rows]),
        "",
        "Milliseconds of one email, the fastest of 3 rounds. *Render*: Jinja2 on the compiled "
        "MJML, the text part and the checks, compile cache warm (a running worker). *Wire "
        "message*: `build_message`, the MIME message and its bytes. *Compiled per send*: both "
        "with a fresh `Renderer`, so MJML is compiled each time: what the cache saves. *Email "
        "package serialization*: `as_bytes` of the finished message, which smtplib's "
        "`send_message` pays for every email and nurture's transports do not.",
    ])
