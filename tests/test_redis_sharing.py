# ruff: noqa: F811  (the fixtures imported below are redefined as parameters, as pytest wants)
"""Commands side by side on one folder's embedded Redis: none pulls the server from under another.

A command that started the server waits, when it ends, for the others still using it; a worker
daemon waits for another command's server to stop and then starts its own. Every step is awaited
through a line the process prints, never through a sleep.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from tests.test_cli import project, run  # noqa: F401  (a fixture)
from tests.test_redis_server import REPO, alive, reap, state_dir, wait_gone  # noqa: F401

# A command: starts the folder's server (or, with "own", one of its own), reports it, then pushes
# each line of stdin to the list "jobs" and answers "ok"; at EOF it stops and says "stopped".
CHILD = """
import sys
from pathlib import Path
import redis
from nurture.worker.redis_server import EmbeddedRedis

say = lambda text: print(text, flush=True)
server = EmbeddedRedis(Path(sys.argv[1]), own=sys.argv[2] == "own", on_wait=say)
server.start()
say(f"{server.pid} {server.owned}")
client = redis.Redis.from_url(server.url)
for line in sys.stdin:
    client.rpush("jobs", line.strip())
    say("ok")
client.close()
server.stop()
say("stopped")
"""


def command(state: Path, mode: str = "share") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(state), mode], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def line(proc: subprocess.Popen[str]) -> str:
    text = proc.stdout.readline()  # type: ignore[union-attr]
    assert text, f"the command exited with {proc.wait()} before answering"
    return text.strip()


def started(proc: subprocess.Popen[str], reap: Callable[[int], int]) -> tuple[int, bool]:
    reap(proc.pid)
    pid, owned = line(proc).split()
    return reap(int(pid)), owned == "True"


def push(proc: subprocess.Popen[str], job: str) -> None:
    proc.stdin.write(job + "\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    assert line(proc) == "ok"


def jobs(state: Path) -> list[bytes]:
    from nurture.worker.redis_server import EmbeddedRedis

    with EmbeddedRedis(state) as server, redis.Redis.from_url(server.url) as client:
        return client.lrange("jobs", 0, -1)


def test_the_owner_waits_for_the_commands_still_using_its_server(
        state_dir: Path, reap: Callable[[int], int]) -> None:
    first = command(state_dir)
    pid, owned = started(first, reap)
    second = command(state_dir)
    assert owned and started(second, reap) == (pid, False)
    first.stdin.close()  # type: ignore[union-attr]  # the owner's command ends first...
    assert line(first).startswith("waiting for the other nurture commands")
    push(second, "after the owner ended")  # ...and the server still answers the other one
    second.stdin.close()  # type: ignore[union-attr]
    assert line(second) == "stopped" and second.wait(30) == 0
    assert line(first) == "stopped" and first.wait(30) == 0
    assert wait_gone(pid)
    assert jobs(state_dir) == [b"after the owner ended"]


def test_a_worker_waits_for_a_borrowed_server_to_stop_then_owns_one(
        state_dir: Path, reap: Callable[[int], int]) -> None:
    short = command(state_dir)
    pid, _ = started(short, reap)
    push(short, "from the short command")
    daemon = command(state_dir, "own")
    reap(daemon.pid)
    assert line(daemon).startswith("waiting for another nurture command")
    short.stdin.close()  # type: ignore[union-attr]
    assert line(short) == "stopped" and short.wait(30) == 0
    own_pid, owned = started(daemon, reap)
    assert owned and own_pid != pid and wait_gone(pid)
    push(daemon, "from the worker")
    daemon.stdin.close()  # type: ignore[union-attr]
    assert line(daemon) == "stopped" and daemon.wait(30) == 0
    assert jobs(state_dir) == [b"from the short command", b"from the worker"]


def test_commands_at_once_on_the_embedded_redis_all_work(project: Path) -> None:  # noqa: F811
    assert run(project, "contacts", "import", "contacts.csv").returncode == 0
    assert run(project, "--now", "2026-12-07T15:00:00Z", "enroll",
               "referral-outreach").returncode == 0
    opts = ["--project", str(project), "--now", "2026-12-07T15:00:00Z"]
    procs = [subprocess.Popen([sys.executable, "-m", "nurture", *opts, *args], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in (["tick"], ["tick"], ["worker", "--burst"], ["tick"], ["status"])]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
    assert len(list((project / "outbox").glob("*.eml"))) <= 5
    again = run(project, "--now", "2026-12-07T15:00:00Z", "worker", "--burst")
    assert again.returncode == 0, again.stderr
    assert len(list((project / "outbox").glob("*.eml"))) == 5
    assert not alive_server(project)


def alive_server(folder: Path) -> bool:
    out = subprocess.run(["pgrep", "-f", f"{folder}/.nurture/redis.sock"], capture_output=True,
                         text=True).stdout.split()
    return any(alive(int(pid)) for pid in out)
