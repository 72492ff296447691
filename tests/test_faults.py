"""Faults on real parts: `nurture worker` processes killed, Redis flushed or restarted, the SMTP
server down or refusing, stops racing the queue, two workers and extra ticks racing each other.

The truth about what was delivered is what the SMTP server (tests/smtp_sink.py) received, by
Message-ID, never what the database says. The clock is the real one: the touches are made due in
the past, and the settings in :data:`tests.faults.harness.FAST` make recovery happen in seconds.
Each test runs on SQLite and on PostgreSQL, against a private redis-server (see
tests/faults/redis_proc.py for why not the shared one). Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from nurture.inbound.inbox import record_reply
from nurture.intake.referrals import add_referral
from nurture.models import ContactStatus, TouchState
from nurture.outbound.unsubscribe import unsubscribe
from nurture.report import status
from tests.faults.harness import (
    NOT_YET,
    ONE_STEP,
    TWO_STEPS,
    Project,
    assert_delivered_once,
    delivered,
    explain,
    fault_project,
)
from tests.faults.redis_proc import RedisProcess

SENT, UNCERTAIN = TouchState.SENT, TouchState.UNCERTAIN


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_project(tmp_path: Path, database_url: str, redis_server: RedisProcess,
                 smtp_sink: Any) -> Iterator[Callable[..., Project]]:
    """Builds the test's project; its processes are killed (by process group) at teardown."""
    with ExitStack() as stack:
        def make(campaigns: dict[str, str], **overrides: Any) -> Project:
            return stack.enter_context(fault_project(
                tmp_path, database_url, redis_server.url, smtp_sink.url, campaigns, **overrides))

        yield make


def orphans_ps(groups: list[int]) -> str:
    """`ps` lines of what is left in these process groups."""
    if not groups:
        return "none"
    out = subprocess.run(["ps", "-o", "pid,ppid,pgid,cmd", "-g", ",".join(map(str, groups))],
                         capture_output=True, text=True).stdout
    return "\n" + out


