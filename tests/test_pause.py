"""Pausing a campaign: nothing of it is sent, nothing of it is lost, and resuming sends it once."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from nurture.app import Nurture
from nurture.cli import main
from nurture.engine import enroll, pause_campaign
from nurture.report import status
from nurture.ticking import tick
from tests.test_engine import (
    RecordingDispatcher,
    add_contact,
    all_touches,
    open_app_fixture,  # noqa: F401 (a fixture)
    project_fixture,  # noqa: F401 (a fixture)
)
from tests.test_sending import deliver_now, queue_first_steps


def hello_states(app: Nurture) -> dict[str, str]:
    return {t.enrollment.contact.email: t.state for t in all_touches(app) if t.step_id == "hello"}


def test_a_paused_campaign_is_not_ticked_and_resuming_sends_each_once(
        project: Nurture, smtp_sink: Any) -> None:
    for email in ("a@clinic.example", "b@clinic.example"):
        add_contact(project, email)
    enroll(project, "referral-outreach")
    assert pause_campaign(project, "referral-outreach") is True
    assert pause_campaign(project, "referral-outreach") is False  # already paused
    dispatcher = RecordingDispatcher()
    assert tick(project, dispatcher).enqueued == 0
    assert set(hello_states(project).values()) == {"scheduled"}  # waiting, not dropped
    assert status(project).paused == ["referral-outreach"]
    assert pause_campaign(project, "referral-outreach", paused=False) is True
    assert tick(project, dispatcher).enqueued == 2
    report = deliver_now(project, dispatcher.touch_ids)
    assert sorted(report.sent) == sorted(dispatcher.touch_ids)
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp_sink.messages) == [
        "a@clinic.example", "b@clinic.example"]
    assert status(project).paused == []


def test_pause_after_the_tick_puts_the_queued_touch_back(project: Nurture,
                                                          smtp_sink: Any) -> None:
    """The send job re-checks inside the claim: a pause committed after the tick wins."""
    queued = queue_first_steps(project, "a@clinic.example")
    pause_campaign(project, "referral-outreach")
    report = deliver_now(project, queued)
    assert (report.sent, report.rescheduled) == ([], queued)
    assert smtp_sink.messages == []
    (touch,) = [t for t in all_touches(project) if t.id == queued[0]]
    assert (touch.state, touch.job_id, touch.attempts) == ("scheduled", None, 0)
    pause_campaign(project, "referral-outreach", paused=False)
    dispatcher = RecordingDispatcher()
    assert tick(project, dispatcher).enqueued == 1
    assert deliver_now(project, dispatcher.touch_ids).sent == queued
    assert len(smtp_sink.messages) == 1


def test_pause_and_resume_commands(project: Nurture) -> None:
    add_contact(project, "a@clinic.example")
    enroll(project, "referral-outreach")
    runner = CliRunner()
    env = {"NURTURE_DATABASE_URL": project.settings.database_url,
           "NURTURE_PATHS_CAMPAIGNS": str(project.settings.campaigns_dir),
           "NURTURE_PATHS_TEMPLATES": str(project.settings.templates_dir)}
    args = ["--project", str(project.settings.project_dir)]
    out = runner.invoke(main, [*args, "pause", "referral-outreach"], env=env)
    assert (out.exit_code, out.output) == (0, "referral-outreach paused\n")
    out = runner.invoke(main, [*args, "status"], env=env)
    assert "  referral-outreach: 1 active (paused: `nurture resume` it)\n" in out.output
    out = runner.invoke(main, [*args, "resume", "referral-outreach"], env=env)
    assert (out.exit_code, out.output) == (0, "referral-outreach resumed\n")
    out = runner.invoke(main, [*args, "resume", "referral-outreach"], env=env)
    assert (out.exit_code, out.output) == (0, "referral-outreach was not paused\n")
    out = runner.invoke(main, [*args, "pause", "no-such-campaign"], env=env)
    assert out.exit_code != 0 and "no campaign 'no-such-campaign'" in out.output
