"""Campaign files: a valid set loads into typed campaigns, and every mistake is reported at once,
with its file, line and field, in words the author can act on."""

from __future__ import annotations

import hashlib
import textwrap
from datetime import time
from pathlib import Path

import pytest

from nurture.content.campaigns import (
    Campaign,
    load_campaign_file,
    load_campaigns,
    round_key,
    round_of,
)
from nurture.errors import CampaignError, Problem
from nurture.schedule import SendWindow, Wait

OUTREACH = """\
id: referral-outreach
name: New referral partner outreach
audience: {tags: [prospect]}
stop_on: [reply, referral]          # unsubscribe and hard bounce always stop everything
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-16:00", timezone: contact}
on_referral:
  send: thank-you                   # a step below, sent as soon as the window allows
  then_enroll: partner-care         # optional: another campaign id
steps:
  - id: hello
    subject: "Thank you for what you do at {{ contact.organization }}"
    template: appreciation.mjml
  - id: question
    wait: 5 business days
    subject: "A question for you, {{ contact.first_name }}"
    template: open-question.mjml
  - id: thank-you
    trigger_only: true              # not part of the sequence; used by on_referral
    subject: "Thank you, {{ contact.first_name }}"
    template: thank-you.mjml
"""

PARTNER_CARE = """\
id: partner-care
name: Partner care
description: A light touch every few weeks.
steps:
  - id: check-in
    wait: 6 weeks
    subject: How are things?
    template: care/check-in.mjml
  - id: article
    wait: 7 weeks
    subject: Thought you might like this
    template: care/check-in.mjml
"""


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    (folder / "care").mkdir(parents=True)
    for name in ("appreciation.mjml", "open-question.mjml", "thank-you.mjml", "care/check-in.mjml"):
        (folder / name).write_text("<mjml></mjml>")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "campaigns").mkdir()
    return tmp_path / "campaigns"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(call) -> list[tuple[int | None, str, str]]:
    """(line, field, message) of every problem `call` raises, in the order reported."""
    with pytest.raises(CampaignError) as caught:
        call()
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def file_problems(path: Path, templates: Path) -> list[tuple[int | None, str, str]]:
    return problems_of(lambda: load_campaign_file(path, templates))


# -- a valid set ------------------------------------------------------------------------------


def test_a_valid_two_campaign_set_loads(folder: Path, templates: Path) -> None:
    outreach_path = write(folder, "outreach.yaml", OUTREACH)
    write(folder, "partner-care.yml", PARTNER_CARE)

    campaigns = load_campaigns(folder, templates)

    assert sorted(campaigns) == ["partner-care", "referral-outreach"]
    outreach = campaigns["referral-outreach"]
    assert isinstance(outreach, Campaign)
    assert (outreach.name, outreach.description) == ("New referral partner outreach", "")
    assert outreach.audience_tags == ("prospect",)
    assert outreach.stop_on == frozenset({"reply", "referral"})
    assert outreach.send_window == SendWindow(frozenset(range(5)), time(9), time(16), "contact")
    assert (outreach.on_referral.send, outreach.on_referral.then_enroll) == (
        "thank-you", "partner-care")
    assert [(s.id, s.wait, s.trigger_only, s.line) for s in outreach.steps] == [
        ("hello", None, False, 10),
        ("question", Wait(5, "business_days"), False, 13),
        ("thank-you", None, True, 17),
    ]
    assert outreach.steps[1].template == "open-question.mjml"
    assert outreach.steps[0].subject == "Thank you for what you do at {{ contact.organization }}"
    assert outreach.source == outreach_path
    assert outreach.content_hash == hashlib.sha256(outreach_path.read_bytes()).hexdigest()

    assert [s.id for s in outreach.sequence()] == ["hello", "question"]
    assert outreach.next_step(None).id == "hello"
    assert outreach.next_step("hello").id == "question"
    assert outreach.next_step("question") is None
    assert outreach.next_step("thank-you") is None  # outside the sequence
    assert outreach.step("thank-you").trigger_only
    with pytest.raises(KeyError):
        outreach.step("nope")
    with pytest.raises(KeyError):
        outreach.next_step("nope")

    care = campaigns["partner-care"]
    assert care.description == "A light touch every few weeks."
    assert care.audience_tags == ()  # nobody is enrolled by tag
    assert care.stop_on == frozenset({"reply", "referral"})
    assert care.send_window is None and care.on_referral is None
    assert care.next_step(None).wait == Wait(6, "weeks")  # a first step may wait, too
    assert care.step("article").template == "care/check-in.mjml"


