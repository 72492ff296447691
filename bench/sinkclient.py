"""Start and query the sink process."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from typing import Any

from .common import PYTHON, REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([PYTHON, "-m", "bench.sink", str(self.port)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        json.loads(self.proc.stdout.readline())  # {"ready": port}

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def _ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def reset(self) -> dict[str, Any]:
        return self._ask("reset")

    def wait_for(self, count: int, timeout: float, poll: float = 0.05,
                 alive: list[subprocess.Popen] | None = None) -> dict[str, Any]:
        """Stats once ``count`` messages arrived, or when ``timeout`` is up (fewer, then)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["count"] >= count or time.monotonic() > deadline:
                return stats
            for p in alive or []:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {p.pid} exited with {p.returncode} after "
                                       f"{stats['count']} of {count} messages")
            time.sleep(poll)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
