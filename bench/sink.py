"""The SMTP server every send benchmark talks to: aiosmtpd in its own process, counting.

``python -m bench.sink PORT`` accepts every message and drops it (like aiosmtpd's ``Sink``
handler), counting messages, bytes and sessions and noting when the first and last message were
accepted (``time.monotonic()``, system-wide on Linux, so comparable with the benchmark's clock).
It answers commands on stdin, one JSON line each: ``stats``, ``reset``, ``quit``.
:class:`Sink` starts that process and asks it.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from typing import Any

from .common import PYTHON, REPO


class Counter:
    """The aiosmtpd handler."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = self.bytes = self.sessions = 0
        self.first: float | None = None
        self.last: float | None = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        self.sessions += 1
        return responses

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        now = time.monotonic()
        self.count += 1
        self.bytes += len(envelope.original_content or b"")
        self.first = self.first or now
        self.last = now
        return "250 OK: queued"

    def stats(self) -> dict[str, Any]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"count": self.count, "bytes": self.bytes, "sessions": self.sessions,
                "first": self.first, "last": self.last, "cpu": r.ru_utime + r.ru_stime}


def main() -> None:
    from aiosmtpd.controller import Controller

    handler = Counter()
    controller = Controller(handler, hostname="127.0.0.1", port=int(sys.argv[1]),
                            ready_timeout=10)
    controller.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:  # ends when the parent closes stdin, or dies
        command = line.strip()
        if command == "quit":
            break
        if command == "reset":
            handler.reset()
        print(json.dumps(handler.stats()), flush=True)
    controller.stop()


class Sink:
    """The sink process, for the length of a ``with`` block."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([PYTHON, "-m", "bench.sink", str(self.port)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": true}

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SMTP sink exited ({self.proc.wait()})")
        return json.loads(line)

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def reset(self) -> dict[str, Any]:
        return self._ask("reset")

    def wait_for(self, count: int, timeout: float,
                 alive: list[subprocess.Popen[str]]) -> dict[str, Any]:
        """Stats once ``count`` messages arrived, or when ``timeout`` is up (fewer, then)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["count"] >= count or time.monotonic() > deadline:
                return stats
            for p in alive:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {p.pid} exited with {p.returncode} after "
                                       f"{stats['count']} of {count} messages")
            time.sleep(0.05)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the sink stops at the end of its input
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
