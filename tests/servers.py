"""The real `nurture serve` server (waitress) in a thread on a free loopback port, for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from nurture.app import Nurture
from nurture.cli.web import make_server


@contextmanager
def live_server(app: Nurture) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields the base URL, which unsubscribe links in
    emails composed meanwhile point at (``web_base_url`` is read per request)."""
    server = make_server(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]
    app.settings = replace(app.settings, web_base_url=url)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        def stop() -> None:  # on the server's own loop: a browser's idle keep-alive connections
            for channel in list(server.active_channels.values()):  # type: ignore[union-attr]
                channel.handle_close()  # would otherwise keep the loop alive for two minutes
            server.close()

        server.trigger.pull_trigger(stop)  # type: ignore[union-attr]
        thread.join(10)
        assert not thread.is_alive(), "the server did not stop"
        server.task_dispatcher.shutdown()  # type: ignore[union-attr]
