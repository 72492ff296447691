"""A counting SMTP sink in its own process: ``python -m bench.sink PORT``.

aiosmtpd accepts every message and drops it (like ``aiosmtpd.handlers.Sink``), counting messages,
bytes and sessions and noting when the first and last message were accepted
(``time.monotonic()``, which is system-wide on Linux, so comparable with the benchmark's clock).
Commands on stdin, one per line, each answered with one JSON line: ``stats``, ``reset``, ``quit``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time

from aiosmtpd.controller import Controller


class CountingSink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.count = self.bytes = self.sessions = 0
        self.first = self.last = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        self.sessions += 1
        return responses

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        now = time.monotonic()
        self.count += 1
        self.bytes += len(envelope.original_content or b"")
        if self.first is None:
            self.first = now
        self.last = now
        return "250 OK: queued"

    def stats(self) -> dict[str, object]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"count": self.count, "bytes": self.bytes, "sessions": self.sessions,
                "first": self.first, "last": self.last, "cpu": r.ru_utime + r.ru_stime}


def main() -> None:
    port = int(sys.argv[1])
    handler = CountingSink()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    print(json.dumps({"ready": port}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            print(json.dumps(handler.stats()), flush=True)
        elif cmd == "reset":
            handler.reset()
            print(json.dumps(handler.stats()), flush=True)
        elif cmd == "quit":
            break
    controller.stop()


if __name__ == "__main__":
    main()
