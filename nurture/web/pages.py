"""The web endpoints `nurture serve` answers: unsubscribe pages and signed webhooks.

``GET /u/<token>``
    A plain page naming the practice and the (partly masked) address, with one button. A GET
    never unsubscribes: mail scanners open links.
``POST /u/<token>``
    Unsubscribes at once (RFC 8058 one-click: the body ``List-Unsubscribe=One-Click``, no
    cookies). Every email not yet sent is cancelled. Idempotent; answers 200 with a page.
``POST /hooks/referral``, ``POST /hooks/reply``
    Signed JSON (see :mod:`nurture.web.webhooks`): a referral or a reply, recorded through the same
    library functions as the CLI, in the transaction that records the delivery. A new referral
    is then reported to the owner, like one from the CLI; a replayed delivery is not. Errors
    are JSON ``{"error": …, "problems": [{"field": …, "message": …}]}`` and change nothing:
    400, 401, 404, 409, 413, 422.

Built on Flask: small, long maintained by the Pallets team, and it brings only what nurture
already uses (Jinja2, click, itsdangerous) plus Werkzeug. Its test client lets the tests drive
every endpoint in-process, on both databases.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from flask import Flask, Response, request
from jinja2 import Environment, StrictUndefined
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from ..app import Nurture
from ..conflicts import retry_conflicts
from ..engine import suppress_contact
from ..errors import InputError, NurtureError, Problem
from ..inbound.inbox import record_reply_in
from ..intake.contacts import get_contact
from ..intake.referrals import future_date_problem, notify_referrals, record_referral, referral_day
from ..models import Contact, ContactStatus, WebhookDelivery, WebhookSignature
from ..outbound.notify import reply_note, tell_owner
from ..outbound.unsubscribe import read_token
from . import webhooks

log = logging.getLogger(__name__)

H = TypeVar("H")

_PAGES = Environment(autoescape=True, undefined=StrictUndefined)
PAGE = _PAGES.from_string("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} - {{ practice }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem;
       line-height: 1.5; color: #222; }
button { font: inherit; padding: .5rem 1.5rem; cursor: pointer; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% for line in lines %}<p>{{ line }}</p>
{% endfor %}{% if form %}<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" name="via" value="page">Unsubscribe</button>
</form>
{% endif %}</body>
</html>
""")

# Nothing on these pages needs scripts, frames, referrers or caching; the token is a secret.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
}


def create_app(nurture: Nurture) -> Flask:
    """The WSGI application serving ``nurture``'s project."""
    web = Flask(__name__)
    web.config["MAX_CONTENT_LENGTH"] = webhooks.MAX_BODY  # larger bodies get 413 unread

    @web.get("/u/<token>")
    def unsubscribe_page(token: str) -> Response:
        contact = _contact_for(nurture, token)
        if isinstance(contact, Response):
            return contact
        if contact.status == ContactStatus.UNSUBSCRIBED:
            return _done_page(nurture, contact.email)
        return _page(nurture, 200, "Unsubscribe", [
            f"{_practice(nurture)} sends occasional emails to {mask_email(contact.email)}.",
            "Press the button to stop them. Nothing changes until you do."], form=True)

    @web.post("/u/<token>")
    def unsubscribe_now(token: str) -> Response:
        contact = _contact_for(nurture, token)
        if isinstance(contact, Response):
            return contact
        # Any POST counts, whatever its body: a mail client's one-click sends
        # List-Unsubscribe=One-Click, the page's button adds via=page (kept for the log).
        why = "unsubscribe page" if request.form.get("via") == "page" else "one-click unsubscribe"
        email = unsubscribe_contact(nurture, contact.id, why)
        if email is None:
            return _gone_page(nurture)
        return _done_page(nurture, email)

    @web.post("/hooks/referral")
    def referral_hook() -> Response:
        return _hook(nurture, "referral", webhooks.validate_referral, _record_referral)

    @web.post("/hooks/reply")
    def reply_hook() -> Response:
        return _hook(nurture, "reply", webhooks.validate_reply, _record_reply)

    @web.errorhandler(webhooks.WebhookError)
    def webhook_error(exc: webhooks.WebhookError) -> Response:
        if exc.status == 401:
            log.warning("webhook %s refused: %s", request.path, exc.error)
        return _json(exc.status, exc.body())

    @web.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        if not request.path.startswith("/hooks/"):
            return exc
        message = (f"the body is larger than {webhooks.MAX_BODY} bytes" if exc.code == 413
                   else str(exc.description))
        return _json(exc.code or 500, {"error": message, "problems": []})

    @web.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return web


# Unsubscribe --------------------------------------------------------------------------------
def unsubscribe_contact(app: Nurture, contact_id: int, why: str) -> str | None:
    """Unsubscribe the contact with this id, at once; None if there is no such contact.

    Every unsent email to them is cancelled in the same transaction. Doing it again is harmless.
    """
    with app.db.transaction() as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            return None
        suppress_contact(app, session, contact, ContactStatus.UNSUBSCRIBED, why)
        return contact.email


