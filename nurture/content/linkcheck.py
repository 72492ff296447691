"""``nurture library check --online``: do the library's links still answer?

Off by default, because it is the only part of nurture that reaches out to arbitrary web
servers, and a check that depends on the network should never decide whether a send happens.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from ..errors import Problem
from .library import Item, Library

__all__ = ["check_links"]


def check_links(library: Library, *, timeout: float = 10.0, workers: int = 8) -> list[Problem]:
    """Ask each item's URL whether it still answers. Goes to the network, so only on request.

    HEAD first (cheap); a server that refuses HEAD is asked again with GET. A 4xx/5xx answer or
    no answer is a problem at the item's line; redirects are followed and fine.
    """
    def one(item: Item) -> Problem | None:
        why = _fetch_problem(item.url, timeout)
        return None if why is None else Problem(item.file, item.line, f"{item.kind} {item.id}",
                                                f"{item.url} {why}")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [p for p in pool.map(one, library.items) if p is not None]


def _fetch_problem(url: str, timeout: float) -> str | None:
    headers = {"User-Agent": "nurture-library-check/1 (+link check)"}
    for method in ("HEAD", "GET"):
        try:
            with urlopen(Request(url, method=method, headers=headers), timeout=timeout):
                return None
        except HTTPError as exc:
            if method == "HEAD" and exc.code in (403, 405, 501):
                continue  # some servers refuse HEAD only
            return f"answered HTTP {exc.code}"
        except (URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"could not be reached: {reason}"
    return None  # pragma: no cover (the loop always returns)
