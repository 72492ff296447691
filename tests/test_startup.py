"""Commands start fast: help imports nothing heavy. (The times are measured in bench/startup.py;
tests check what is imported, not how long it takes.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nurture.cli import main
from tests.conftest import REPO

HEAVY = ["sqlalchemy", "alembic", "redis", "rq", "flask", "werkzeug", "waitress", "jinja2",
         "mrml", "mjml", "pydantic", "yaml", "psycopg", "dateparser", "imapclient", "nurture.app",
         "nurture.db", "nurture.models", "nurture.engine"]

PROBE = """
import json, sys
from nurture.cli import main
try:
    main(sys.argv[1:], prog_name="nurture")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in json.loads(sys.stdin.read()) if m in sys.modules)),
      file=sys.stderr)
"""


def _help_commands() -> list[list[str]]:
    found = [["--help"]]
    for name, command in main.commands.items():
        found.append([name, "--help"])
        for sub in getattr(command, "commands", {}):
            found.append([name, sub, "--help"])
    return found


@pytest.mark.parametrize("args", _help_commands(), ids=" ".join)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], input=json.dumps(HEAVY),
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