def test_send_window_defaults(folder: Path, templates: Path) -> None:
    text = PARTNER_CARE.replace("steps:", 'send_window: {hours: "08:30-12:00"}\nsteps:')
    campaign = load_campaign_file(write(folder, "care.yaml", text), templates)
    assert campaign.send_window == SendWindow(frozenset(range(5)), time(8, 30), time(12))
    text = PARTNER_CARE.replace("steps:", "send_window:\n  days: [sat, sun]\n  hours: 10:00-11:00"
                                          "\n  timezone: Europe/Berlin\nsteps:")
    campaign = load_campaign_file(write(folder, "care.yaml", text), templates)
    assert campaign.send_window == SendWindow(frozenset({5, 6}), time(10), time(11),
                                              "Europe/Berlin")


def test_only_campaign_files_are_read(folder: Path, templates: Path) -> None:
    write(folder, "outreach.yaml", OUTREACH.replace("  then_enroll: partner-care", ""))
    for name in ("_draft.yaml", ".hidden.yaml", "library.yaml", "notes.txt", "sub/other.yaml"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text("not: [a campaign")
    assert list(load_campaigns(folder, templates)) == ["referral-outreach"]


def test_content_hash_changes_with_the_file(folder: Path, templates: Path) -> None:
    path = write(folder, "care.yaml", PARTNER_CARE)
    before = load_campaign_file(path, templates).content_hash
    assert load_campaign_file(path, templates).content_hash == before
    write(folder, "care.yaml", PARTNER_CARE.replace("6 weeks", "5 weeks"))
    after = load_campaign_file(path, templates).content_hash
    assert after != before
    assert after == hashlib.sha256(path.read_bytes()).hexdigest()


# -- one problem each -------------------------------------------------------------------------


def test_yaml_syntax_error(folder: Path, templates: Path) -> None:
    path = write(folder, "bad.yaml", """\
        id: x
        name: X
        steps: [hello,
          bye
        """)
    with pytest.raises(CampaignError) as caught:
        load_campaign_file(path, templates)
    assert caught.value.problems == [Problem(
        str(path), 5, "", "invalid YAML: while parsing a flow sequence on line 3: "
                          "expected ',' or ']', but got '<stream end>'")]
    assert str(caught.value) == (
        f"1 problem found\n  {path}:5: invalid YAML: while parsing a flow sequence on line 3: "
        "expected ',' or ']', but got '<stream end>'")


def test_tab_indentation(folder: Path, templates: Path) -> None:
    path = write(folder, "bad.yaml", "id: x\n\tname: X\n")
    assert file_problems(path, templates) == [(2, "", (
        "invalid YAML: while scanning for the next token: "
        "found character '\\t' that cannot start any token"))]


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty; a campaign has fields id, name, steps..."),
    ("# just a comment\n", "is empty; a campaign has fields id, name, steps..."),
    ("- id: x\n- id: y\n", "must be a mapping; a campaign has fields id, name, steps..."),
    ("hello\n", "must be a mapping; a campaign has fields id, name, steps..."),
])
def test_a_file_that_is_not_a_mapping(folder: Path, templates: Path, text: str,
                                      message: str) -> None:
    assert file_problems(write(folder, "bad.yaml", text), templates) == [(1, "", message)]


