"""The content library: its file, the choice of an item, and that choice at send time.

An item is chosen for a contact once and never again, recorded in the claim's transaction. A
step with nothing left is skipped (recorded, with its reason) and the sequence goes on. An item
whose email was not sent (a template error, a permanent failure) is free again.
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from nurture.app import Nurture
from nurture.cli.context import Context
from nurture.cli.library import library as library_cli
from nurture.clock import FakeClock
from nurture.content.library import Item, LibraryError, load_library, pick, related
from nurture.engine import enroll
from nurture.errors import Problem
from nurture.models import Contact, ContentSent, Event, Touch
from nurture.outbound.sending import DeliveryReport, deliver
from nurture.outbound.transport import (
    PermanentDeliveryError,
    Staged,
    TransientDeliveryError,
    Transport,
)
from nurture.project import validate_project
from nurture.ticking import tick
from tests.conftest import REPO, make_settings
from tests.seeding import RecordingDispatcher

LIBRARY = """\
articles:
  - title: Knee piece
    url: https://example.org/knee
    source: Journal A
    summary: About knees.
    tags: [knee, osteoarthritis]
    audiences: [surgeon]
  - title: Running piece
    url: https://example.org/run
    source: Journal B
    summary: About running.
    tags: [running]
    audiences: [trainer]
books:
  - title: A book
    author: Someone
    why: It is good.
    url: https://example.org/book
"""


# Helpers shared with test_threading and test_preview ------------------------------------------
class Collect(Transport):
    """Keeps each message; raises ``fail`` (once) instead when it is set."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.fail: Exception | None = None

    def stage(self, message: EmailMessage) -> Staged:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        messages = self.messages

        class Kept(Staged):
            def commit(self) -> None:
                messages.append(message)

            def abort(self) -> None:
                pass

        return Kept()


def write_project(tmp_path: Path, campaigns: dict[str, str], library: str | None = LIBRARY
                  ) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir(exist_ok=True)
    for name, text in campaigns.items():
        (folder / name).write_text(textwrap.dedent(text))
    if library is not None:
        (folder / "library.yaml").write_text(textwrap.dedent(library))
    return folder


def open_project(tmp_path: Path, database_url: str, clock: FakeClock, campaigns: dict[str, str],
                 library: str | None = LIBRARY, templates: Path = REPO / "templates") -> Nurture:
    folder = write_project(tmp_path, campaigns, library)
    return Nurture.open(make_settings(tmp_path, database_url=database_url,
                                      paths_campaigns=str(folder), paths_templates=str(templates)),
                        clock)


def add_contact(app: Nurture, email: str, *, first: str = "Dana", role: str = "",
                interests: tuple[str, ...] = ()) -> int:
    with app.db.transaction() as session:
        contact = Contact(email=email, first_name=first, last_name="Lee", organization="Clinic",
                          role=role, interests=list(interests), timezone="America/New_York",
                          created_at=app.now(), updated_at=app.now())
        session.add(contact)
        session.flush()
        return contact.id


def send_due(app: Nurture, transport: Transport) -> DeliveryReport:
    dispatcher = RecordingDispatcher()
    tick(app, dispatcher)
    return deliver(app, dispatcher.ids, transport)


def touches(app: Nurture) -> list[Touch]:
    with app.db.transaction() as session:
        return list(session.scalars(select(Touch).order_by(Touch.id)))


def sent_items(app: Nurture) -> list[tuple[str, int | None]]:
    with app.db.transaction() as session:
        return [(row.item_id, row.touch_id) for row in
                session.scalars(select(ContentSent).order_by(ContentSent.id))]


# The library file --------------------------------------------------------------------------------
def test_the_shipped_library_is_valid_and_relevant() -> None:
    library = load_library(REPO / "campaigns")
    articles, books = library.of_kind("article"), library.of_kind("book")
    assert len(articles) >= 5 and len(books) >= 4
    assert len({item.id for item in library.items}) == len(library.items)
    for item in library.items:
        assert item.url.startswith("https://"), item.id
        assert item.title and item.byline and item.view()["why"], item.id
        assert item.tags, item.id
    audiences = {a for item in library.items for a in item.audiences}
    assert {"physician", "surgeon", "trainer", "nutritionist"} <= audiences


def test_an_item_id_defaults_to_its_title(tmp_path: Path) -> None:
    write_project(tmp_path, {})
    library = load_library(tmp_path / "campaigns")
    assert [item.id for item in library.items] == ["knee-piece", "running-piece", "a-book"]
    assert library.get("a-book").view() == {  # type: ignore[union-attr]
        "kind": "book", "id": "a-book", "title": "A book", "url": "https://example.org/book",
        "byline": "Someone", "tags": [], "audiences": [], "author": "Someone",
        "why": "It is good."}


