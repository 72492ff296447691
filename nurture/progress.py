"""Progress of a long library call (an import, an enrollment), for whoever shows it.

A library function that works through many rows takes an optional ``progress`` callback and
calls it after each batch with how many rows are done and how many there are in all. The
library never draws anything: the CLI passes a callback that draws a bar, and only on a
terminal (see :mod:`nurture.cli.progress`).
"""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(done, total)``: called after each batch; ``done`` only grows and ends at ``total``.
Progress = Callable[[int, int], None]
