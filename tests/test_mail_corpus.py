"""The classifier's scores on the labelled corpus: the tuning part and the held-out part.

The held-out part (tests/mail-samples/heldout/) was chosen and labelled before the rules
changed and never looked at while they changed: its scores are the honest ones. The targets are
issue 17's; each score is computed here from the messages and their labels.
Run ``pytest -s tests/test_mail_corpus.py`` (or ``python -m tests.mailcorpus --heldout``) for
the tables.
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from tests.mailcorpus import HELDOUT, SAMPLES, TUNING, Scores, score


@cache
def heldout() -> Scores:
    return score(HELDOUT)


@cache
def tuning() -> Scores:
    return score(TUNING)


@pytest.mark.parametrize("folder", TUNING + HELDOUT)
def test_every_message_is_labelled_and_licensed(folder: str) -> None:
    base = SAMPLES / folder
    labels = json.loads((base / "labels.json").read_text(encoding="utf-8"))
    assert {p.name for p in base.glob("*.eml")} == {row["file"] for row in labels}
    assert all(row["kind"] in ("bounce", "complaint", "auto_reply", "reply", "other")
               for row in labels)
    assert all(isinstance(row["hard"], bool) for row in labels if row["kind"] == "bounce")
    if folder not in ("human", "autoreplies"):  # written for this project
        assert (base / "LICENSE").is_file()


def test_the_heldout_part_is_apart_from_the_tuning_part() -> None:
    def contents(folders: tuple[str, ...]) -> set[bytes]:
        return {p.read_bytes() for f in folders for p in (SAMPLES / f).glob("*.eml")}

    assert not contents(HELDOUT) & contents(TUNING)
    assert len(contents(HELDOUT)) >= 60


def test_heldout_scores_meet_the_targets() -> None:
    found = heldout()
    print("\n" + found.table("held-out part"))
    assert found.rate(found.complaints) >= 0.90 and found.complaints[1] >= 2
    assert found.rate(found.auto_replies) >= 0.90 and found.auto_replies[1] >= 3
    assert found.rate(found.replies) == 1.0 and found.replies[1] >= 18


def test_heldout_scores_short_of_the_targets_get_no_worse() -> None:
    """Issue 17 asks for bounces >= 95% (and not lower than before: 49/53), hard/soft >= 95%
    and no machine mail taken for a reply. Measured on the held-out part after the change:
    50/53 (94.3%), 47/50 (94.0%) and one message; tests/mail-samples/README.md says why the
    misses stay unexamined. These floors keep them from getting worse."""
    found = heldout()
    assert found.bounces[0] >= 50 and found.rate(found.bounces) >= 49 / 53
    assert found.rate(found.hard_soft) >= 0.94
    assert len(found.machine_as_reply) <= 1


def test_tuning_scores() -> None:
    found = tuning()
    print("\n" + found.table("tuning part"))
    assert found.rate(found.bounces) >= 0.95
    assert found.rate(found.hard_soft) >= 0.95
    assert found.rate(found.complaints) >= 0.90
    assert found.rate(found.auto_replies) >= 0.90
    assert found.rate(found.replies) == 1.0
    assert found.rate(found.others) == 1.0
    assert found.machine_as_reply == []
