"""Campaign YAML files → strict, typed, validated campaigns.

A campaign file is written by a person, so a mistake in it is reported the way a compiler would:
every problem at once, each with file, line and field (`steps[1].wait`) and a message saying how
to fix it. Unknown keys are errors: a `wiat:` silently ignored sends an email at the wrong time.

Validation has three layers, all run so that one pass reports everything:
1. PyYAML composes the document into nodes, which remember their lines
(:mod:`nurture.content.yamlfile`);
2. pydantic checks shape, types and single values (the `_Raw*` models of
   :mod:`nurture.content.campaign_schema`);
3. checks across fields (`cross_checks`, there too) and across files (`load_campaigns`).
Only a file that passes all of them becomes a frozen :class:`Campaign`.

A step may also pick an item from the content library (``content: {kind: article}``, see
:mod:`nurture.content.library`), show it in another layout (``layout: card``:
``templates/_card.mjml``)
and be sent as a reply to an earlier step (``thread: hello``). Whether the library has items of
that kind is checked by ``nurture validate``, which reads both.

A campaign that keeps a relationship going for years says ``repeat_from: <step id>``: after its
last step the sequence goes on at that step again, round after round, until the enrollment
stops. Each pass is a *round*; a touch's round is part of its identity (see :func:`round_key`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import CampaignError, Problem
from ..schedule import WEEKDAYS, SendWindow, Wait, parse_hours, parse_wait
from .campaign_schema import MATCH_DEFAULT, MODELS, SLUG, RawCampaign, cross_checks
from .yamlfile import ancestors as _ancestors
from .yamlfile import hint as _hint
from .yamlfile import line_of, parse, pydantic_problems

RESERVED_FILES = frozenset({"library.yaml", "library.yml"})  # the content library
#: The trigger key of a sequence touch after the first round: "round-2", "round-3"...
ROUND_PREFIX = "round-"


def round_key(round_: int) -> str:
    """The trigger key of a sequence touch in round ``round_`` (1 is the first pass: "").

    A touch is unique per (enrollment, step, trigger key), so the round is what tells the
    second "check-in" of a repeating campaign from the first one. Triggered touches (a
    thank-you) use another key, the occasion (a date), which never starts with "round-".
    """
    return "" if round_ == 1 else f"{ROUND_PREFIX}{round_}"


def round_of(trigger_key: str) -> int | None:
    """The round of a sequence touch from its trigger key; None for a triggered touch."""
    if trigger_key == "":
        return 1
    number = trigger_key.removeprefix(ROUND_PREFIX)
    if number != trigger_key and number.isdigit() and int(number) >= 2:
        return int(number)
    return None


@dataclass(frozen=True)
class Content:
    """What a step picks from the library: an item of `kind` this contact has never been sent,
    preferring items related to the contact's fields in `match`, in that order."""

    kind: str  # article, book
    match: tuple[str, ...] = MATCH_DEFAULT


@dataclass(frozen=True)
class Step:
    """One email of a campaign; `line` lets later messages point back at the YAML.

    `thread` names an earlier step: this one is then sent as a reply to it (when it was sent).
    `layout` is the name of the layout the body is wrapped in (`personal`: `_layout.mjml`).
    """

    id: str
    subject: str
    template: str
    wait: Wait | None
    trigger_only: bool
    line: int
    content: Content | None = None
    thread: str | None = None
    layout: str = "personal"


@dataclass(frozen=True)
class OnReferral:
    """What a referral from the contact sets off: a thank-you step, a move to another campaign."""

    send: str | None
    then_enroll: str | None


