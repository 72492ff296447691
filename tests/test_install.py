"""A normal install works: the wheel carries the whole starter project, and a fresh venv outside
the repo can `nurture init` and `nurture validate` with it.

The wheel is built offline from this checkout (``pip wheel --no-build-isolation``), and the venv
borrows the already installed dependencies through a .pth line, so no network is needed. The
starter's campaigns/ and templates/ are the repo's top-level folders (the skeleton links to them);
the wheel must carry copies identical to them.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def sh(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    src = out / "src"
    done = sh("git", "-C", REPO, "ls-files", "-z")
    assert done.returncode == 0, done.stderr
    for name in filter(None, done.stdout.split("\0")):
        source, target = REPO / name, src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_file():
            target.write_bytes(source.read_bytes())
    built = sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "-w", out / "dist", src)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (out / "dist").glob("nurture-*.whl")
    return wheel


def test_the_wheel_carries_the_shipped_starter_project(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        packed = {n: zf.read(n) for n in zf.namelist() if n.startswith("nurture/skeleton/")}
    shipped = {f"nurture/skeleton/{p.relative_to(REPO)}": p.read_bytes()
               for folder in ("campaigns", "templates") for p in (REPO / folder).rglob("*")
               if p.is_file()}
    assert shipped, "no shipped campaigns or templates?"
    for name, data in shipped.items():
        assert packed.get(name) == data, f"{name}: missing from the wheel or different"
    assert "nurture/skeleton/nurture.toml" in packed
    assert "nurture/skeleton/contacts.csv" in packed


def test_init_and_validate_from_a_wheel_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = sh(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    # The dependencies come from the test environment; nurture itself only from the wheel.
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                   "--no-index", wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = sh(python, "-c", "import nurture; print(nurture.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    project = tmp_path / "practice"
    init = sh(venv / "bin" / "nurture", "init", project, cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    for name in ("nurture.toml", "contacts.csv", "campaigns/referral-outreach.yaml",
                 "campaigns/library.yaml", "templates/_layout.mjml", "templates/thank-you.mjml"):
        assert (project / name).is_file(), name
    assert not any(p.is_symlink() for p in project.rglob("*"))
    valid = sh(venv / "bin" / "nurture", "validate", cwd=project)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.startswith("ok: 2 campaigns")
