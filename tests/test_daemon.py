"""The worker daemon's children enqueue jobs by name: the names must be the real functions."""

from __future__ import annotations

import subprocess
import sys

from rq.utils import resolve_function_reference

from nurture.worker.jobs import inbox_job, tick_job
from nurture.worker.schedulers import INBOX_JOB, TICK_JOB, by_name


def test_the_cron_jobs_are_enqueued_under_the_names_of_the_real_functions() -> None:
    for path, real in ((TICK_JOB, tick_job), (INBOX_JOB, inbox_job)):
        assert resolve_function_reference(by_name(path)) == resolve_function_reference(real)


def test_a_scheduler_child_imports_neither_the_database_nor_the_jobs() -> None:
    code = ("import sys, nurture.worker.schedulers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'alembic', 'pydantic', 'jinja2') or m == 'nurture.worker.jobs'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