def db_name(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def check_all_delivered_once(p: Project, sink: Any, *, uncertain_allowed: int = 0) -> Counter:
    """Every row sent (or, up to a bound, uncertain), and the server holds each sent row's
    message exactly once and nothing twice."""
    touches = p.touches()
    counts = assert_delivered_once(sink.messages, touches)
    states = Counter(str(t.state) for t in touches)
    assert set(states) <= {SENT, UNCERTAIN}, states
    assert states[UNCERTAIN] <= uncertain_allowed, states
    for t in touches:
        if t.state == SENT:
            assert counts[t.message_id] == 1, f"touch {t.id} is sent but the server has " \
                                              f"{counts[t.message_id]} of {t.message_id}"
    return counts


# 1. SIGKILL storm ---------------------------------------------------------------------------------
KILLS = 12  # kills that land while the worker is sending


def test_sigkill_storm_never_sends_twice_and_uncertain_means_possibly_delivered(
        make_project: Callable[..., Project], smtp_sink: Any, redis_server: RedisProcess,
        database_url: str) -> None:
    """300 due sends; the worker is SIGKILLed while it sends, 0-50 ms after its first message
    of that run reached the server, and restarted, until 12 kills have landed with emails still
    to send. Nothing reaches the server twice; a row cut before it was handed over is sent
    again by itself; only a row cut while it was being handed over is `uncertain`, and at
    least 90% of those really reached the server; nothing stays in flight.

    Kills are counted, not timed: a slow machine takes longer, never fewer kills."""
    p = make_project({"storm": ONE_STEP})
    p.enroll("storm", p.add_contacts(300))
    seed = int(os.environ.get("NURTURE_FAULT_SEED", random.randrange(1 << 30)))
    rnd = random.Random(seed)
    began = time.monotonic()
    killed, landed = [], 0
    while landed < KILLS and len(smtp_sink.messages) < 300:
        before = len(smtp_sink.messages)
        worker = p.worker()
        sending = p.wait_until(lambda n=before: len(smtp_sink.messages) > n, timeout=60,
                               poll=0.002)
        time.sleep(rnd.uniform(0, 0.05))
        worker.send_signal(signal.SIGKILL)  # the worker only: its cron child must follow it
        worker.wait(10)
        killed.append(worker)
        landed += sending and len(smtp_sink.messages) < 300
    storm = time.monotonic() - began
    p.wait_until(lambda: not any(p.group_alive(w) for w in killed), timeout=10, poll=0.05)
    orphans = [w.pid for w in killed if p.group_alive(w)]

    final = p.worker()
    settled = p.wait_until(p.settled, timeout=120, poll=0.5)  # the lease is 10 s
    duration = time.monotonic() - began
    touches = p.touches()
    counts = delivered(smtp_sink.messages)
    uncertain = [t for t in touches if t.state == UNCERTAIN]
    arrived = sum(1 for t in uncertain if counts[t.message_id])
    states = Counter(str(t.state) for t in touches)
    print(f"\nstorm [{db_name(database_url)}] seed={seed}: {landed} kills while sending "
          f"({len(killed)} in all) in {storm:.1f}s; server got {sum(counts.values())} "
          f"messages ({len(counts)} distinct); states {dict(states)}; uncertain that did "
          f"arrive: {arrived} of {len(uncertain)}; {len(orphans)} killed workers left "
          f"processes behind; {duration:.1f}s in all")
    assert settled, (f"not settled 120 s after the storm (killed workers that left processes "
                     f"behind: {orphans_ps(orphans)}):\n{explain(p, redis_server.client())}")
    assert landed >= KILLS, f"only {landed} kills landed before all 300 were sent (seed {seed})"
    check_all_delivered_once(p, smtp_sink, uncertain_allowed=len(killed))
    for t in uncertain:  # maybe sent: at most once, and it may be absent
        assert counts[t.message_id] <= 1
    assert arrived >= 0.9 * len(uncertain), (
        f"uncertain should mean possibly delivered: only {arrived} of {len(uncertain)} arrived")
    assert orphans == [], f"processes left behind by SIGKILLed workers: {orphans_ps(orphans)}"
    final.send_signal(signal.SIGTERM)
    assert final.wait(30) == 0


# 2. Redis loses everything ------------------------------------------------------------------------
def _assert_still_working(p: Project, sink: Any, campaign: str, start: int) -> None:
    """The worker keeps ticking and sending: new due rows go out without any help."""
    before = len(sink.messages)
    p.enroll(campaign, p.add_contacts(5, start=start))
    assert p.wait_until(lambda: len(sink.messages) >= before + 5, timeout=20), \
        f"the worker no longer sends what falls due:\n{p.log_tail(20, logs=1)}"


def test_redis_flushed_mid_run(make_project: Callable[..., Project], smtp_sink: Any,
                               redis_server: RedisProcess, database_url: str) -> None:
    """FLUSHDB while the worker sends: every queued job is gone, and every row still goes out,
    exactly once, queued again by the worker's own tick."""
    p = make_project({"flush": ONE_STEP})
    p.enroll("flush", p.add_contacts(80))
    began = time.monotonic()
    worker = p.worker()
    assert p.wait_until(lambda: len(smtp_sink.messages) >= 20, timeout=30), p.log_tail()
    redis_server.client().flushdb()
    at_flush = len(smtp_sink.messages)
    settled = p.wait_until(p.settled, timeout=30)
    print(f"\nflush [{db_name(database_url)}]: flushed after {at_flush} messages; "
          f"{dict(p.states())}; {time.monotonic() - began:.1f}s")
    assert settled, explain(p, redis_server.client())
    assert at_flush < 80, "the flush came too late to matter"
    check_all_delivered_once(p, smtp_sink)
    assert worker.poll() is None, p.log_tail()
    _assert_still_working(p, smtp_sink, "flush", start=1000)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_redis_restarted_without_persistence_mid_run(
        make_project: Callable[..., Project], smtp_sink: Any, redis_server: RedisProcess,
        database_url: str) -> None:
    """The Redis server crashes and comes back empty while the worker sends: the worker rides
    it out, and every row goes out exactly once."""
    p = make_project({"restart": ONE_STEP})
    p.enroll("restart", p.add_contacts(80))
    began = time.monotonic()
    worker = p.worker()
    assert p.wait_until(lambda: len(smtp_sink.messages) >= 20, timeout=30), p.log_tail()
    redis_server.kill()
    time.sleep(1)
    redis_server.start()
    at_crash = len(smtp_sink.messages)
    p.wait_until(lambda: p.settled() or worker.poll() is not None, timeout=40)
    code = worker.poll()
    if code is not None:  # see whether a new worker finishes the run, then fail on the exit
        worker = p.worker()
    settled = p.wait_until(p.settled, timeout=40)
    print(f"\nredis restart [{db_name(database_url)}]: crashed after {at_crash} messages; "
          f"{dict(p.states())}; worker exit code during the run: {code}; "
          f"{time.monotonic() - began:.1f}s")
    assert settled, explain(p, redis_server.client())
    assert at_crash < 80, "the crash came too late to matter"
    check_all_delivered_once(p, smtp_sink)
    assert code is None, (f"the worker exited (code {code}) when Redis restarted:\n"
                          f"{p.log_tail(30, logs=2)}")
    _assert_still_working(p, smtp_sink, "restart", start=1000)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_redis_restarted_while_idle_worker_keeps_ticking(
        make_project: Callable[..., Project], smtp_sink: Any, redis_server: RedisProcess,
        database_url: str) -> None:
    """Redis crashes and comes back while the worker has nothing to do: what falls due
    afterwards is still queued by the worker's tick and sent."""
    p = make_project({"idle": ONE_STEP})
    p.enroll("idle", p.add_contacts(5))
    worker = p.worker()
    assert p.wait_until(lambda: len(smtp_sink.messages) >= 5 and p.settled(), timeout=30), \
        p.log_tail()
    redis_server.kill()
    time.sleep(2)  # longer than the tick interval: the cron scheduler meets the outage
    redis_server.start()
    time.sleep(1)
    alive = worker.poll() is None
    before = len(smtp_sink.messages)
    p.enroll("idle", p.add_contacts(5, start=100))
    # settled too: the server has a message a moment before the worker records it as sent
    sent = p.wait_until(lambda: len(smtp_sink.messages) >= before + 5 and p.settled(), timeout=20)
    print(f"\nredis restart while idle [{db_name(database_url)}]: worker alive: {alive}; "
          f"sent after the restart: {len(smtp_sink.messages) - before} of 5")
    assert alive, f"the worker exited (code {worker.returncode}):\n{p.log_tail(30, logs=1)}"
    assert sent, f"nothing ticks any more after the Redis restart:\n" \
                 f"{explain(p, redis_server.client())}"
    check_all_delivered_once(p, smtp_sink)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


# 3. SMTP outage -----------------------------------------------------------------------------------
def test_smtp_outage_retries_and_completes(make_project: Callable[..., Project], smtp_sink: Any,
                                           redis_server: RedisProcess, database_url: str) -> None:
    """The SMTP server goes away for 3 s mid-run and comes back: the failed batches are retried
    and complete; nothing is sent twice. A message cut mid-DATA may be `uncertain` (one at most:
    one worker holds one connection)."""
    p = make_project({"outage": ONE_STEP})
    p.enroll("outage", p.add_contacts(80))
    began = time.monotonic()
    worker = p.worker()
    assert p.wait_until(lambda: len(smtp_sink.messages) >= 20, timeout=30), p.log_tail()
    smtp_sink.set_down()
    at_outage = len(smtp_sink.messages)
    time.sleep(3)
    smtp_sink.restart()
    settled = p.wait_until(p.settled, timeout=45)
    touches = p.touches()
    print(f"\nsmtp outage [{db_name(database_url)}]: down after {at_outage} messages; "
          f"{dict(p.states())}; rows tried more than once: "
          f"{sum(1 for t in touches if t.attempts > 1)}; {time.monotonic() - began:.1f}s")
    assert settled, explain(p, redis_server.client())
    assert at_outage < 80, "the outage came too late to matter"
    check_all_delivered_once(p, smtp_sink, uncertain_allowed=1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


# 4. Racing workers and ticks ----------------------------------------------------------------------
def test_two_workers_and_extra_ticks_race(make_project: Callable[..., Project], smtp_sink: Any,
                                          redis_server: RedisProcess, database_url: str) -> None:
    """Two workers (each with its own tick every second) and bursts of concurrent `nurture
    tick` processes, while rows keep falling due: each row is queued, claimed and sent once."""
    p = make_project({"race": ONE_STEP})
    p.enroll("race", p.add_contacts(100))
    p.spread_due(8)  # due one after another over 8 s, so the ticks keep racing for new rows
    began = time.monotonic()
    workers = [p.worker(), p.worker()]
    ticks = []
    for _ in range(3):
        burst = [p.start("tick") for _ in range(3)]
        for proc in burst:
            proc.wait(60)
        ticks += burst
    settled = p.wait_until(p.settled, timeout=45)
    print(f"\nrace [{db_name(database_url)}]: {dict(p.states())}; {len(ticks)} extra ticks; "
          f"{time.monotonic() - began:.1f}s")
    assert settled, explain(p, redis_server.client())
    check_all_delivered_once(p, smtp_sink)
    assert [t.returncode for t in ticks] == [0] * len(ticks), p.log_tail(10, logs=len(ticks))
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [w.wait(30) for w in workers] == [0, 0]


# 5. Stops while the send is queued ----------------------------------------------------------------
def test_reply_referral_unsubscribe_while_queued(make_project: Callable[..., Project],
                                                 smtp_sink: Any) -> None:
    """A reply, a referral and an unsubscribe recorded after the tick queued their sends and
    before the worker ran: nothing goes to those three; the others get theirs."""
    p = make_project({"stops": ONE_STEP})
    emails = p.add_contacts(6)
    p.enroll("stops", emails)
    ticked = p.run("tick")
    assert ticked.returncode == 0, ticked.stderr
    assert set(p.states()) == {TouchState.QUEUED}, p.states()
    record_reply(p.app, emails[0])
    add_referral(p.app, emails[1], external_ref="EHR-77")
    unsubscribe(p.app, emails[2])
    burst = p.run("worker", "--burst")
    assert burst.returncode == 0, burst.stdout + burst.stderr
    to = Counter(str(m["To"]).rpartition("<")[2].rstrip(">") for m in smtp_sink.messages)
    assert to == Counter(emails[3:]), to
    for email, reason in zip(emails[:3], ("reply", "referral", "unsubscribe"), strict=True):
        assert p.enrollments(email) == {"stops": ("stopped", reason)}
    assert p.contact(emails[2]).status == ContactStatus.UNSUBSCRIBED
    states = Counter(str(t.state) for t in p.touches())
    assert states[SENT] == 3 and states[SENT] + states[TouchState.CANCELLED] \
        + states[TouchState.SKIPPED] == 6, states


# 6. SMTP refusals ---------------------------------------------------------------------------------
def test_smtp_refusals_bounce_retry_and_fail(make_project: Callable[..., Project], smtp_sink: Any,
                                             redis_server: RedisProcess) -> None:
    """550 5.1.1 bounces the contact and stops all its enrollments; 452 4.2.2 is retried and
    sent once the mailbox has room; 554 5.7.1 fails that email, flags it, keeps the contact."""
    p = make_project({"seq": TWO_STEPS, "later": NOT_YET})
    emails = p.add_contacts(6)
    bounce, full, policy, fine = emails[0], emails[1], emails[2], emails[3:]
    p.enroll("seq", emails)
    p.enroll("later", [bounce, policy])
    smtp_sink.reject[bounce] = (550, f"5.1.1 <{bounce}>: Recipient address rejected: "
                                     "User unknown")
    smtp_sink.reject[full] = (452, "4.2.2 Mailbox full, try again later")
    smtp_sink.reject[policy] = (554, "5.7.1 Message rejected due to local policy")

    def first(email: str, campaign: str = "seq") -> Any:
        return p.touch(email, campaign)

    worker = p.worker()
    assert p.wait_until(lambda: first(full).attempts >= 1
                        and first(full).state == TouchState.QUEUED, timeout=30), \
        explain(p, redis_server.client())
    assert "4.2.2" in (first(full).reason or "")
    del smtp_sink.reject[full]  # the mailbox has room again
    assert p.wait_until(lambda: first(full).state == SENT and p.settled(), timeout=30), \
        explain(p, redis_server.client())

    to = Counter(str(m["To"]).rpartition("<")[2].rstrip(">") for m in smtp_sink.messages)
    assert to == Counter([full, *fine]), to
    assert_delivered_once(smtp_sink.messages, p.touches())

    # 5.1.1: bounced, everything stopped, nothing left to send
    assert p.contact(bounce).status == ContactStatus.BOUNCED
    assert p.enrollments(bounce) == {"seq": ("stopped", "bounce"), "later": ("stopped", "bounce")}
    assert first(bounce).state == TouchState.FAILED and "5.1.1" in first(bounce).reason
    assert first(bounce, "later").state == TouchState.CANCELLED

    # 4.2.2: sent on the retry
    assert first(full).attempts == 2

    # 5.7.1: that email failed and is flagged; the contact and its other enrollment go on
    assert first(policy).state == TouchState.FAILED and "5.7.1" in first(policy).reason
    assert p.contact(policy).status == ContactStatus.ACTIVE
    assert p.enrollments(policy)["later"] == ("active", None)
    assert first(policy, "later").state == TouchState.SCHEDULED
    attention = {line.touch_id for line in status(p.app).attention}
    assert first(policy).id in attention

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


# 7. Graceful shutdown -----------------------------------------------------------------------------
def test_sigterm_during_a_batch_finishes_it_and_exits_cleanly(
        make_project: Callable[..., Project], smtp_sink: Any, redis_server: RedisProcess,
        database_url: str) -> None:
    """SIGTERM while a batch of 50 is going out: the batch finishes, the next does not start,
    the worker exits 0 with nothing `sending` and nothing left running; the next worker sends
    the rest, none twice."""
    p = make_project({"term": ONE_STEP}, worker_batch_size=50)
    p.enroll("term", p.add_contacts(100))
    worker = p.worker()
    assert p.wait_until(lambda: len(smtp_sink.messages) >= 1, timeout=30, poll=0.01), p.log_tail()
    time.sleep(0.2)
    at_signal = len(smtp_sink.messages)
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` or systemd
    code = worker.wait(60)
    stopped_in = time.monotonic() - began
    gone = p.wait_until(lambda: not p.group_alive(worker), timeout=5, poll=0.05)
    states = p.states()
    counts = delivered(smtp_sink.messages)
    print(f"\nsigterm [{db_name(database_url)}]: signal after {at_signal} messages; stopped in "
          f"{stopped_in:.1f}s with {sum(counts.values())} sent; {dict(states)}")
    assert code == 0, p.log_tail()
    assert gone, "the worker's children outlived it"
    assert states[TouchState.SENDING] == 0 and states[UNCERTAIN] == 0, states
    assert states[SENT] == sum(counts.values()) and states[SENT] % 50 == 0, \
        (states, "the batch in progress must finish, and no other start")
    assert at_signal < states[SENT]
    rest = p.run("worker", "--burst")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    check_all_delivered_once(p, smtp_sink)
    assert len(smtp_sink.messages) == 100
