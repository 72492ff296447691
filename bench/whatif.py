"""What-if patches: nurture with one change applied at run time (monkeypatching, no file under
nurture/ is touched), to measure what a proposed change would gain before anyone makes it.

- ``ssl``: build the SSL context once per process instead of once per SMTP connection
  (``SmtpTransport._connect`` calls ``ssl.create_default_context()`` even for plain SMTP).
- ``tags``: ``Contact.tags`` loaded on access instead of eagerly (``lazy="selectin"`` costs one
  more SELECT each time the send path loads a touch → enrollment → contact).
- ``campaigns``: ``Nurture.campaigns`` re-stats the campaign and template folders at most once
  a second instead of on every access (three times per email).
- ``nolimits``: the per-mailbox limit check (``take_send``) skipped entirely (an upper bound for
  the cost of its row lock, held from the check to the end of the claim transaction).

Call :func:`apply` before nurture opens a database (mappers are configured on first use).
"""

from __future__ import annotations

import functools
import time
from typing import Any

NAMES = ("ssl", "tags", "campaigns", "nolimits")


def apply(names: list[str] | tuple[str, ...]) -> list[str]:
    """Apply the named patches; returns those that applied to this version of nurture."""
    done = []
    for name in names:
        if name and globals()[f"_{name}"]():
            done.append(name)
    return done


def _ssl() -> bool:
    import types

    from nurture import delivery

    real = delivery.ssl
    context = functools.lru_cache(maxsize=None)(real.create_default_context)
    shim = types.ModuleType("ssl")
    shim.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    shim.create_default_context = context  # memoized: the same arguments, the same context
    delivery.ssl = shim
    return True


def _tags() -> bool:
    from nurture.models import Contact

    rel = Contact.__mapper__._props.get("tags")
    if rel is None or Contact.__mapper__.configured:
        return False
    rel.lazy = "select"
    rel.strategy_key = (("lazy", "select"),)
    return True


def _campaigns() -> bool:
    from nurture import app as app_mod

    fget = app_mod.Nurture.campaigns.fget
    last: dict[int, float] = {}

    def campaigns(self: Any) -> Any:
        now = time.monotonic()
        if self._campaigns is not None and now - last.get(id(self), 0.0) < 1.0:
            return self._campaigns
        last[id(self)] = now
        return fget(self)

    app_mod.Nurture.campaigns = property(campaigns)
    return True


def _nolimits() -> bool:
    from nurture import sending

    if not hasattr(sending, "take_send"):
        return False
    sending.take_send = lambda *args, **kwargs: None
    return True