@dataclass(frozen=True)
class Campaign:
    """A validated campaign. `content_hash` lets the engine notice that a file was edited."""

    id: str
    name: str
    description: str
    audience_tags: tuple[str, ...]
    stop_on: frozenset[str]
    send_window: SendWindow | None
    on_referral: OnReferral | None
    steps: tuple[Step, ...]
    source: Path
    content_hash: str
    repeat_from: str | None = None  # the step each new round starts at; None: no rounds

    def sequence(self) -> tuple[Step, ...]:
        """The steps everyone receives in turn, leaving out the trigger_only ones."""
        return tuple(step for step in self.steps if not step.trigger_only)

    def step(self, step_id: str) -> Step:
        """The step called `step_id`; KeyError if there is none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f'campaign "{self.id}" has no step "{step_id}"')

    def next_step(self, step_id: str | None) -> Step | None:
        """The sequence step after `step_id` (None: the first), or None after the last one.

        A trigger_only step is outside the sequence, so nothing follows it.
        """
        sequence = self.sequence()
        if step_id is None:
            return sequence[0]
        current = self.step(step_id)
        if current.trigger_only or current is sequence[-1]:
            return None
        return sequence[sequence.index(current) + 1]

    def following(self, step_id: str, round_: int) -> tuple[Step, int] | None:
        """The sequence step after ``step_id`` in round ``round_``, with its round.

        After the last step a repeating campaign starts the next round at ``repeat_from``;
        any other ends (None).
        """
        following = self.next_step(step_id)
        if following is not None:
            return following, round_
        if self.repeat_from is not None and not self.step(step_id).trigger_only:
            return self.step(self.repeat_from), round_ + 1
        return None


def load_campaign_file(path: Path, templates_dir: Path) -> Campaign:
    """Load and validate one campaign file; CampaignError lists every problem in it."""
    loaded = _Loaded.read(path, templates_dir)
    if loaded.campaign is None:
        raise CampaignError(loaded.problems)
    return loaded.campaign


def load_campaigns(campaigns_dir: Path, templates_dir: Path) -> dict[str, Campaign]:
    """Load every campaign in `campaigns_dir` (not its subfolders) as {id: campaign}.

    All files are read even when one is broken, and checked against each other (duplicate ids,
    then_enroll naming a campaign that does not exist), so one CampaignError lists everything.
    Files named `_*`, `.*` or library.yaml are not campaigns.
    """
    if not campaigns_dir.is_dir():
        raise CampaignError([Problem(str(campaigns_dir), None, "", "not a folder of campaigns")])
    loaded = [
        _Loaded.read(path, templates_dir) for path in sorted(campaigns_dir.iterdir())
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file()
        and not path.name.startswith(("_", ".")) and path.name.lower() not in RESERVED_FILES
    ]
    problems = [problem for item in loaded for problem in item.problems]
    owners: dict[str, _Loaded] = {}
    for item in loaded:
        if isinstance(cid := item.raw("id"), str) and cid in owners:
            message = f'campaign id "{cid}" is already used by {owners[cid].file}'
            problems.append(item.problem("id", message))
        elif isinstance(cid, str):
            owners[cid] = item
    known = sorted(cid for cid in owners if SLUG.fullmatch(cid))
    flagged = {(problem.file, problem.field) for problem in problems}
    for item in loaded:
        target = item.raw("on_referral", "then_enroll")
        if isinstance(target, str) and target not in owners and target != item.raw("id") \
                and (item.file, "on_referral.then_enroll") not in flagged:
            message = f'no campaign has id "{target}"{_hint(target, known)}'
            problems.append(item.problem("on_referral.then_enroll", message))
    if problems:
        raise CampaignError(problems)
    return {item.campaign.id: item.campaign for item in loaded if item.campaign}


# -- one file, through the three layers -------------------------------------------------------


@dataclass
class _Loaded:
    """One file, as far as it could be read: its problems, and the campaign when there are none."""

    file: str
    data: Any
    lines: dict[str, int]
    problems: list[Problem]
    campaign: Campaign | None = None

    @classmethod
    def read(cls, path: Path, templates_dir: Path) -> _Loaded:
        file = str(path)
        try:
            content = path.read_bytes()
            data, lines, found = parse(content, file, CampaignError)
        except OSError as exc:
            return cls(file, None, {}, [Problem(file, None, "", f"cannot be read: {exc.strerror}")])
        except CampaignError as exc:
            return cls(file, None, {}, exc.problems)
        loaded, raw = cls(file, data, lines, []), None
        if not isinstance(data, dict):
            empty = "is empty" if data is None else "must be a mapping"
            found = [("", f"{empty}; a campaign has fields id, name, steps...")]
        else:
            try:
                raw = RawCampaign.model_validate(data, context={"templates_dir": templates_dir})
            except ValidationError as error:
                found += pydantic_problems(error, MODELS)
            flagged = {field for field, _ in found}  # say no more about a field already wrong
            found += [(field, message) for field, message in cross_checks(data)
                      if not any(a in flagged for a in _ancestors(field))]
        loaded.problems = [loaded.problem(field, message) for field, message in found]
        if raw and not found:
            loaded.campaign = _build(raw, lines, path, hashlib.sha256(content).hexdigest())
        return loaded

    def raw(self, *keys: str) -> Any:
        """A value of the file's data, or None; for checks across files, even on broken files."""
        value = self.data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def problem(self, field: str, message: str) -> Problem:
        """A Problem at `field`, on its line or, when it is missing, on its parent's."""
        return Problem(self.file, line_of(self.lines, field), field, message)


def _build(raw: RawCampaign, lines: dict[str, int], source: Path, digest: str) -> Campaign:
    """The frozen Campaign of a file that passed every check."""
    window = None
    if raw.send_window:
        days = frozenset(WEEKDAYS.index(day) for day in raw.send_window.days)
        start, end = parse_hours(raw.send_window.hours)
        window = SendWindow(days, start, end, raw.send_window.timezone)
    referral = OnReferral(raw.on_referral.send, raw.on_referral.then_enroll) \
        if raw.on_referral else None
    steps = tuple(
        Step(s.id, s.subject, s.template, parse_wait(s.wait) if s.wait else None, s.trigger_only,
             line_of(lines, f"steps[{i}]") or 1,
             Content(s.content.kind, tuple(s.content.match)) if s.content else None,
             s.thread, s.layout)
        for i, s in enumerate(raw.steps)
    )
    return Campaign(raw.id, raw.name, raw.description, tuple(raw.audience.tags),
                    frozenset(raw.stop_on), window, referral, steps, source, digest,
                    raw.repeat_from)