def test_no_library_is_an_empty_library(tmp_path: Path) -> None:
    assert load_library(tmp_path).items == ()


def test_every_problem_is_listed_with_file_line_and_field(tmp_path: Path) -> None:
    folder = write_project(tmp_path, {}, """\
        articles:
          - title: No address
            source: A
            summary: B
          - title: Bad address
            url: www.example.org/x
            source: A
            summary: |
              Two
              lines
          - titel: Typo
            url: https://example.org/t
            source: A
            summary: B
        """)
    with pytest.raises(LibraryError) as caught:
        load_library(folder)
    found = [(Path(p.file).name, p.line, p.field, p.message) for p in caught.value.problems]
    assert found == [
        ("library.yaml", 2, "articles[0].url", "is required"),
        ("library.yaml", 6, "articles[1].url",
         '"www.example.org/x" is not a web address; write it out, e.g. https://...'),
        ("library.yaml", 8, "articles[1].summary",
         "must be one line (it is shown as one line on a card)"),
        ("library.yaml", 11, "articles[2].titel", '"titel" is not a field here; did you mean '
                                                  '"title"?'),
        ("library.yaml", 11, "articles[2].title", "is required"),
    ]
    assert str(caught.value).startswith("5 problems found")


def test_ids_are_unique_across_the_library_files(tmp_path: Path) -> None:
    book = "  - id: {id}\n    title: {title}\n    author: A\n    why: B\n    url: https://x.org/{n}\n"
    folder = write_project(tmp_path, {}, "books:\n" + book.format(id="shared", title="One", n=1)
                           + book.format(id="one", title="Other", n=2))
    (folder / "library").mkdir()
    (folder / "library" / "more.yaml").write_text(
        "books:\n" + book.format(id="shared", title="Two", n=3))
    with pytest.raises(LibraryError) as caught:
        load_library(folder)
    assert [str(p) for p in caught.value.problems] == [
        f'{folder / "library" / "more.yaml"}:2: id: "shared" is already the id of '
        f'{folder / "library.yaml"}:2; give one of them an id of its own']


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    write_project(tmp_path, {}, "articles:\n  - title: [unclosed\n")
    with pytest.raises(LibraryError) as caught:
        load_library(tmp_path / "campaigns")
    [problem] = caught.value.problems
    assert problem.line == 3 and problem.message.startswith("invalid YAML")


# Choosing --------------------------------------------------------------------------------------
def item(item_id: str, tags: tuple[str, ...] = (), audiences: tuple[str, ...] = ()) -> Item:
    return Item("article", item_id, item_id.title(), f"https://example.org/{item_id}", tags,
                audiences, source="S", summary="Why.")


ITEMS = [item("plain"), item("knees", ("knee",), ("trainer",)),
         item("surgery", ("knee surgery",), ("surgeon",)), item("runs", ("running",))]


@pytest.mark.parametrize("a,b,expected", [
    ("running", "trail running", True), ("Surgeon", "Orthopedic surgeon", True),
    ("knees", "knee", True), ("knee surgery", "knee", True), ("sleep", "running", False),
    ("", "anything", False), ("physician assistant", "physician", True)])
def test_related(a: str, b: str, expected: bool) -> None:
    assert related(a, b) is expected and related(b, a) is expected


def test_pick_prefers_the_fields_in_the_order_given() -> None:
    contact = {"role": "Orthopedic surgeon", "interests": ["trail running", "knees"]}
    # interests first: "knees" matches knees (knee) and surgery (knee surgery) and runs; then role
    assert pick(ITEMS, contact, ["interests", "role"]).id == "surgery"  # type: ignore[union-attr]
    assert pick(ITEMS, contact, ["role"]).id == "surgery"  # type: ignore[union-attr]
    both = {"role": "personal trainer", "interests": ["trail running"]}
    assert pick(ITEMS, both, ["interests", "role"]).id == "runs"  # type: ignore[union-attr]
    assert pick(ITEMS, both, ["role", "interests"]).id == "knees"  # type: ignore[union-attr]


def test_pick_falls_back_to_file_order_and_never_repeats() -> None:
    nobody = {"role": "", "interests": []}
    chosen = []
    for _ in ITEMS:
        got = pick(ITEMS, nobody, ["interests", "role"], exclude=chosen)
        assert got is not None
        chosen.append(got.id)
    assert chosen == ["plain", "knees", "surgery", "runs"]
    assert pick(ITEMS, nobody, [], exclude=chosen) is None
    assert pick([], nobody, []) is None


# Validation --------------------------------------------------------------------------------------
SHARE = """\
id: share
name: Share
steps:
  - id: article
    subject: Something to read
    template: article-share.mjml
    content: {kind: article, match: [role]}
  - id: book
    wait: 1 days
    subject: A book
    template: book-suggestion.mjml
    content: {kind: book}
    layout: card
  - id: check-in
    wait: 1 days
    subject: How are things?
    template: check-in.mjml
"""


