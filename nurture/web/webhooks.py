"""Inbound webhooks: who may call them, and what they may say. Pure functions, no web framework.

A sender signs every request::

    X-Nurture-Timestamp: 1796652000                  (unix seconds, when it was signed)
    X-Nurture-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>
    Idempotency-Key: <any 1-200 visible ASCII characters, unique per delivery>

The timestamp must be within :data:`TOLERANCE` of our clock, and a signature is accepted once:
a sender that retries signs again, with a fresh timestamp, and keeps the Idempotency-Key, so
the retry replays the first answer instead of acting twice (see :mod:`nurture.web.pages`).

Bodies are JSON objects, validated completely before anything is written; every problem is
reported at once. The referral payload accepts exactly ``email``, ``date`` and ``ref``, so
patient details (a name, a condition) are refused, never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..clock import as_utc
from ..errors import InputError, NurtureError, Problem
from ..intake.contacts import normalize_email
from ..intake.referrals import check_external_ref
from ..settings import Settings

TIMESTAMP_HEADER = "X-Nurture-Timestamp"
SIGNATURE_HEADER = "X-Nurture-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_PREFIX = "sha256="
TOLERANCE = timedelta(minutes=5)  # either way: a signature is valid for ten minutes at most
MAX_BODY = 64 * 1024  # bytes; a referral or a reply is a few hundred
IDEMPOTENCY_RETENTION = timedelta(days=30)  # a repeat after this is a new delivery
MESSAGE_ID_MAX = 250  # nurture.models.Reply.message_id
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HEX = re.compile(r"[0-9a-f]{64}")

REFERRAL_FIELDS = ("email", "date", "ref")
REPLY_FIELDS = ("email", "received_at", "message_id")


class WebhookError(NurtureError):
    """A request refused with an HTTP status; nothing was written.

    ``problems`` name the header or body field and what is wrong with it, all at once.
    """

    def __init__(self, status: int, error: str, problems: list[Problem] | None = None):
        self.status, self.error, self.problems = status, error, problems or []
        super().__init__(error)

    def body(self) -> dict[str, Any]:
        return {"error": self.error,
                "problems": [{"field": p.field, "message": p.message} for p in self.problems]}


def _header(field: str, message: str) -> Problem:
    return Problem("headers", None, field, message)


def _field(field: str, message: str) -> Problem:
    return Problem("body", None, field, message)


def webhook_secret(settings: Settings) -> str:
    """The secret shared with senders: ``web_webhook_secret`` if set, else ``secret_key``.

    A dedicated secret is better: handing ``secret_key`` to a sender would also let it forge
    unsubscribe links.
    """
    return settings.web_webhook_secret or settings.secret_key


# Signatures ----------------------------------------------------------------------------------
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Nurture-Signature`` value for ``body`` signed at ``timestamp`` (for senders too)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


@dataclass(frozen=True)
class Signed:
    """A request whose signature checked out."""

    signature: str  # the hex digest, the key of replay protection
    signed_at: datetime

    @property
    def expires_at(self) -> datetime:
        """After this the timestamp check refuses the signature, so it need not be kept."""
        return self.signed_at + TOLERANCE


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes,
                     now: datetime) -> Signed:
    """Check the signature and the timestamp's freshness against ``now``; raise 401 if not."""
    if not secret:
        raise WebhookError(401, "webhooks are not configured: no secret is set")
    stamp = headers.get(TIMESTAMP_HEADER, "").strip()
    given = headers.get(SIGNATURE_HEADER, "").strip()
    problems = []
    if not stamp:
        problems.append(_header(TIMESTAMP_HEADER, "is required"))
    elif not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        problems.append(_header(TIMESTAMP_HEADER, f"{stamp!r} is not unix seconds"))
    if not given:
        problems.append(_header(SIGNATURE_HEADER, f"is required ({SIGNATURE_PREFIX}<hex>)"))
    elif not (given.startswith(SIGNATURE_PREFIX) and _HEX.fullmatch(given[len(SIGNATURE_PREFIX):])):
        problems.append(_header(SIGNATURE_HEADER, f"must be {SIGNATURE_PREFIX} and 64 lower-case "
                                "hex digits"))
    if problems:
        raise WebhookError(401, "the request is not signed", problems)
    expected = sign(secret, int(stamp), body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise WebhookError(401, "the signature does not match", [_header(
            SIGNATURE_HEADER, "is not HMAC-SHA256 of '{timestamp}.{body}' with the secret")])
    if abs(now.timestamp() - int(stamp)) > TOLERANCE.total_seconds():
        minutes = int(TOLERANCE.total_seconds() // 60)
        raise WebhookError(401, "the signature has expired", [_header(
            TIMESTAMP_HEADER, f"is more than {minutes} minutes from our clock; sign each request "
            "when sending it, and check the sender's clock")])
    return Signed(given[len(SIGNATURE_PREFIX):], datetime.fromtimestamp(int(stamp), UTC))


def idempotency_key(headers: Mapping[str, str]) -> str:
    key = headers.get(IDEMPOTENCY_HEADER, "")
    if not key:
        raise WebhookError(400, "an Idempotency-Key header is required", [_header(
            IDEMPOTENCY_HEADER, "is required: a unique id per delivery, repeated on retries")])
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise WebhookError(400, "the Idempotency-Key header is not valid", [_header(
            IDEMPOTENCY_HEADER, "must be 1-200 visible ASCII characters, no spaces")])
    return key


# Payloads ------------------------------------------------------------------------------------
def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """The decoded body; 400 if it is not UTF-8 JSON (NaN and repeated keys count as not)."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_refuse_duplicates,
                          parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise WebhookError(400, "the body is not valid JSON", [_field("", str(exc))]) from None


def canonical_hash(payload: Any) -> str:
    """A hash of the payload's meaning: key order and white space don't make it another body."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ReferralHook:
    email: str
    on: date | None = None
    ref: str | None = None


@dataclass(frozen=True)
class ReplyHook:
    email: str
    received_at: datetime | None = None
    message_id: str | None = None


def _unknown_fields(payload: Any, allowed: tuple[str, ...], why: str) -> list[Problem]:
    """A problem per field not in ``allowed``; 422 at once if the body is not an object."""
    if not isinstance(payload, dict):
        raise WebhookError(422, "the body is not valid", [_field(
            "", f"must be a JSON object with the fields {', '.join(allowed)}")])
    return [_field(key, f"is not accepted ({why})")
            for key in sorted(payload) if key not in allowed]


def _string(payload: dict[str, Any], key: str, problems: list[Problem], *,
            required: bool = False) -> str | None:
    value = payload.get(key)
    if value is None:
        if required:
            problems.append(_field(key, "is required"))
        return None
    if not isinstance(value, str):
        problems.append(_field(key, "must be a string"))
        return None
    return value


def _email(payload: dict[str, Any], problems: list[Problem]) -> str:
    value = _string(payload, "email", problems, required=True)
    if value is None:
        return ""
    try:
        return normalize_email(value)
    except ValueError as exc:
        problems.append(_field("email", str(exc)))
        return ""


def _invalid(problems: list[Problem]) -> WebhookError:
    return WebhookError(422, f"the body is not valid: {len(problems)} problem"
                        f"{'s' if len(problems) != 1 else ''}", problems)


def validate_referral(payload: Any) -> ReferralHook:
    """``{"email": str, "date": "YYYY-MM-DD" (optional), "ref": opaque id (optional)}``.

    Any other field is refused by name: no patient details reach nurture.
    """
    unknown = _unknown_fields(payload, REFERRAL_FIELDS,
                              "only email, date and ref: no patient details")
    problems: list[Problem] = []
    email = _email(payload, problems)
    on = None
    if (text := _string(payload, "date", problems)) is not None:
        try:
            if not _DATE.fullmatch(text):
                raise ValueError
            on = date.fromisoformat(text)
        except ValueError:
            problems.append(_field("date", f"{text!r} is not a date in the form YYYY-MM-DD"))
    ref = _string(payload, "ref", problems)
    if ref is not None:
        try:
            check_external_ref(ref)
        except InputError as exc:
            problems.extend(_field("ref", p.message) for p in exc.problems)
    if problems := problems + unknown:
        raise _invalid(problems)
    return ReferralHook(email, on, ref)


def validate_reply(payload: Any) -> ReplyHook:
    """``{"email": str, "received_at": ISO-8601 with offset (optional), "message_id": str}``."""
    unknown = _unknown_fields(payload, REPLY_FIELDS, "only email, received_at and message_id")
    problems: list[Problem] = []
    email = _email(payload, problems)
    at = None
    if (text := _string(payload, "received_at", problems)) is not None:
        try:
            at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            problems.append(_field("received_at", f"{text!r} is not an ISO-8601 time, e.g. "
                                   "2026-12-07T15:00:00Z"))
        else:
            if at.tzinfo is None:
                problems.append(_field("received_at", f"{text!r} has no UTC offset: add Z or "
                                       "+hh:mm"))
                at = None
            else:
                at = as_utc(at)
    message_id = _string(payload, "message_id", problems)
    if message_id is not None and not 0 < len(message_id.strip()) <= MESSAGE_ID_MAX:
        problems.append(_field("message_id", f"must be 1-{MESSAGE_ID_MAX} characters"))
    if problems := problems + unknown:
        raise _invalid(problems)
    return ReplyHook(email, at, message_id.strip() if message_id else None)
