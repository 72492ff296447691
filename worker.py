"""Start the nurture worker daemon: the same as `nurture worker`.

    python worker.py [--now ISO-8601] [--project DIR] [--burst] ...

Global options (``--now``, ``--project``, ``--database-url``...) and ``--burst`` may be given in
any order.
"""

import sys

WORKER_FLAGS = {"--burst"}

if __name__ == "__main__":  # not on import: the worker's spawned children import this file
    from nurture.cli import main

    args = sys.argv[1:]
    flags = [a for a in args if a in WORKER_FLAGS]
    options = [a for a in args if a not in WORKER_FLAGS]
    main([*options, "worker", *flags])