def mask_email(email: str) -> str:
    """``dana.lee@clinic.example`` → ``d***@clinic.example``: recognisable, not harvestable."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _contact_for(nurture: Nurture, token: str) -> Contact | Response:
    try:
        contact_id = read_token(nurture.settings, token)
    except NurtureError:
        return _page(nurture, 400, "This link is not valid", [
            "This unsubscribe link is incomplete or was changed. Please open it exactly as it "
            "appears in the email, or reply to the email and ask us to stop."])
    with nurture.db.transaction() as session:
        contact = session.get(Contact, contact_id)
    return _gone_page(nurture) if contact is None else contact


def _practice(nurture: Nurture) -> str:
    s = nurture.settings
    return s.practice_name or s.sender_name or "This practice"


def _done_page(nurture: Nurture, email: str) -> Response:
    return _page(nurture, 200, "You are unsubscribed", [
        f"{_practice(nurture)} will not email {mask_email(email)} again."])


def _gone_page(nurture: Nurture) -> Response:
    return _page(nurture, 404, "Address not found", [
        "This address is no longer on our list, so no more emails will be sent to it."])


def _page(nurture: Nurture, status: int, title: str, lines: list[str], *,
          form: bool = False) -> Response:
    html = PAGE.render(title=title, practice=_practice(nurture), lines=lines, form=form)
    return Response(html, status, mimetype="text/html")


# Webhooks -----------------------------------------------------------------------------------
def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, sort_keys=True), status, mimetype="application/json")


@dataclass(frozen=True)
class Acted:
    """What a webhook did inside its transaction: the JSON answer to remember and return, and
    what to do once that transaction has committed (tell the owner), never on a replay."""

    answer: dict[str, Any]
    after_commit: Callable[[], object] | None = None


def _record_referral(app: Nurture, session: Session, hook: webhooks.ReferralHook) -> Acted:
    """The referral intake every path shares; the owner's note follows the commit."""
    on = referral_day(app, hook.on)
    if (problem := future_date_problem(on, referral_day(app))) is not None:
        raise webhooks.WebhookError(422, "the body is not valid", [
            Problem("body", None, "date", problem)])
    result = record_referral(app, session, hook.email, on, hook.ref, "webhook")
    if result.duplicate:  # this ref was recorded before (by any path): nothing new to tell
        return Acted(asdict(result))
    return Acted(asdict(result), lambda: notify_referrals(app, [(result, on)]))


def _record_reply(app: Nurture, session: Session, hook: webhooks.ReplyHook) -> Acted:
    contact = get_contact(session, hook.email)
    if contact is None:
        raise webhooks.WebhookError(404, f"no contact with email {hook.email!r}", [
            Problem("body", None, "email", "is not a contact")])
    result = record_reply_in(app, session, contact, at=hook.received_at, source="webhook",
                             message_id=hook.message_id)
    subject, body = reply_note(app, session, contact, result, hook.message_id)
    return Acted(asdict(result), lambda: tell_owner(app, subject, body))


def _hook(nurture: Nurture, endpoint: str, validate: Callable[[Any], H],
          act: Callable[[Nurture, Session, H], Acted]) -> Response:
    """Authenticate, validate completely, then act once per Idempotency-Key, all or nothing.

    A twin delivery (same key) running at the same moment makes one of the two transactions
    fail on the key's unique index; that one runs again and replays the other's answer.
    """
    body = request.get_data()  # raises 413 past MAX_CONTENT_LENGTH
    secret = webhooks.webhook_secret(nurture.settings)
    headers = {name.title(): value for name, value in request.headers.items()}
    signed = webhooks.verify_signature(secret, headers, body, nurture.now())
    key = webhooks.idempotency_key(headers)
    payload = webhooks.parse_json(body)
    hook = validate(payload)
    digest = webhooks.canonical_hash(payload)
    status, text, acted = retry_conflicts(nurture.db, lambda session: _deliver(
        nurture, session, endpoint, key, digest, signed, lambda: act(nurture, session, hook)))
    response = Response(text, status, mimetype="application/json")
    if acted is None:
        response.headers["Idempotent-Replayed"] = "true"
    elif acted.after_commit is not None:
        acted.after_commit()
    return response


def _deliver(nurture: Nurture, session: Session, endpoint: str, key: str, digest: str,
             signed: webhooks.Signed,
             act: Callable[[], Acted]) -> tuple[int, str, Acted | None]:
    """Inside one transaction: refuse a replayed signature, replay or refuse a known key, or act
    and remember the answer. Any error rolls all of it back, the library's writes included.
    Returns the status, the JSON answer and what was done (None for a replayed answer)."""
    now = nurture.now()
    if session.get(WebhookSignature, signed.signature) is not None:
        raise webhooks.WebhookError(401, "this signed request was already received", [Problem(
            "headers", None, webhooks.SIGNATURE_HEADER, "was used before: sign every delivery "
            "afresh (a new timestamp) and repeat the Idempotency-Key to retry")])
    session.add(WebhookSignature(signature=signed.signature, expires_at=signed.expires_at))
    session.flush()  # a concurrent twin with this signature now waits for us, then fails
    done = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.endpoint == endpoint, WebhookDelivery.idempotency_key == key))
    if done is not None:
        if done.body_sha256 != digest:
            raise webhooks.WebhookError(409, "this Idempotency-Key was used with another body", [
                Problem("headers", None, webhooks.IDEMPOTENCY_HEADER,
                        "was already used for a different request: use a new key")])
        return done.status, done.response, None
    delivery = WebhookDelivery(endpoint=endpoint, idempotency_key=key, body_sha256=digest,
                               status=0, response="", received_at=now)
    session.add(delivery)
    session.flush()  # claims the key before acting
    try:
        acted = act()
    except InputError as exc:  # checked already; the library has the last word
        raise webhooks.WebhookError(422, "the body is not valid", [
            Problem("body", None, p.field, p.message) for p in exc.problems]) from None
    delivery.status, delivery.response = 200, json.dumps(acted.answer, sort_keys=True)
    session.execute(delete(WebhookSignature).where(WebhookSignature.expires_at < now))
    session.execute(delete(WebhookDelivery).where(
        WebhookDelivery.received_at < now - webhooks.IDEMPOTENCY_RETENTION))
    return delivery.status, delivery.response, acted