def test_validate_renders_every_item_a_step_could_pick(tmp_path: Path) -> None:
    templates = Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))
    body = templates / "article-share.mjml"
    body.write_text(body.read_text().replace("{{ item.summary }}", "{{ item.author }}"))
    folder = write_project(tmp_path, {"share.yaml": SHARE},
                           LIBRARY.split("books:")[0])  # articles only
    settings = make_settings(tmp_path, paths_campaigns=str(folder), paths_templates=str(templates))
    problems = validate_project(settings).problems
    lines = [i + 1 for i, line in enumerate(body.read_text().splitlines()) if "item.author" in line]
    assert [(p.file, p.line, p.field) for p in problems] == [
        (str(body), lines[0], "share.yaml: steps[0] (article) with article knee-piece"),
        (str(body), lines[0], "share.yaml: steps[0] (article) with article running-piece"),
        (str(folder / "share.yaml"), 8, "steps[1].content"),
    ]
    assert "author" in problems[0].message
    assert problems[2].message.startswith("the library has no books to pick from")


def test_the_shipped_project_validates_with_its_library(tmp_path: Path) -> None:
    assert validate_project(make_settings(tmp_path)).problems == []


def test_a_broken_library_fails_validation(tmp_path: Path) -> None:
    folder = write_project(tmp_path, {"share.yaml": SHARE}, "articles: nope\n")
    problems = validate_project(make_settings(tmp_path, paths_campaigns=str(folder))).problems
    assert [(Path(p.file).name, p.line, p.field) for p in problems] == [
        ("library.yaml", 1, "articles")]


# At send time ------------------------------------------------------------------------------
@pytest.fixture
def share(tmp_path: Path, database_url: str, clock: FakeClock) -> Any:
    app = open_project(tmp_path, database_url, clock, {"share.yaml": SHARE})
    yield app
    app.close()


def run_days(app: Nurture, clock: FakeClock, transport: Transport, days: int) -> None:
    for _ in range(days):
        send_due(app, transport)
        clock.advance(days=1)


def test_the_choice_is_recorded_and_never_repeated(share: Nurture, clock: FakeClock) -> None:
    surgeon = add_contact(share, "s@clinic.example", role="Orthopedic surgeon")
    trainer = add_contact(share, "t@gym.example", role="personal trainer")
    enroll(share, "share", emails=["s@clinic.example", "t@gym.example"])
    outbox = Collect()
    run_days(share, clock, outbox, 3)
    texts = {str(m["To"]).split("<")[1][0]: m.get_body(("plain",)).get_content()
             for m in outbox.messages if m["Subject"] == "Something to read"}
    assert "https://example.org/knee" in texts["s"] and "https://example.org/run" in texts["t"]
    with share.db.transaction() as session:
        rows = {(r.contact_id, r.item_id, r.kind) for r in session.scalars(select(ContentSent))}
    assert rows == {(surgeon, "knee-piece", "article"), (trainer, "running-piece", "article"),
                    (surgeon, "a-book", "book"), (trainer, "a-book", "book")}
    assert len(outbox.messages) == 6
    card = next(m for m in outbox.messages if m["Subject"] == "A book")
    assert "It is good." in card.get_body(("plain",)).get_content()


def test_nothing_left_skips_the_step_and_the_sequence_goes_on(tmp_path: Path, database_url: str,
                                                              clock: FakeClock) -> None:
    again = SHARE.replace("id: share", "id: again").replace("name: Share", "name: Again")
    app = open_project(tmp_path, database_url, clock, {"share.yaml": SHARE, "again.yaml": again})
    add_contact(app, "s@clinic.example")
    enroll(app, "share", emails=["s@clinic.example"])
    outbox = Collect()
    run_days(app, clock, outbox, 3)
    enroll(app, "again", emails=["s@clinic.example"])
    run_days(app, clock, outbox, 3)
    states = [(t.step_id, t.state, t.reason) for t in touches(app)]
    assert states[3:] == [("article", "sent", None), ("book", "skipped", "no unsent book left"),
                          ("check-in", "sent", None)]
    subjects = [m["Subject"] for m in outbox.messages]
    assert subjects.count("Something to read") == 2 and subjects.count("A book") == 1
    with app.db.transaction() as session:
        kinds = [e.kind for e in session.scalars(select(Event).order_by(Event.id))]
    assert "touch_skipped" in kinds
    from nurture.report import status  # reported too, with its reason

    assert [(line.email, line.campaign, line.step, line.note) for line in status(app).skipped] == [
        ("s@clinic.example", "again", "book", "no unsent book left")]
    app.close()


