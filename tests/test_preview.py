"""`nurture preview`: what would be sent, written to files by the sender's own code path.

A preview and the real send are byte-identical apart from the Date header; a preview changes
nothing in the database. The shipped templates and layouts render well with every library item.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from nurture.app import Nurture
from nurture.cli.context import Context
from nurture.cli.preview import preview as preview_cli
from nurture.clock import FakeClock
from nurture.content.library import load_library
from nurture.engine import enroll
from nurture.intake.referrals import add_referral
from nurture.models import Base, Touch
from nurture.outbound.preview import preview
from nurture.outbound.render import Renderer
from nurture.outbound.samples import sample_context, sparse_context
from nurture.outbound.transport import OutboxTransport
from tests.conftest import REPO
from tests.test_library import SHARE, Collect, add_contact, open_project, run_days, send_due
from tests.test_render import parse_strict
from tests.test_threading import THREADED


def without_date(data: bytes) -> bytes:
    return re.sub(rb"^Date: [^\r\n]*\r\n", b"", data, count=1, flags=re.M)


def part(message: Any, kind: str) -> str:
    return str(message.get_body((kind,)).get_content()).replace("\r\n", "\n")


def snapshot(app: Nurture) -> dict[str, list[Any]]:
    """Every row of every table, to show that a preview wrote nothing."""
    with app.db.transaction() as session:
        return {table.name: [tuple(row) for row in session.execute(select(table))]
                for table in Base.metadata.sorted_tables}


THANKS = """\
id: thanks
name: Thanks
on_referral: {send: thank-you}
steps:
  - id: hello
    subject: Hello
    template: appreciation.mjml
  - id: thank-you
    trigger_only: true
    subject: "Thank you, {{ contact.first_name }}"
    template: thank-you.mjml
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str, clock: FakeClock) -> Any:
    app = open_project(tmp_path, database_url, clock,
                       {"share.yaml": SHARE, "threaded.yaml": THREADED, "thanks.yaml": THANKS})
    yield app
    app.close()


def test_a_preview_is_the_send_byte_for_byte(project: Nurture, clock: FakeClock,
                                             tmp_path: Path) -> None:
    add_contact(project, "s@clinic.example", role="Orthopedic surgeon")
    enroll(project, "share", emails=["s@clinic.example"])
    enroll(project, "threaded", emails=["s@clinic.example"])
    outbox = OutboxTransport(tmp_path / "outbox")
    before = snapshot(project)
    shown = preview(project, "share", "article", email="s@clinic.example", out=tmp_path / "p")
    first = preview(project, "threaded", "hello", email="S@clinic.example", out=tmp_path / "p")
    assert snapshot(project) == before
    assert (shown[0].item, shown[0].subject) == ("knee-piece", "Something to read")

    clock.advance(minutes=30)  # the real send happens later: only its Date differs
    assert len(send_due(project, outbox).sent) == 2
    sent = {p.read_bytes() for p in (tmp_path / "outbox").glob("*.eml")}
    previewed = {r.files[2].read_bytes() for r in shown + first}
    assert previewed != sent
    assert {without_date(b) for b in previewed} == {without_date(b) for b in sent}

    # The threaded follow-up: previewed as the reply it will be.
    clock.advance(days=1)
    [follow] = preview(project, "threaded", "follow", email="s@clinic.example",
                       out=tmp_path / "p")
    assert follow.subject == "Re: Hello Dana"
    send_due(project, outbox)
    sent_follow = [p.read_bytes() for p in (tmp_path / "outbox").glob("*.eml")
                   if b"In-Reply-To" in p.read_bytes()]
    assert [without_date(b) for b in sent_follow] == [without_date(follow.files[2].read_bytes())]
    html = follow.files[0].read_text(encoding="utf-8")
    text = follow.files[1].read_text(encoding="utf-8")
    parsed = email.message_from_bytes(follow.files[2].read_bytes(), policy=email.policy.default)
    assert part(parsed, "html").rstrip() == html.rstrip()
    assert part(parsed, "plain") == text


