"""The schema of a campaign file: pydantic models for shape, types and single values
(layer 2 of :mod:`nurture.content.campaigns`), and the checks across fields (layer 3).

Both work on the parsed YAML alone, so one pass reports every problem of a file, each at its
field (``steps[1].wait``); :mod:`nurture.content.campaigns` turns a file that passes into a
frozen :class:`~nurture.content.campaigns.Campaign`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from ..outbound.render import layout_file
from ..schedule import parse_hours, parse_wait, zone_named
from .yamlfile import hint as _hint

SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
MATCH_DEFAULT = ("interests", "role")

# -- layer 2: shape, types and single values --------------------------------------------------


def _slug(value: str) -> str:
    if not SLUG.fullmatch(value):
        raise ValueError(f'"{value}" is not an id; use lowercase letters, digits and hyphens')
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _templates_dir(info: ValidationInfo) -> Path:
    """The templates folder, passed in the validation context by the loader."""
    assert isinstance(info.context, dict)
    return Path(info.context["templates_dir"])


def _template(value: str, info: ValidationInfo) -> str:
    root = _templates_dir(info)
    path = root / value
    if Path(value).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f'"{value}" must be a path inside the templates folder {root}')
    if not path.is_file():
        raise ValueError(f'template "{value}" not found in {root}')
    return value


def _layout(value: str, info: ValidationInfo) -> str:
    _slug(value)
    root = _templates_dir(info)
    if not (root / layout_file(value)).is_file():
        raise ValueError(f'layout "{value}" needs the file {layout_file(value)} in {root}')
    return value


def _check(parse: Any) -> AfterValidator:
    """Validate a string with a schedule parser but keep the string; `_build` parses it again."""
    return AfterValidator(lambda value: (parse(value), value)[1])


Slug = Annotated[str, AfterValidator(_slug)]
Text = Annotated[str, AfterValidator(_text)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # schedule.WEEKDAYS


class _Strict(BaseModel):
    # strict: `trigger_only: "no"` is an error, not True; forbid: `wiat:` is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _RawAudience(_Strict):
    tags: list[Text] = []


class _RawWindow(_Strict):
    days: Annotated[list[Weekday], Field(min_length=1)] = ["mon", "tue", "wed", "thu", "fri"]
    hours: Annotated[str, _check(parse_hours)]
    timezone: Annotated[str, _check(lambda name: name == "contact" or zone_named(name))] = "contact"


class _RawOnReferral(_Strict):
    send: Slug | None = None
    then_enroll: Slug | None = None


class _RawContent(_Strict):
    kind: Literal["article", "book"]
    match: list[Literal["interests", "role"]] = ["interests", "role"]  # MATCH_DEFAULT


class _RawStep(_Strict):
    id: Slug
    subject: Text
    template: Annotated[str, AfterValidator(_template)]
    wait: Annotated[str, _check(parse_wait)] | None = None
    trigger_only: bool = False
    content: _RawContent | None = None
    thread: Slug | None = None
    layout: Annotated[str, AfterValidator(_layout)] = "personal"


class RawCampaign(_Strict):
    id: Slug
    name: Text
    description: str = ""
    audience: _RawAudience = _RawAudience()
    stop_on: list[Literal["reply", "referral"]] = ["reply", "referral"]
    send_window: _RawWindow | None = None
    on_referral: _RawOnReferral | None = None
    steps: Annotated[list[_RawStep], Field(min_length=1)]
    repeat_from: Slug | None = None


# The model of the mapping at a path (list indexes left out), to name the fields it takes.
MODELS: dict[str, type[BaseModel]] = {
    "": RawCampaign, "audience": _RawAudience, "send_window": _RawWindow,
    "on_referral": _RawOnReferral, "steps": _RawStep, "steps.content": _RawContent,
}
# -- layer 3: checks across fields ------------------------------------------------------------


def cross_checks(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems that involve more than one field, as (field path, message).

    Reads the raw data defensively instead of the validated model, so that these problems are
    reported together with those of layer 2 rather than only once those are fixed.
    """
    found: list[tuple[str, str]] = []
    listed = data.get("steps")
    steps: list[dict[str, Any]] = [
        s if isinstance(s, dict) else {"trigger_only": True}  # see layer 2
        for s in (listed if isinstance(listed, list) else [])]
    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if isinstance(sid := step.get("id"), str) and sid in ids:
            found.append((f"steps[{i}].id", f'"{sid}" is already the id of steps[{ids[sid]}]'))
        elif isinstance(sid, str):
            ids[sid] = i
    sequence = [i for i, step in enumerate(steps) if step.get("trigger_only") is not True]
    if steps and not sequence:
        found.append(("steps", "every step is trigger_only; add one that is sent in turn"))
    for i, step in enumerate(steps):
        if i in sequence[1:] and step.get("wait") is None:
            found.append((f"steps[{i}].wait", 'is required after the first step, e.g. "5 days"'))
        elif i not in sequence and step.get("wait") is not None:
            found.append((f"steps[{i}].wait", "a trigger_only step is sent as soon as the send "
                                              "window allows; remove the wait"))
    found += _step_links(steps, ids)
    found += _repeat(data.get("repeat_from"), steps, ids)
    if isinstance(on_referral := data.get("on_referral"), dict):
        send, enroll = on_referral.get("send"), on_referral.get("then_enroll")
        if send is None and enroll is None:
            found.append(("on_referral", "give send (a step id), then_enroll (a campaign) or both"))
        if isinstance(send, str) and send not in ids:
            found.append(("on_referral.send", f'no step has id "{send}"{_hint(send, list(ids))}'))
        elif isinstance(send, str) and ids[send] in sequence:
            found.append(("on_referral.send", f'step "{send}" is in the sequence, so everyone '
                          "would get it in turn too; give it `trigger_only: true`"))
        if enroll is not None and enroll == data.get("id"):
            found.append(("on_referral.then_enroll", "a campaign cannot enroll into itself"))
    return found


