"""The README is part of the product: its commands, settings and examples must be true."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import pytest

from nurture.cli import main
from nurture.content.campaigns import load_campaigns
from nurture.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "nurture") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found += _commands(command, path) if isinstance(command, click.Group) else [path]
    return found


@pytest.mark.parametrize("command", _commands(main))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}" in README, f"{command} is missing from the README's command table"


@pytest.mark.parametrize("name", [f.name for f in fields(Settings)
                                  if f.name not in ("project_dir", "sources")])
def test_every_setting_is_documented(name: str) -> None:
    section, _, key = name.partition("_")
    if name == "secret_key":
        assert "`secret_key`" in README and "NURTURE_SECRET_KEY" in README
        return
    row = re.search(rf"^\| `\[{section}\] [^|]*\b{key}\b[^|]*` \|.*$", README, re.M)
    assert row, f"[{section}] {key} is missing from the README's settings table"


def test_readme_campaign_example_is_valid(tmp_path: Path) -> None:
    example = re.search(r"```yaml\n(.*?)```", README, re.S).group(1)  # type: ignore[union-attr]
    (tmp_path / "referral-outreach.yaml").write_text(example)
    shutil.copy(REPO / "campaigns" / "partner-care.yaml", tmp_path)
    campaigns = load_campaigns(tmp_path, REPO / "templates")
    outreach = campaigns["referral-outreach"]
    assert [s.id for s in outreach.sequence()] == ["hello", "question", "check-in"]
    assert outreach.on_referral is not None and outreach.on_referral.then_enroll == "partner-care"


def test_quickstart_runs_on_embedded_defaults(tmp_path: Path) -> None:
    demo = Path("/tmp") / f"nr-qs-{os.getpid()}"  # short: the Redis socket lives in it
    try:
        result = subprocess.run([str(REPO / "scripts" / "quickstart"), "--burst"],
                                env={**os.environ, "NURTURE_DEMO_DIR": str(demo)},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "referral-outreach: 6 enrolled" in result.stdout
        assert "redis:    embedded redis-server" in result.stdout
        assert f"mail:     outbox folder {demo}/outbox" in result.stdout
        assert (demo / "nurture.db").is_file()
        assert not (demo / ".nurture" / "redis.sock").exists()
    finally:
        shutil.rmtree(demo, ignore_errors=True)


def _layout_paths() -> set[str]:
    """The paths the README's Layout block names, read by their indentation."""
    block = README.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    paths, stack = set(), []
    for line in block.splitlines():
        name = line.strip().split()[0] if line.strip() else ""
        if not name:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        stack = stack[:depth]
        path = "".join(stack) + name
        paths.add(path)
        if name.endswith("/"):
            stack.append(name)
    return paths


def test_the_readme_layout_lists_every_module_and_nothing_else() -> None:
    """A newcomer finds where a behaviour lives from the Layout section: it must be the tree."""
    modules = {str(p.relative_to(REPO)) for p in (REPO / "nurture").rglob("*.py")
               if "migrations" not in p.parts and not (
                   p.name == "__init__.py" and p.parent != REPO / "nurture"
                   and p.parent.name != "cli")}
    listed = {p for p in _layout_paths() if p.startswith("nurture/") and p.endswith(".py")}
    assert sorted(modules - listed) == [], "modules missing from the README's Layout"
    assert sorted(listed - modules) == [], "the README's Layout names modules that do not exist"


def test_the_public_api_loads_lazily_and_every_name_resolves() -> None:
    """`import nurture` (and so `nurture --help`) loads no database, Redis or template library;
    every name in ``nurture.__all__`` still resolves, to the object its module defines."""
    code = ("import sys, nurture; heavy = [m for m in ('sqlalchemy', 'redis', 'rq', 'jinja2') "
            "if m in sys.modules]; print(heavy); import importlib; "
            "[getattr(nurture, name) for name in nurture.__all__]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout.split()
    assert out == ["[]", "ok"]