def test_unknown_key_is_a_typo(folder: Path, templates: Path) -> None:
    path = write(folder, "care.yaml", PARTNER_CARE.replace("wait: 7 weeks", "wiat: 7 weeks"))
    assert file_problems(path, templates) == [
        (9, "steps[1].wait", 'is required after the first step, e.g. "5 days"'),
        (10, "steps[1].wiat", '"wiat" is not a field here; did you mean "wait"?'),
    ]


def test_unknown_key_without_a_close_match(folder: Path, templates: Path) -> None:
    path = write(folder, "care.yaml", PARTNER_CARE.replace("steps:", "colour: blue\nsteps:"))
    assert file_problems(path, templates) == [(4, "colour", (
        '"colour" is not a field here; expected one of: id, name, description, audience, '
        "stop_on, send_window, on_referral, steps, repeat_from"))]


def test_bad_duration(folder: Path, templates: Path) -> None:
    path = write(folder, "care.yaml", PARTNER_CARE.replace("7 weeks", "5 buisness days"))
    assert file_problems(path, templates) == [(10, "steps[1].wait", (
        '"5 buisness days" is not a duration; use N minutes|hours|days|weeks|business days'))]


def test_missing_template(folder: Path, templates: Path) -> None:
    text = PARTNER_CARE.replace("care/check-in.mjml", "care/gone.mjml", 1)
    path = write(folder, "care.yaml", text)
    assert file_problems(path, templates) == [
        (8, "steps[0].template", f'template "care/gone.mjml" not found in {templates}')]


def test_template_outside_the_templates_folder(folder: Path, templates: Path) -> None:
    (templates.parent / "secret.mjml").write_text("x")
    text = PARTNER_CARE.replace("care/check-in.mjml", "../secret.mjml", 1)
    path = write(folder, "care.yaml", text)
    assert file_problems(path, templates) == [(8, "steps[0].template", (
        f'"../secret.mjml" must be a path inside the templates folder {templates}'))]


def test_duplicate_step_ids(folder: Path, templates: Path) -> None:
    path = write(folder, "care.yaml", PARTNER_CARE.replace("id: article", "id: check-in"))
    assert file_problems(path, templates) == [
        (9, "steps[1].id", '"check-in" is already the id of steps[0]')]


def test_duplicate_yaml_key(folder: Path, templates: Path) -> None:
    text = PARTNER_CARE.replace("    wait: 7 weeks", "    wait: 7 weeks\n    wait: 8 weeks")
    path = write(folder, "care.yaml", text)
    assert file_problems(path, templates) == [
        (11, "steps[1].wait", '"wait" is given twice (also on line 10); keep one')]


def test_on_referral_send_names_a_missing_step(folder: Path, templates: Path) -> None:
    path = write(folder, "outreach.yaml", OUTREACH.replace("send: thank-you", "send: thanks"))
    assert file_problems(path, templates) == [
        (7, "on_referral.send", 'no step has id "thanks"; did you mean "thank-you"?')]


def test_on_referral_send_names_a_sequence_step(folder: Path, templates: Path) -> None:
    path = write(folder, "outreach.yaml", OUTREACH.replace("send: thank-you", "send: question"))
    assert file_problems(path, templates) == [(7, "on_referral.send", (
        'step "question" is in the sequence, so everyone would get it in turn too; '
        "give it `trigger_only: true`"))]


def test_on_referral_needs_something_to_do(folder: Path, templates: Path) -> None:
    text = OUTREACH.replace("  send: thank-you", "").replace("  then_enroll: partner-care", "")
    path = write(folder, "outreach.yaml", text.replace("on_referral:", "on_referral: {}"))
    assert file_problems(path, templates) == [
        (6, "on_referral", "give send (a step id), then_enroll (a campaign) or both")]