def _step_links(steps: list[dict[str, Any]], ids: dict[str, int]) -> list[tuple[str, str]]:
    """`thread` names an earlier step; the card layout shows a picked item, so needs content."""
    found: list[tuple[str, str]] = []
    for i, step in enumerate(steps):
        target = step.get("thread")
        if isinstance(target, str) and target not in ids:
            found.append((f"steps[{i}].thread",
                          f'no step has id "{target}"{_hint(target, list(ids))}'))
        elif isinstance(target, str) and ids[target] == i:
            found.append((f"steps[{i}].thread", "a step cannot reply to itself"))
        elif isinstance(target, str) and ids[target] > i:
            found.append((f"steps[{i}].thread", f'step "{target}" comes later (steps'
                          f"[{ids[target]}]); a step can only reply to an earlier one"))
        if step.get("layout") == "card" and step.get("content") is None:
            found.append((f"steps[{i}].layout", "the card layout shows an item from the library; "
                          "add content: {kind: article} (or book), or use layout: personal"))
    return found


def _repeat(target: Any, steps: list[dict[str, Any]], ids: dict[str, int]
            ) -> list[tuple[str, str]]:
    """``repeat_from`` names a step of the sequence that waits: a round starts with it."""
    if not isinstance(target, str):
        return []
    if target not in ids:
        return [("repeat_from", f'no step has id "{target}"{_hint(target, list(ids))}')]
    step = steps[ids[target]]
    if step.get("trigger_only") is True:
        return [("repeat_from", f'step "{target}" is trigger_only; a round repeats steps of '
                 "the sequence")]
    if step.get("wait") is None:
        return [("repeat_from", f'step "{target}" has no wait, so a new round would follow '
                 f'the last step at once; give steps[{ids[target]}] a wait, e.g. "6 weeks"')]
    return []