def test_a_step_not_planned_yet_previews_as_its_later_send(project: Nurture, clock: FakeClock,
                                                            tmp_path: Path) -> None:
    """No touch exists yet for a step three days ahead, nor for a thank-you no referral has
    asked for: the preview still carries the Message-ID the real send will, so the files are
    the later send's, byte for byte apart from the Date."""
    add_contact(project, "s@clinic.example")
    add_contact(project, "t@gym.example", first="Sam")
    enroll(project, "threaded", emails=["s@clinic.example"])
    enroll(project, "thanks", emails=["t@gym.example"])
    before = snapshot(project)
    [fresh] = preview(project, "threaded", "fresh", email="s@clinic.example", out=tmp_path / "p")
    [thanks] = preview(project, "thanks", "thank-you", email="t@gym.example", out=tmp_path / "p")
    assert snapshot(project) == before  # no touch was planned by the preview

    outbox = OutboxTransport(tmp_path / "outbox")
    send_due(project, outbox)  # both hellos
    clock.advance(hours=2)
    add_referral(project, "t@gym.example")  # the same day: the thank-you the preview showed
    run_days(project, clock, outbox, 4)
    sent = {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Message-ID"]:
            p.read_bytes() for p in (tmp_path / "outbox").glob("*.eml")}
    assert len(sent) == 6  # hello, follow, again, fresh; hello, thank-you
    for shown in (fresh, thanks):
        eml = shown.files[2].read_bytes()
        message_id = email.message_from_bytes(eml, policy=email.policy.default)["Message-ID"]
        assert message_id in sent, shown.step
        assert without_date(eml) == without_date(sent[message_id])
        assert eml != sent[message_id]  # the Date differs: the send is days later
    with project.db.transaction() as session:
        keys = {(t.step_id, t.trigger_key): t.message_id for t in session.scalars(select(Touch))}
    assert {keys[("fresh", "")], keys[("thank-you", "2026-12-07")]} == {
        email.message_from_bytes(r.files[2].read_bytes())["Message-ID"] for r in (fresh, thanks)}


def test_every_step_for_a_contact_not_enrolled(project: Nurture, clock: FakeClock,
                                               tmp_path: Path) -> None:
    add_contact(project, "t@gym.example", role="personal trainer")
    before = snapshot(project)
    results = preview(project, "share", email="t@gym.example", out=tmp_path / "p")
    assert snapshot(project) == before
    assert [(r.step, r.item, r.skipped) for r in results] == [
        ("article", "running-piece", ""), ("book", "a-book", ""), ("check-in", "", "")]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(
        f"share.{step}.{ext}" for step in ("article", "book", "check-in")
        for ext in ("html", "txt", "eml"))


def test_a_step_with_nothing_left_previews_as_skipped(project: Nurture, clock: FakeClock,
                                                      tmp_path: Path) -> None:
    add_contact(project, "s@clinic.example")
    enroll(project, "share", emails=["s@clinic.example"])
    run_days(project, clock, Collect(), 3)  # the one book has been sent
    [book] = preview(project, "share", "book", email="s@clinic.example", out=tmp_path / "p")
    assert (book.skipped, book.item) == ("", "a-book")  # its own touch: the same book again
    again = SHARE.replace("id: share", "id: again").replace("name: Share", "name: Again")
    (project.settings.campaigns_dir / "again.yaml").write_text(again)
    [other] = preview(project, "again", "book", email="s@clinic.example", out=tmp_path / "p")
    assert (other.skipped, other.files) == ("no unsent book left", ())


def test_sample_previews_of_the_shipped_campaigns(app: Nurture, tmp_path: Path) -> None:
    subjects = {}
    for campaign in ("referral-outreach", "partner-care"):
        for result in preview(app, campaign, out=tmp_path / "p"):
            subjects[campaign, result.step] = result.subject
            html_path, text_path, eml_path = result.files
            html = html_path.read_text(encoding="utf-8")
            text = text_path.read_text(encoding="utf-8")
            hrefs = parse_strict(html).hrefs
            assert all(href in text for href in hrefs), result.step
            parsed = email.message_from_bytes(eml_path.read_bytes(), policy=email.policy.default)
            assert parsed["Subject"] == result.subject
            assert part(parsed, "plain") == text
            if result.item:
                item = load_library(REPO / "campaigns").get(result.item)
                assert item is not None and item.url in hrefs
    # The outreach's follow-ups reply in the thread of the note they continue.
    assert subjects["referral-outreach", "question-follow-up"] == "Re: A question for you, Dana"
    assert subjects["referral-outreach", "coffee"] == (
        "Re: Thank you for what you do at Lakeside Orthopedics")


def test_a_sample_preview_of_a_threaded_step_is_the_reply(project: Nurture,
                                                          tmp_path: Path) -> None:
    """With --sample the earlier steps count as sent, so a threaded step shows as the reply it
    will usually be: Re: the first subject, and the chain of Message-IDs."""
    results = {r.step: r for r in preview(project, "threaded", out=tmp_path / "p")}
    parsed = {step: email.message_from_bytes(r.files[2].read_bytes(), policy=email.policy.default)
              for step, r in results.items()}
    ids = {step: m["Message-ID"] for step, m in parsed.items()}
    assert [(step, m["Subject"]) for step, m in parsed.items()] == [
        ("hello", "Hello Dana"), ("follow", "Re: Hello Dana"), ("again", "Re: Hello Dana"),
        ("fresh", "Something new")]
    assert parsed["follow"]["In-Reply-To"] == parsed["follow"]["References"] == ids["hello"]
    assert parsed["again"]["In-Reply-To"] == ids["follow"]
    assert parsed["again"]["References"] == f"{ids['hello']} {ids['follow']}"
    assert "In-Reply-To" not in parsed["hello"] and "References" not in parsed["fresh"]
    assert len(set(ids.values())) == 4
    alone = {r.step: r.subject for r in preview(project, "threaded", "again", out=tmp_path / "q")}
    assert alone == {"again": "Re: Hello Dana"}  # previewed on its own, still the reply


