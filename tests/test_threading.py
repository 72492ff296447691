"""Threads: a step with `thread: <earlier step>` is sent as a reply in that conversation.

Subject ``Re: <that subject>``, ``In-Reply-To`` and ``References`` from the stored Message-IDs.
If the earlier step was never sent, the step starts a thread of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nurture.clock import FakeClock
from nurture.content.campaigns import load_campaigns
from nurture.engine import enroll
from nurture.errors import CampaignError
from tests.conftest import REPO
from tests.test_library import Collect, add_contact, open_project, run_days, touches

THREADED = """\
id: threaded
name: Threaded
steps:
  - id: hello
    subject: "Hello {{ contact.first_name }}"
    template: appreciation.mjml
  - id: follow
    wait: 1 days
    thread: hello
    subject: A question
    template: open-question.mjml
  - id: again
    wait: 1 days
    thread: follow
    subject: Checking in
    template: check-in.mjml
  - id: fresh
    wait: 1 days
    subject: Something new
    template: check-in.mjml
"""


@pytest.fixture
def threaded(tmp_path: Path, database_url: str, clock: FakeClock) -> Any:
    app = open_project(tmp_path, database_url, clock, {"threaded.yaml": THREADED})
    yield app
    app.close()


def test_a_threaded_step_replies_to_the_earlier_one(threaded: Any, clock: FakeClock) -> None:
    add_contact(threaded, "dana@clinic.example")
    enroll(threaded, "threaded", emails=["dana@clinic.example"])
    outbox = Collect()
    run_days(threaded, clock, outbox, 4)
    hello, follow, again, fresh = outbox.messages
    ids = [t.message_id for t in touches(threaded)]
    assert [m["Message-ID"] for m in outbox.messages] == ids

    assert hello["Subject"] == "Hello Dana" and "In-Reply-To" not in hello
    assert follow["Subject"] == "Re: Hello Dana"
    assert follow["In-Reply-To"] == ids[0] and follow["References"] == ids[0]
    # A reply to a reply: the subject stays "Re: <the first>", References holds the chain.
    assert again["Subject"] == "Re: Hello Dana"
    assert again["In-Reply-To"] == ids[1] and again["References"] == f"{ids[0]} {ids[1]}"
    assert fresh["Subject"] == "Something new" and "References" not in fresh
    # What was recorded is what was sent.
    assert [t.subject for t in touches(threaded)] == [m["Subject"] for m in outbox.messages]


def test_a_step_whose_earlier_step_was_never_sent_starts_a_thread(
        tmp_path: Path, database_url: str, clock: FakeClock) -> None:
    # The first step picks a book and the library has none: it is skipped, never sent.
    campaign = THREADED.replace("template: appreciation.mjml",
                                "template: appreciation.mjml\n    content: {kind: book}")
    app = open_project(tmp_path, database_url, clock, {"threaded.yaml": campaign},
                       library="articles: []\n")
    add_contact(app, "dana@clinic.example")
    enroll(app, "threaded", emails=["dana@clinic.example"])
    outbox = Collect()
    run_days(app, clock, outbox, 4)
    assert [t.state for t in touches(app)] == ["skipped", "sent", "sent", "sent"]
    follow, again, _ = outbox.messages
    assert follow["Subject"] == "A question" and "In-Reply-To" not in follow
    assert again["Subject"] == "Re: A question"
    assert again["In-Reply-To"] == again["References"] == follow["Message-ID"]
    app.close()


@pytest.mark.parametrize("change,field,message", [
    ("thread: hello\n    subject: A question", "steps[1].thread", None),
    ("thread: again\n    subject: A question", "steps[1].thread",
     'step "again" comes later (steps[2]); a step can only reply to an earlier one'),
    ("thread: follow\n    subject: A question", "steps[1].thread",
     "a step cannot reply to itself"),
    ("thread: helo\n    subject: A question", "steps[1].thread",
     'no step has id "helo"; did you mean "hello"?'),
    ("thread: Hello\n    subject: A question", "steps[1].thread",
     '"Hello" is not an id; use lowercase letters, digits and hyphens'),
])
def test_thread_must_name_an_earlier_step(tmp_path: Path, change: str, field: str,
                                          message: str | None) -> None:
    (tmp_path / "threaded.yaml").write_text(
        THREADED.replace("thread: hello\n    subject: A question", change))
    if message is None:
        campaigns = load_campaigns(tmp_path, REPO / "templates")
        assert campaigns["threaded"].step("follow").thread == "hello"
        return
    with pytest.raises(CampaignError) as caught:
        load_campaigns(tmp_path, REPO / "templates")
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [(9, field, message)]


@pytest.mark.parametrize("extra,field,message", [
    ("content: {kind: artcle}", "steps[0].content.kind",
     '"artcle" is not one of article or book'),
    ("content: {kind: article, match: [hobbies]}", "steps[0].content.match[0]",
     '"hobbies" is not one of interests or role'),
    ("content: {kind: article, pick: first}", "steps[0].content.pick",
     '"pick" is not a field here; expected one of: kind, match'),
    ("layout: card", "steps[0].layout",
     "the card layout shows an item from the library; add content: {kind: article} (or book), "
     "or use layout: personal"),
    ("layout: fancy", "steps[0].layout",
     f'layout "fancy" needs the file _fancy.mjml in {REPO / "templates"}'),
])
def test_content_and_layout_are_checked(tmp_path: Path, extra: str, field: str,
                                        message: str) -> None:
    text = THREADED.replace("template: appreciation.mjml",
                            f"template: appreciation.mjml\n    {extra}")
    (tmp_path / "threaded.yaml").write_text(text)
    with pytest.raises(CampaignError) as caught:
        load_campaigns(tmp_path, REPO / "templates")
    assert [(p.field, p.message) for p in caught.value.problems] == [(field, message)]


def test_content_layout_and_thread_load(tmp_path: Path) -> None:
    campaigns = load_campaigns(REPO / "campaigns", REPO / "templates")
    article = campaigns["partner-care"].step("article-1")
    assert (article.content.kind, article.content.match, article.layout) == (  # type: ignore
        "article", ("interests", "role"), "card")
    outreach = campaigns["referral-outreach"].step("article")
    assert outreach.content.match == ("role", "interests")  # type: ignore[union-attr]
    assert outreach.layout == "personal" and outreach.thread is None


def test_a_reply_to_an_email_whose_subject_is_unknown_keeps_its_own_subject(
        threaded: Any, clock: FakeClock) -> None:
    """A send settled by hand (`nurture resolve --sent` after a crash) has no recorded subject:
    the reply still joins its thread, under the step's own subject rather than a bare "Re: "."""
    from sqlalchemy import update

    from nurture.models import Touch

    add_contact(threaded, "dana@clinic.example")
    enroll(threaded, "threaded", emails=["dana@clinic.example"])
    outbox = Collect()
    run_days(threaded, clock, outbox, 1)
    (hello,) = outbox.messages
    with threaded.db.transaction() as session:
        session.execute(update(Touch).where(Touch.step_id == "hello").values(subject=None))
    run_days(threaded, clock, outbox, 1)
    follow = outbox.messages[1]
    assert follow["Subject"] == "A question"
    assert follow["In-Reply-To"] == hello["Message-ID"]
