"""The README's two commands on a fresh machine: scripts/test sets up what the tests need
(scripts/test-servers), and CI runs exactly scripts/test.

apt-get is replaced by a stub on PATH that records its arguments, so the tests see what would be
installed without installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

TOOLS = ["bash", "env", "id", "ls", "sed", "grep", "seq", "sleep", "head", "cat", "pg_isready",
         "psql", "pg_ctlcluster", "redis-cli", "redis-server"]


def fake_path(tmp_path: Path, hide: set[str]) -> tuple[str, Path]:
    """A PATH with the machine's tools minus ``hide``, and an apt-get stub that records calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in [*TOOLS, "dovecot", "chromium", "chromedriver"]:
        found = shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/usr/lib/postgresql")
        if tool not in hide and found:
            (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "apt-calls"
    stub = bin_dir / "apt-get"
    stub.write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    return str(bin_dir), calls


def servers(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "test-servers")], capture_output=True,
                          text=True, timeout=120, env={"PATH": path, "HOME": "/tmp", **env})


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ['exec scripts/test -p no:cacheprovider "$@"']
    test = [line for line in (REPO / "scripts" / "test").read_text().splitlines()
            if not line.startswith("#")]
    order = [next(i for i, line in enumerate(test) if word in line)
             for word in ("scripts/test-servers", "scripts/bootstrap", "-m pytest")]
    assert order == sorted(order)
    assert "`scripts/test`" in (REPO / "README.md").read_text()


def test_what_is_present_is_left_alone(tmp_path: Path) -> None:
    path, calls = fake_path(tmp_path, hide=set())
    if not all(shutil.which(t) for t in ("chromium", "chromedriver", "dovecot")):
        return  # not this machine: the next test covers a missing package
    done = servers(path, NURTURE_TEST_DATABASES="sqlite")
    assert done.returncode == 0, done.stderr
    assert not calls.exists(), calls.read_text()


def test_a_missing_package_is_installed_with_apt_as_root(tmp_path: Path) -> None:
    path, calls = fake_path(tmp_path, hide={"chromium", "chromedriver"})
    done = servers(path, NURTURE_TEST_DATABASES="sqlite")
    if os.getuid() == 0:
        assert done.returncode == 0, done.stderr
        assert "installing chromium chromium-driver (apt-get)" in done.stderr
        assert "install -y -qq chromium chromium-driver" in calls.read_text()
    else:  # without root it says what is missing and stops
        assert done.returncode == 1
        assert "missing: chromium chromium-driver" in done.stderr