def test_a_template_error_releases_the_item(tmp_path: Path, database_url: str,
                                            clock: FakeClock) -> None:
    templates = Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))
    body = templates / "article-share.mjml"
    body.write_text(body.read_text().replace("{{ item.summary }}", "{{ item.author }}"))
    app = open_project(tmp_path, database_url, clock, {"share.yaml": SHARE}, templates=templates)
    add_contact(app, "s@clinic.example")
    enroll(app, "share", emails=["s@clinic.example"])
    report = send_due(app, Collect())
    assert len(report.failed) == 1 and "author" in touches(app)[0].reason  # type: ignore[operator]
    assert sent_items(app) == []
    app.close()


def test_a_retry_shows_the_same_item(share: Nurture) -> None:
    add_contact(share, "s@clinic.example")
    enroll(share, "share", emails=["s@clinic.example"])
    outbox = Collect()
    outbox.fail = TransientDeliveryError("try later", code=451)
    first = send_due(share, outbox)
    assert first.retry and sent_items(share) == [("knee-piece", first.retry[0])]
    assert deliver(share, first.retry, outbox).sent == first.retry  # RQ's retry
    assert sent_items(share) == [("knee-piece", first.retry[0])]
    assert "https://example.org/knee" in outbox.messages[0].get_body(("plain",)).get_content()


def test_a_released_item_is_taken_over_by_the_next_touch(share: Nurture) -> None:
    add_contact(share, "s@clinic.example")
    enroll(share, "share", emails=["s@clinic.example"])
    outbox = Collect()
    outbox.fail = PermanentDeliveryError("no", code=554, enhanced="5.7.1", kind="policy")
    failed = send_due(share, outbox)
    assert sent_items(share) == [("knee-piece", failed.failed[0])]
    again = share.settings.campaigns_dir / "again.yaml"
    again.write_text(SHARE.replace("id: share", "id: again").replace("name: Share", "name: A"))
    enroll(share, "again", emails=["s@clinic.example"])
    sent = send_due(share, outbox)
    assert sent_items(share) == [("knee-piece", sent.sent[0])]  # the same row, a new touch


# The commands ------------------------------------------------------------------------------
def invoke(folder: Path, *args: str) -> tuple[int, str]:
    if not (folder / "nurture.toml").exists():  # a project folder: commands refuse any other
        (folder / "nurture.toml").write_text("")
    obj = Context(project_dir=folder, clock=FakeClock(datetime(2026, 12, 7, 14, tzinfo=UTC)),
                  overrides={})
    result = CliRunner().invoke(library_cli, list(args), obj=obj)
    return result.exit_code, result.output


def test_library_list_and_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the offline check must not touch the network")

    monkeypatch.setattr("nurture.content.linkcheck.urlopen", no_network)
    write_project(tmp_path, {})
    code, out = invoke(tmp_path, "list")
    assert code == 0 and out.splitlines()[0].split() == ["article", "knee-piece", "Knee", "piece"]
    assert "tags: knee, osteoarthritis; audiences: surgeon" in out
    code, out = invoke(tmp_path, "list", "--kind", "book")
    assert code == 0 and "knee-piece" not in out and "a-book" in out
    code, out = invoke(tmp_path, "check")
    assert (code, out) == (0, "ok: 2 articles, 1 books (links not fetched; --online does)\n")


def test_library_check_lists_problems(tmp_path: Path) -> None:
    write_project(tmp_path, {}, "books:\n  - title: X\n    author: Y\n    why: Z\n    url: ftp://x\n")
    code, out = invoke(tmp_path, "check")
    assert code == 1
    assert "1 problem found" in out and "library.yaml:5: books[0].url:" in out


class FakeResponse:
    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def test_online_check_asks_each_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def fake_urlopen(request: Any, timeout: float) -> FakeResponse:
        asked.append((request.get_method(), request.full_url))
        if request.full_url.endswith("/run"):
            raise HTTPError(request.full_url, 404, "Not Found", {}, None)  # type: ignore[arg-type]
        if request.full_url.endswith("/book") and request.get_method() == "HEAD":
            raise HTTPError(request.full_url, 405, "No HEAD", {}, None)  # type: ignore[arg-type]
        return FakeResponse()

    monkeypatch.setattr("nurture.content.linkcheck.urlopen", fake_urlopen)
    write_project(tmp_path, {})
    code, out = invoke(tmp_path, "check", "--online", "--timeout", "2")
    assert code == 1
    assert "library.yaml:8: article running-piece: https://example.org/run answered HTTP 404" in out
    assert "1 link(s) did not answer" in out
    assert sorted(asked) == [("GET", "https://example.org/book"),
                             ("HEAD", "https://example.org/book"),
                             ("HEAD", "https://example.org/knee"),
                             ("HEAD", "https://example.org/run")]


def test_problem_type_is_shared() -> None:
    assert isinstance(LibraryError([Problem("f", 1, "x", "y")]).problems[0], Problem)
