"""Unsubscribe links and the unsubscribe itself, which takes effect at once.

Tokens are signed with the project's secret and a salt of their own (so a token made for
anything else can't be replayed here) and carry only the contact id. They never expire: an
unsubscribe link in a two-year-old email must still work.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeSerializer

from ..errors import NotFound, NurtureError
from ..models import ContactStatus
from ..settings import Settings

if TYPE_CHECKING:
    from ..app import Nurture

SALT = "nurture.unsubscribe"  # kept from before the module moved: old links still work


def _serializer(settings: Settings) -> URLSafeSerializer:
    return _serializer_for(settings.secret_key)


@functools.lru_cache(maxsize=8)
def _serializer_for(secret_key: str) -> URLSafeSerializer:
    """Built once per secret: every email asks for two tokens."""
    return URLSafeSerializer(secret_key, salt=SALT)


def make_token(settings: Settings, contact_id: int) -> str:
    return _serializer(settings).dumps(contact_id)


def read_token(settings: Settings, token: str) -> int:
    try:
        value = _serializer(settings).loads(token)
    except BadSignature:
        raise NurtureError("this unsubscribe link is not valid") from None
    if not isinstance(value, int):
        raise NurtureError("this unsubscribe link is not valid")
    return value


def unsubscribe_url(settings: Settings, contact_id: int) -> str:
    return f"{settings.web_base_url.rstrip('/')}/u/{make_token(settings, contact_id)}"


def unsubscribe_mailto(settings: Settings, contact_id: int) -> str:
    token = make_token(settings, contact_id)
    return f"mailto:{settings.sender_email}?subject=unsubscribe%20{token}"


def unsubscribe(app: Nurture, email: str) -> str:
    """Unsubscribe a contact by address; every unsent email to them is cancelled at once."""
    from ..engine import suppress_contact
    from ..intake.contacts import get_contact

    with app.db.transaction() as session:
        contact = get_contact(session, email)
        if contact is None:
            raise NotFound(f"no contact with email {email!r}")
        suppress_contact(app, session, contact, ContactStatus.UNSUBSCRIBED, "by hand")
        return contact.email
