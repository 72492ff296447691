"""Settings: option > nurture.toml > NURTURE_* > default, resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.errors import InputError
from nurture.settings import load_settings


def write_toml(folder: Path, text: str) -> None:
    (folder / "nurture.toml").write_text(text)


def test_precedence_option_over_toml_over_env_over_default(tmp_path: Path) -> None:
    env = {"NURTURE_WORKER_BATCH_SIZE": "7", "NURTURE_SENDER_NAME": "From Env",
           "NURTURE_DATABASE_URL": "sqlite:///env.db"}
    assert load_settings(tmp_path, environ={}).worker_batch_size == 50
    assert load_settings(tmp_path, environ=env).worker_batch_size == 7
    write_toml(tmp_path, '[worker]\nbatch_size = 9\n[sender]\nname = "From Toml"\n')
    settings = load_settings(tmp_path, environ=env)
    assert (settings.worker_batch_size, settings.sender_name) == (9, "From Toml")
    assert settings.database_url == "sqlite:///env.db"  # not in the file: env still applies
    settings = load_settings(tmp_path, {"worker_batch_size": 3, "sender_name": None},
                             environ=env)
    assert (settings.worker_batch_size, settings.sender_name) == (3, "From Toml")


def test_unknown_and_malformed_settings_name_the_file(tmp_path: Path) -> None:
    write_toml(tmp_path, '[worker]\nbatchsize = 9\n[sendr]\nname = "x"\n')
    with pytest.raises(InputError) as info:
        load_settings(tmp_path, environ={})
    text = str(info.value)
    assert "nurture.toml: [worker] batchsize: unknown setting" in text
    assert "nurture.toml: [sendr] name: unknown setting" in text
    with pytest.raises(InputError, match="NURTURE_WORKER_TICK_INTERVAL: worker_tick_interval: "
                                         "'soon' is not a whole number"):
        load_settings(tmp_path / "none", environ={"NURTURE_WORKER_TICK_INTERVAL": "soon"})
    write_toml(tmp_path, "[worker\n")
    with pytest.raises(InputError, match="nurture.toml"):
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