def test_missing_required_fields_point_at_their_parent(folder: Path, templates: Path) -> None:
    text = PARTNER_CARE.replace("name: Partner care\n", "")
    path = write(folder, "care.yaml", text.replace("    subject: Thought you might like this", ""))
    assert file_problems(path, templates) == [
        (1, "name", "is required"),  # the campaign's mapping starts on line 1
        (8, "steps[1].subject", "is required"),  # the line of "- id: article"
    ]


def test_step_rules(folder: Path, templates: Path) -> None:
    path = write(folder, "x.yaml", """\
        id: x
        name: X
        steps:
          - id: only-on-demand
            trigger_only: true
            wait: 1 day
            subject: S
            template: thank-you.mjml
        """)
    assert file_problems(path, templates) == [
        (3, "steps", "every step is trigger_only; add one that is sent in turn"),
        (6, "steps[0].wait", "a trigger_only step is sent as soon as the send window allows; "
                             "remove the wait"),
    ]


# -- repeat_from: rounds for long-term care ---------------------------------------------------


def test_repeat_from_starts_a_new_round_after_the_last_step(folder: Path,
                                                             templates: Path) -> None:
    text = PARTNER_CARE.replace("steps:", "repeat_from: check-in\nsteps:")
    care = load_campaign_file(write(folder, "care.yaml", text), templates)
    assert care.repeat_from == "check-in"
    assert care.next_step("article") is None  # the sequence itself still ends there...
    check_in, article = care.steps
    assert care.following("check-in", 1) == (article, 1)
    assert care.following("article", 1) == (check_in, 2)  # ...and the next round begins
    assert care.following("article", 7) == (check_in, 8)
    outreach = load_campaign_file(write(folder, "outreach.yaml", OUTREACH), templates)
    assert outreach.repeat_from is None and outreach.following("question", 1) is None
    assert outreach.following("thank-you", 1) is None


def test_a_round_is_part_of_a_touch_key() -> None:
    assert [round_key(n) for n in (1, 2, 10)] == ["", "round-2", "round-10"]
    assert [round_of(round_key(n)) for n in (1, 2, 10)] == [1, 2, 10]
    for triggered in ("2026-12-07", "round-", "round-1", "round-x", "rounds-2", "preview"):
        assert round_of(triggered) is None, triggered


@pytest.mark.parametrize(("change", "message"), [
    ("repeat_from: chek-in", 'no step has id "chek-in"; did you mean "check-in"?'),
    ("repeat_from: thanks", 'step "thanks" is trigger_only; a round repeats steps of the '
                            "sequence"),
    ("repeat_from: hello", 'step "hello" has no wait, so a new round would follow the last '
                           'step at once; give steps[0] a wait, e.g. "6 weeks"'),
    ("repeat_from: Check-In", '"Check-In" is not an id; use lowercase letters, digits and '
                              "hyphens"),
    ("repeat_from: [check-in]", "must be text"),
])
def test_repeat_from_names_a_step_that_waits(folder: Path, templates: Path, change: str,
                                             message: str) -> None:
    text = """\
        id: care
        name: Care
        {change}
        steps:
          - id: hello
            subject: Hi
            template: appreciation.mjml
          - id: check-in
            wait: 6 weeks
            subject: How are things?
            template: care/check-in.mjml
          - id: thanks
            trigger_only: true
            subject: Thanks
            template: thank-you.mjml
        """.replace("{change}", change)
    path = write(folder, "care.yaml", text)
    assert file_problems(path, templates) == [(3, "repeat_from", message)]
    fixed = text.replace(change, "repeat_from: check-in")
    assert load_campaign_file(write(folder, "care.yaml", fixed), templates).repeat_from == (
        "check-in")


# -- several problems, several files ----------------------------------------------------------


