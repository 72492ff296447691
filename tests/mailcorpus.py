"""The labelled mail corpus in ``tests/mail-samples/``, and the classifier's scores on it.

Two parts, never mixed: the **tuning** part (the folders the rules were written against) and the
**held-out** part (``heldout/``, chosen and labelled before any rule changed, and never looked at
while rules changed). ``python -m tests.mailcorpus`` prints both tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from nurture.inbound.classify import Classification, classify

SAMPLES = Path(__file__).parent / "mail-samples"
TUNING = ("sisimai", "flufl", "talon", "human", "autoreplies")
HELDOUT = ("heldout/flufl", "heldout/talon", "heldout/sisimai")
#: ``today`` for every message: only return dates depend on it, and no score does.
TODAY = date(2026, 3, 4)


def rows(folder: str) -> list[dict]:
    """The labels of one folder, each with its ``path``."""
    base = SAMPLES / folder
    found = json.loads((base / "labels.json").read_text(encoding="utf-8"))
    for row in found:
        row["path"] = base / row["file"]
    return found


@dataclass
class Scores:
    """Counts per category: (right, all)."""

    bounces: list[int] = field(default_factory=lambda: [0, 0])  # taken for a bounce
    hard_soft: list[int] = field(default_factory=lambda: [0, 0])  # among recognised bounces
    complaints: list[int] = field(default_factory=lambda: [0, 0])
    auto_replies: list[int] = field(default_factory=lambda: [0, 0])
    replies: list[int] = field(default_factory=lambda: [0, 0])  # people's replies, sender right
    others: list[int] = field(default_factory=lambda: [0, 0])  # "other" (automatic, reports...)
    machine_as_reply: list[str] = field(default_factory=list)  # no person wrote them
    misses: list[str] = field(default_factory=list)  # "file: expected -> got"

    def table(self, title: str) -> str:
        lines = [title]
        for name in ("bounces", "hard_soft", "complaints", "auto_replies", "replies", "others"):
            right, total = getattr(self, name)
            if total:
                lines.append(f"  {name:<13} {right:>4} / {total:<4} {right / total:7.1%}")
        lines.append(f"  machine mail taken for a reply: {len(self.machine_as_reply)}")
        return "\n".join(lines)

    @staticmethod
    def rate(pair: list[int]) -> float:
        return pair[0] / pair[1] if pair[1] else 1.0


def score(folders: tuple[str, ...]) -> Scores:
    """Classify every labelled message in ``folders`` and count what came out right."""
    scores = Scores()
    for folder in folders:
        for row in rows(folder):
            raw = row["path"].read_bytes()
            _count(scores, f"{folder}/{row['file']}", row, classify(raw, today=TODAY))
            if row["kind"] == "reply":  # as some servers and mbox files hand them over
                for name, variant in _wrapped(raw):
                    _count(scores, f"{folder}/{row['file']} ({name})", row,
                           classify(variant, today=TODAY))
    return scores


def _wrapped(raw: bytes) -> list[tuple[str, bytes]]:
    """The message after leading blank lines, and as the first message of an mbox file."""
    return [("after blank lines", b"\r\n\r\n" + raw),
            ("mbox", b"From sender@example.com  Mon Mar  2 09:00:00 2026\n" + raw)]


def _count(scores: Scores, name: str, row: dict, found: Classification) -> None:
    kind = row["kind"]
    if kind != "reply" and found.kind == "reply":
        scores.machine_as_reply.append(name)
    bucket = {"bounce": scores.bounces, "complaint": scores.complaints,
              "auto_reply": scores.auto_replies, "reply": scores.replies,
              "other": scores.others}[kind]
    right = found.kind == kind
    if kind == "reply" and "sender" in row:
        right = right and found.sender == row["sender"]
    bucket[0] += right
    bucket[1] += 1
    if not right:
        scores.misses.append(f"{name}: {kind} -> {found.kind}")
    if kind == "bounce" and found.kind == "bounce":
        agree = bool(found.hard) == bool(row["hard"])
        scores.hard_soft[0] += agree
        scores.hard_soft[1] += 1
        if not agree:
            scores.misses.append(f"{name}: {'hard' if row['hard'] else 'soft'} -> "
                                 f"{'hard' if found.hard else 'soft'}")


if __name__ == "__main__":
    import sys

    tuning = score(TUNING)
    print(tuning.table("tuning part"))
    if "-v" in sys.argv:
        print("\n".join("  " + m for m in tuning.misses))
    if "--heldout" in sys.argv:  # scores only: its misses are never printed
        print(score(HELDOUT).table("held-out part"))
