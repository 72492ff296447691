"""Sample template contexts, for checking templates before any real contact sees them.

``nurture validate`` renders every step twice: once with every field filled
(:func:`sample_context`) and once with the optional ones empty (:func:`sparse_context`), so a
missing field or a "Hi ," is caught before it reaches an inbox. ``nurture preview --sample``
uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date as Date
from typing import Any

__all__ = ["sample_context", "sparse_context"]

_SAMPLE_SENDER = {"name": "Sam Rivera", "email": "sam@riverside-pt.example",
                  "title": "Physical therapist and owner",
                  "practice": "Riverside Physical Therapy", "signature": "Best,"}
_SAMPLE_PRACTICE = {"name": "Riverside Physical Therapy",
                    "address": "120 Main Street, Springfield, IL 62701",
                    "phone": "(555) 010-0199", "website": "https://riverside-pt.example"}


def sample_context(*, practice: Mapping[str, str], sender: Mapping[str, str]) -> dict[str, Any]:
    """A plausible context with every field filled in, for ``nurture validate``. The practice's
    and sender's own values are used where set."""
    sender_view = {k: str(sender.get(k) or v) for k, v in _SAMPLE_SENDER.items()}
    return {
        "contact": {"first_name": "Dana", "last_name": "Whitfield",
                    "email": "dana.whitfield@example.com", "organization": "Lakeside Orthopedics",
                    "role": "Orthopedic surgeon", "interests": ["knee surgery", "trail running"]},
        "sender": sender_view, "owner": dict(sender_view),
        "practice": {k: str(practice.get(k) or v) for k, v in _SAMPLE_PRACTICE.items()},
        "campaign": {"id": "sample", "name": "Sample campaign"},
        "step": {"id": "sample", "layout": "personal"},
        "unsubscribe_url": "https://riverside-pt.example/u/sample-token",
        "referral_count": 2, "last_referral_date": Date(2026, 3, 12), "touch_count": 3,
        "item": None,
    }


def sparse_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """``context`` with every optional field empty: what a contact imported with only an
    email address, and a practice with no phone or website, look like."""
    blank = {"title": "", "signature": ""}
    return {**context,
            "contact": {**context.get("contact", {}), "first_name": "", "last_name": "",
                        "organization": "", "role": "", "interests": []},
            "sender": {**context.get("sender", {}), **blank},
            "owner": {**context.get("owner", {}), **blank},
            "practice": {**context.get("practice", {}), "phone": "", "website": ""},
            "referral_count": 0, "last_referral_date": None, "touch_count": 0}


