"""nurture: personal, spaced emails to referral sources that stop on a reply or a referral.

The public API, for scripts and tests; the ``nurture`` command is a thin layer over it::

    from nurture import Nurture, load_settings, enroll, tick

    app = Nurture.open(load_settings(Path("my-practice")))
    enroll(app, "referral-outreach", tags=["physician"])

Names are imported on first use (PEP 562), so ``import nurture`` and ``nurture --help`` stay
fast: the database, Redis and rendering libraries load only when something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name, and the module it lives in.
_HOMES = {
    "Nurture": "nurture.app",
    "Settings": "nurture.settings",
    "load_settings": "nurture.settings",
    "SystemClock": "nurture.clock",
    "FakeClock": "nurture.clock",
    "NurtureError": "nurture.errors",
    "InputError": "nurture.errors",
    "Problem": "nurture.errors",
    "import_contacts": "nurture.intake.contacts",
    "add_referral": "nurture.intake.referrals",
    "import_referrals": "nurture.intake.referrals_csv",
    "enroll": "nurture.engine",
    "pause_campaign": "nurture.engine",
    "resolve_touch": "nurture.engine",
    "tick": "nurture.ticking",
    "deliver": "nurture.outbound.sending",
    "open_transport": "nurture.outbound.transport",
    "preview": "nurture.outbound.preview",
    "unsubscribe": "nurture.outbound.unsubscribe",
    "record_reply": "nurture.inbound.inbox",
    "process_message": "nurture.inbound.inbox",
    "classify": "nurture.inbound.classify",
    "status": "nurture.report",
    "init_project": "nurture.project",
    "validate_project": "nurture.project",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'nurture' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .app import Nurture
    from .clock import FakeClock, SystemClock
    from .engine import enroll, pause_campaign, resolve_touch
    from .errors import InputError, NurtureError, Problem
    from .inbound.classify import classify
    from .inbound.inbox import process_message, record_reply
    from .intake.contacts import import_contacts
    from .intake.referrals import add_referral
    from .intake.referrals_csv import import_referrals
    from .outbound.preview import preview
    from .outbound.sending import deliver
    from .outbound.transport import open_transport
    from .outbound.unsubscribe import unsubscribe
    from .project import init_project, validate_project
    from .report import status
    from .settings import Settings, load_settings
    from .ticking import tick