PRACTICE = {"name": "Harbor Physical Therapy", "address": "48 Dock Street\nPortland, ME 04101",
            "phone": "", "website": ""}


@pytest.mark.parametrize("sparse", [False, True], ids=["full", "sparse"])
@pytest.mark.parametrize("layout", ["personal", "card"])
@pytest.mark.parametrize("template,kind", [("article-share.mjml", "article"),
                                           ("book-suggestion.mjml", "book")])
def test_shipped_templates_render_every_library_item(template: str, kind: str, layout: str,
                                                     sparse: bool) -> None:
    renderer = Renderer(REPO / "templates")
    base = sample_context(practice=PRACTICE, sender={"name": "Alex", "email": "a@h.example"})
    base = sparse_context(base) if sparse else base
    for item in load_library(REPO / "campaigns").of_kind(kind):
        ctx = {**base, "item": item.view(), "step": {"id": "s", "layout": layout}}
        assert renderer.check(template, "Hi", ctx, field="f", layout=layout) == []
        rendered = renderer.render(template, "Hi", ctx, layout=layout)
        hrefs = parse_strict(rendered.html).hrefs
        assert item.url in hrefs and ctx["unsubscribe_url"] in hrefs
        assert all(href in rendered.text for href in hrefs)
        assert rendered.text.count(item.title) == 1 and item.byline in rendered.text
        assert "!" not in rendered.text and "None" not in rendered.text
        body = rendered.text.split("\nBest,\n")[0]
        assert body.startswith("Hi there,\n\n" if sparse else "Hi Dana,\n\n")
    assert renderer.compile_count == 1  # one compile, every item rendered from it


# The command ----------------------------------------------------------------------------------
def invoke(app: Nurture, *args: str) -> tuple[int, str]:
    s = app.settings
    overrides = {name: getattr(s, name) for name in (
        "database_url", "paths_campaigns", "paths_templates", "sender_name", "sender_email",
        "practice_name", "practice_address", "practice_timezone", "secret_key")}
    obj = Context(project_dir=s.project_dir, clock=FakeClock(datetime(2026, 12, 7, 14, tzinfo=UTC)),
                  overrides=overrides)
    try:
        result = CliRunner().invoke(preview_cli, list(args), obj=obj)
    finally:
        obj.close()
    return result.exit_code, result.output


def test_the_command(project: Nurture, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("click.launch", lambda url, **kw: opened.append(url))
    add_contact(project, "s@clinic.example")
    code, out = invoke(project, "share", "article", "--contact", "s@clinic.example", "--open")
    assert code == 0, out
    folder = project.settings.project_dir / "preview"
    assert out.splitlines()[0] == "article: Something to read  [knee-piece]"
    assert opened == [str(folder / "share.article.html")]
    code, out = invoke(project, "threaded", "--sample", "--out", str(folder / "s"))
    assert code == 0 and len(list((folder / "s").glob("*.eml"))) == 4 and len(opened) == 1
    assert invoke(project, "share")[0] == 2  # neither --contact nor --sample
    assert invoke(project, "share", "--sample", "--contact", "s@clinic.example")[0] == 2
    code, out = invoke(project, "share", "nope", "--sample")
    assert code == 1 and "has no step 'nope' (known: article, book, check-in)" in out
    code, out = invoke(project, "share", "--contact", "who@else.example")
    assert code == 1 and "no contact with email 'who@else.example'" in out
    with project.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Base.metadata.tables["touches"])
                              ) == 0


# The MJML compiler (mrml) and the checks made before it ----------------------------------------
@pytest.mark.parametrize("body,line,message", [
    ("<mj-text>\n<p>a < b</p>\n</mj-text>\n", 2, "write a '<' in text as &lt;"),
    ("<mj-text>a</mj-text>\n<mj-txt>b</mj-txt>\n", 2, "unknown MJML element <mj-txt>"),
    ("<mj-text>a</mj-text>\n\n<mj-raw>{% if x %}</mj-raw>{{ touch_count }}\n", 3,
     "{{ touch_count }} does not survive MJML"),
])
def test_what_the_compiler_would_get_wrong_is_refused(tmp_path: Path, body: str, line: int,
                                                      message: str) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "_layout.mjml").write_text((REPO / "templates" / "_layout.mjml").read_text())
    (folder / "t.mjml").write_text(body)
    renderer = Renderer(folder)
    ctx = sample_context(practice=PRACTICE, sender={"name": "Alex"})
    problems = renderer.check("t.mjml", "Hi", ctx, field="f")
    assert [(p.file, p.line) for p in problems][:1] == [(str(folder / "t.mjml"), line)]
    assert message in problems[0].message

