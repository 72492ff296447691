"""A nurture project folder: create one (``nurture init``) and check one (``nurture validate``).

Validation renders every step of every campaign against a sample contact (once with every field
filled, once with the optional ones empty) and, for a step that picks from the content library,
against every item it could pick, so a missing field or a broken template fails here, not in
someone's inbox.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .content.campaigns import Campaign, Step, load_campaigns
from .content.library import Item, Library, LibraryError, load_library
from .errors import CampaignError, NurtureError, Problem
from .outbound.render import Renderer
from .outbound.samples import sample_context
from .settings import CONFIG_FILE, Settings

SKELETON = Path(__file__).parent / "skeleton"


@dataclass
class InitResult:
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already there: never overwritten


def init_project(folder: Path, *, force: bool = False) -> InitResult:
    """Write the starter project into ``folder``, whole or not at all.

    A folder that holds a project already (its nurture.toml) is refused unless ``force``; then
    the starter files it lacks are added and every file already there is kept. Everything is
    written into a temporary folder beside it first, then moved in, nurture.toml last: a crash
    leaves no project (nurture.toml marks one) rather than half of one.
    """
    folder = folder.resolve()
    if (folder / CONFIG_FILE).exists() and not force:
        raise NurtureError(f"{folder / CONFIG_FILE}: a project is here already; `nurture init "
                           "--force` adds the starter files it lacks and keeps every file")
    sources = _skeleton_files()
    if not any(p.name == CONFIG_FILE for p in sources):
        raise NurtureError(f"{SKELETON}: the starter project is missing from this "
                           "installation; reinstall nurture")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.init-", dir=folder.parent))
    result = InitResult()
    try:
        for source in sources:
            target = staging / source.relative_to(SKELETON)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.name == CONFIG_FILE:
                text = source.read_text(encoding="utf-8")
                target.write_text(text.replace("GENERATED-SECRET", secrets.token_urlsafe(32)),
                                  encoding="utf-8")
            else:
                shutil.copyfile(source, target)
        relative = [s.relative_to(SKELETON) for s in sources]
        if not folder.exists():
            os.rename(staging, folder)  # the whole project appears at once
            result.created = [folder / r for r in relative]
            return result
        # Into an existing folder (maybe the current one: it must stay the same folder), file by
        # file, nurture.toml last.
        for rel in sorted(relative, key=lambda r: r.name == CONFIG_FILE):
            target = folder / rel
            if target.exists():
                result.kept.append(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
            result.created.append(target)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _skeleton_files() -> list[Path]:
    # In a checkout, campaigns/ and templates/ in the skeleton link to the top-level ones: follow
    # the links. In a wheel they are real files, copied there when it was built.
    found = [Path(root) / name for root, _dirs, names in os.walk(SKELETON, followlinks=True)
             for name in names]
    return sorted(p for p in found if "__pycache__" not in p.parts)


@dataclass
class Validation:
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_project(settings: Settings) -> Validation:
    """Check settings, every campaign and every template, and list every problem at once."""
    result = Validation(problems=settings.identity_problems())
    try:
        result.campaigns = load_campaigns(settings.campaigns_dir, settings.templates_dir)
    except CampaignError as exc:
        result.problems.extend(exc.problems)
        return result
    renderer = Renderer(settings.templates_dir)
    sender = {"name": settings.sender_name or "Sample Sender",
              "email": settings.sender_email or "sender@example.org",
              "title": settings.sender_title,
              "practice": settings.practice_name or "Sample Practice",
              "signature": settings.sender_signature}
    practice = {"name": settings.practice_name or "Sample Practice",
                "address": settings.practice_address or "1 Sample Street, Springfield",
                "phone": settings.practice_phone, "website": settings.practice_website}
    context = sample_context(practice=practice, sender=sender)
    library = _library(settings, result.problems)
    for campaign in result.campaigns.values():
        for index, step in enumerate(campaign.steps):
            step_context = {**context, "campaign": {"id": campaign.id, "name": campaign.name},
                            "step": {"id": step.id, "layout": step.layout}}
            field = f"{campaign.source.name}: steps[{index}] ({step.id})"
            for item, where in _items(campaign, index, step, library, result.problems):
                result.problems.extend(renderer.check(
                    step.template, step.subject, {**step_context, "item": item and item.view()},
                    field=f"{field}{where}", layout=step.layout))
    return result


def _library(settings: Settings, problems: list[Problem]) -> Library | None:
    try:
        return load_library(settings.campaigns_dir)
    except LibraryError as exc:
        problems.extend(exc.problems)
        return None


def _items(campaign: Campaign, index: int, step: Step, library: Library | None,
           problems: list[Problem]) -> list[tuple[Item | None, str]]:
    """What ``item`` can be when the step is sent: nothing, or each item it could pick."""
    if step.content is None:
        return [(None, "")]
    if library is None:  # its problems are listed already
        return []
    items = library.of_kind(step.content.kind)
    if not items:
        problems.append(Problem(str(campaign.source), step.line, f"steps[{index}].content",
                                f"the library has no {step.content.kind}s to pick from; add "
                                "some to library.yaml beside the campaigns"))
    return [(item, f" with {item.kind} {item.id}") for item in items]