def test_several_problems_in_one_file_are_reported_at_once(folder: Path,
                                                           templates: Path) -> None:
    path = write(folder, "bad.yaml", """\
        id: Referral Outreach
        name: X
        stop_on: [reply, unsubscribe]
        send_window: {days: [mon, monday], hours: "16:00-09:00", timezone: Mars/Base}
        on_referral: {send: thank-you, then_enroll: Referral Outreach}
        steps:
          - id: hello
            subject: 42
            template: missing.mjml
          - id: hello
            wait: soon
            subject: Again
            template: appreciation.mjml
            trigger_only: "no"
        """)
    assert file_problems(path, templates) == [
        (1, "id", '"Referral Outreach" is not an id; use lowercase letters, digits and hyphens'),
        (3, "stop_on[1]", '"unsubscribe" is not one of reply or referral'),
        (4, "send_window.days[1]", '"monday" is not one of mon, tue, wed, thu, fri, sat or sun'),
        (4, "send_window.hours", '"16:00-09:00": the start must be before the end'),
        (4, "send_window.timezone", (
            '"Mars/Base" is not a known time zone; use an IANA name such as America/New_York')),
        (5, "on_referral.send", 'no step has id "thank-you"; expected one of: hello'),
        (5, "on_referral.then_enroll", (
            '"Referral Outreach" is not an id; use lowercase letters, digits and hyphens')),
        (8, "steps[0].subject", "must be text"),
        (9, "steps[0].template", f'template "missing.mjml" not found in {templates}'),
        (10, "steps[1].id", '"hello" is already the id of steps[0]'),
        (11, "steps[1].wait", (
            '"soon" is not a duration; use N minutes|hours|days|weeks|business days')),
        (14, "steps[1].trigger_only", "must be true or false"),
    ]


def test_then_enroll_names_a_missing_campaign_in_another_file(folder: Path,
                                                             templates: Path) -> None:
    text = OUTREACH.replace("then_enroll: partner-care", "then_enroll: partner-cares")
    outreach = write(folder, "outreach.yaml", text)
    write(folder, "partner-care.yaml", PARTNER_CARE)
    assert problems_of(lambda: load_campaigns(folder, templates)) == [(
        8, "on_referral.then_enroll",
        'no campaign has id "partner-cares"; did you mean "partner-care"?')]
    # the same file on its own is fine: other campaigns are checked only with load_campaigns
    assert load_campaign_file(outreach, templates).on_referral.then_enroll == "partner-cares"


def test_duplicate_campaign_id_across_two_files(folder: Path, templates: Path) -> None:
    first = write(folder, "a.yaml", PARTNER_CARE)
    second = write(folder, "b.yaml", PARTNER_CARE.replace("Partner care", "Another"))
    with pytest.raises(CampaignError) as caught:
        load_campaigns(folder, templates)
    assert caught.value.problems == [
        Problem(str(second), 1, "id", f'campaign id "partner-care" is already used by {first}')]


def test_problems_from_every_file_are_reported_together(folder: Path, templates: Path) -> None:
    a = write(folder, "a.yaml", "id: a\nname: A\nsteps: [\n")
    b = write(folder, "b.yaml", PARTNER_CARE.replace("6 weeks", "6 wks"))
    c = write(folder, "c.yaml", OUTREACH)  # then_enroll: partner-care, which b still defines
    with pytest.raises(CampaignError) as caught:
        load_campaigns(folder, templates)
    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [
        (str(a), 4, ""), (str(b), 6, "steps[0].wait")]
    assert str(c) not in str(caught.value)


def test_a_missing_folder(tmp_path: Path, templates: Path) -> None:
    assert problems_of(lambda: load_campaigns(tmp_path / "nope", templates)) == [
        (None, "", "not a folder of campaigns")]


def test_then_enroll_cannot_name_its_own_campaign(folder: Path, templates: Path) -> None:
    text = OUTREACH.replace("then_enroll: partner-care", "then_enroll: referral-outreach")
    assert file_problems(write(folder, "outreach.yaml", text), templates) == [
        (8, "on_referral.then_enroll", "a campaign cannot enroll into itself")]
