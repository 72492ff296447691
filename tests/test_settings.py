"""Settings: option > NURTURE_* environment > nurture.toml > default, resolved in one place."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.cli import main
from nurture.errors import InputError
from nurture.settings import default, load_settings


def write_toml(folder: Path, text: str) -> None:
    (folder / "nurture.toml").write_text(text)


def test_precedence_option_over_env_over_toml_over_default(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).worker_batch_size == 50
    assert load_settings(tmp_path, environ={}).source("worker_batch_size") == "default"
    write_toml(tmp_path, '[worker]\nbatch_size = 9\n[sender]\nname = "From Toml"\n')
    settings = load_settings(tmp_path, environ={})
    assert (settings.worker_batch_size, settings.source("worker_batch_size")) == (9, "file")
    env = {"NURTURE_WORKER_BATCH_SIZE": "7", "NURTURE_DATABASE_URL": "sqlite:////tmp/env.db"}
    settings = load_settings(tmp_path, environ=env)
    assert (settings.worker_batch_size, settings.source("worker_batch_size")) == (7,
                                                                                  "environment")
    assert settings.sender_name == "From Toml"  # not in the environment: the file still applies
    assert settings.database_url == "sqlite:////tmp/env.db"
    settings = load_settings(tmp_path, {"worker_batch_size": 3, "sender_name": None}, environ=env)
    assert (settings.worker_batch_size, settings.source("worker_batch_size")) == (3, "option")
    assert (settings.sender_name, settings.source("sender_name")) == ("From Toml", "file")


def test_a_relative_sqlite_file_lives_in_the_project_folder(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).database_url == f"sqlite:///{tmp_path}/nurture.db"
    env = {"NURTURE_DATABASE_URL": "sqlite://"}
    assert load_settings(tmp_path, environ=env).database_url == "sqlite://"


@pytest.fixture
def initialised(tmp_path: Path) -> Path:
    folder = tmp_path / "p"
    result = CliRunner().invoke(main, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("name, value", [
    ("database_url", "postgresql+psycopg://nurture@db.internal/nurture"),
    ("redis_url", "redis://127.0.0.1:6379/3"),
    ("smtp_url", "smtp://alex:pw@smtp.example.org:587?starttls=true"),
])
def test_in_an_initialised_folder_the_environment_takes_effect(initialised: Path, name: str,
                                                               value: str) -> None:
    env = {f"NURTURE_{name.upper()}": value}
    settings = load_settings(initialised, environ=env)
    assert (getattr(settings, name), settings.source(name)) == (value, "environment")
    option = load_settings(initialised, {name: "sqlite://" if name == "database_url" else ""},
                           environ=env)
    assert option.source(name) == "option"  # an option beats the environment, even when empty
    section, key = name.split("_", 1)
    text = (initialised / "nurture.toml").read_text()
    in_file = {"database": "sqlite:////tmp/file.db", "redis": "redis://file.example:6379/0",
               "smtp": "smtp://file.example:25"}[section]
    text = text.replace(f"[{section}]\n", f'[{section}]\n{key} = "{in_file}"\n', 1)
    (initialised / "nurture.toml").write_text(text)
    assert load_settings(initialised, environ={}).source(name) == "file"
    assert getattr(load_settings(initialised, environ=env), name) == value  # env beats the file


def test_init_writes_defaults_as_comments_that_match_the_embedded_ones(initialised: Path) -> None:
    text = (initialised / "nurture.toml").read_text()
    data = tomllib.loads(text)
    for section in ("database", "redis", "smtp", "worker", "web"):
        assert data.get(section, {}) == {}, f"[{section}] sets a value: it would hide NURTURE_*"
    section, shown = None, 0
    for line in text.splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"# (\w+) = (\S+)", line):
            value = tomllib.loads(f"v = {m.group(2)}")["v"]
            assert value == default(f"{section}_{m.group(1)}"), line
            shown += 1
    assert shown >= 8


def test_unknown_and_malformed_settings_name_the_file_and_line(tmp_path: Path) -> None:
    write_toml(tmp_path, '[worker]\nbatchsize = 9\n[sendr]\nname = "x"\n[limits]\n'
                         'per_day = "many"\n')
    with pytest.raises(InputError) as info:
        load_settings(tmp_path, environ={})
    text = str(info.value)
    assert "nurture.toml:2: [worker] batchsize: unknown setting" in text
    assert "nurture.toml:4: [sendr] name: unknown setting" in text
    assert "nurture.toml:6: [limits] per_day: 'many' is not a whole number" in text
    with pytest.raises(InputError, match="NURTURE_WORKER_TICK_INTERVAL: worker_tick_interval: "
                                         "'soon' is not a whole number"):
        load_settings(tmp_path / "none", environ={"NURTURE_WORKER_TICK_INTERVAL": "soon"})
    write_toml(tmp_path, '[worker]\nqueue = "a"\n\n[worker\n')
    with pytest.raises(InputError, match=r"nurture.toml:4: "):
        load_settings(tmp_path, environ={})


def test_paths_resolve_against_the_project_folder(tmp_path: Path) -> None:
    write_toml(tmp_path, '[paths]\ncampaigns = "mine"\n[smtp]\noutbox = "/var/out"\n')
    settings = load_settings(tmp_path, environ={})
    assert settings.campaigns_dir == tmp_path / "mine"
    assert settings.outbox_dir == Path("/var/out")


def test_generated_secret_is_kept_between_runs(tmp_path: Path) -> None:
    first = load_settings(tmp_path, environ={}).secret_key
    assert len(first) >= 32
    assert load_settings(tmp_path, environ={}).secret_key == first
    assert (tmp_path / ".nurture" / "secret").stat().st_mode & 0o777 == 0o600
    assert load_settings(tmp_path, environ={"NURTURE_SECRET_KEY": "s"}).secret_key == "s"


def test_sender_identity_is_required(tmp_path: Path) -> None:
    problems = load_settings(tmp_path, environ={}).identity_problems()
    assert [p.field for p in problems] == ["[sender] name", "[sender] email", "[practice] name",
                                          "[practice] address"]


def test_the_lease_must_outlast_the_smtp_timeout(tmp_path: Path) -> None:
    env = {"NURTURE_WORKER_LEASE_SECONDS": "10", "NURTURE_SMTP_TIMEOUT": "10"}
    with pytest.raises(InputError, match=r"worker_lease_seconds: must be more than smtp_timeout "
                                         r"\(10 s\)"):
        load_settings(tmp_path, environ=env)
    settings = load_settings(tmp_path, environ={**env, "NURTURE_SMTP_TIMEOUT": "3"})
    assert (settings.worker_lease_seconds, settings.smtp_timeout) == (10, 3)
    with pytest.raises(InputError, match="smtp_timeout: must be at least 1"):
        load_settings(tmp_path, environ={"NURTURE_SMTP_TIMEOUT": "0"})
    assert load_settings(tmp_path, environ={}).smtp_timeout == 30


def test_values_no_command_could_use_are_refused_where_they_were_set(tmp_path: Path) -> None:
    write_toml(tmp_path, '[practice]\ntimezone = "Mars/Base"\n')
    with pytest.raises(InputError, match=r"nurture.toml: practice_timezone: 'Mars/Base' is not "
                                         r"a time zone"):
        load_settings(tmp_path, environ={})
    with pytest.raises(InputError, match=r"--database-url: database_url: 'mysql://x/y': nurture "
                                         r"works with sqlite"):
        load_settings(tmp_path / "none", {"database_url": "mysql://x/y"}, environ={})
    with pytest.raises(InputError, match="NURTURE_SMTP_TIMEOUT: smtp_timeout: must be at least"):
        load_settings(tmp_path / "none", environ={"NURTURE_SMTP_TIMEOUT": "0"})
