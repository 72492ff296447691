"""`nurture serve`: the unsubscribe pages and webhooks, on waitress.

Waitress is a production WSGI server in pure Python (no compiler, runs wherever nurture runs,
Windows included), maintained by the Pylons project, with a thread pool and no debugger or
reloader to leave on by mistake. Put it behind the reverse proxy that terminates TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .context import pass_app

if TYPE_CHECKING:  # waitress and flask are imported when serving: commands start faster
    from waitress.server import BaseWSGIServer, MultiSocketServer

    from ..app import Nurture

THREADS = 4  # each request is one short transaction
MAX_REQUEST_BODY = 1 << 20  # waitress refuses larger bodies itself; the app caps webhooks lower


def make_server(app: Nurture, host: str, port: int) -> BaseWSGIServer | MultiSocketServer:
    """A waitress server for ``app``, listening already; ``run()`` serves, ``close()`` stops.

    Port 0 picks a free port (see ``effective_port``), for tests.
    """
    from waitress.server import create_server

    from ..web.pages import create_app

    return create_server(create_app(app), host=host, port=port, threads=THREADS,
                         ident="nurture", max_request_body_size=MAX_REQUEST_BODY)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="The port to listen on.")
@pass_app
def serve(app: Nurture, host: str, port: int) -> None:
    """Serve the unsubscribe pages and the webhooks until Ctrl-C."""
    server = make_server(app, host, port)
    click.echo(f"serving on http://{host}:{port}; unsubscribe links point to "
               f"{app.settings.web_base_url} (Ctrl-C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
