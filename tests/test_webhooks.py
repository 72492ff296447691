"""Webhook signatures and payloads, as pure functions: no server, no database."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta

import pytest

from nurture.web.webhooks import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReferralHook,
    ReplyHook,
    WebhookError,
    canonical_hash,
    idempotency_key,
    parse_json,
    sign,
    validate_referral,
    validate_reply,
    verify_signature,
)

NOW = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
BODY = b'{"email": "dr.lee@clinic.example"}'


def headers(secret: str = "s3cret", ts: int = TS, body: bytes = BODY) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


def refused(call: object, *args: object) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def fields(exc: WebhookError) -> dict[str, str]:
    return {p["field"]: p["message"] for p in exc.body()["problems"]}


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", TS, BODY) == f"sha256={expected}"


def test_good_signature_is_accepted_and_kept_until_the_tolerance_ends() -> None:
    signed = verify_signature("s3cret", headers(), BODY, NOW)
    assert f"sha256={signed.signature}" == headers()[SIGNATURE_HEADER]
    assert signed.signed_at == NOW
    assert signed.expires_at == NOW + timedelta(minutes=5)


@pytest.mark.parametrize("secret, body", [("wrong", BODY), ("s3cret", BODY + b" ")])
def test_wrong_secret_or_changed_body_is_refused(secret: str, body: bytes) -> None:
    exc = refused(verify_signature, "s3cret", headers(secret, body=BODY), body, NOW)
    assert (exc.status, exc.error) == (401, "the signature does not match")


@pytest.mark.parametrize("seconds, ok", [(-300, True), (300, True), (-301, False), (301, False),
                                         (-86400, False)])
def test_timestamp_must_be_within_five_minutes_either_way(seconds: int, ok: bool) -> None:
    hdrs = headers(ts=TS + seconds)
    if ok:
        assert verify_signature("s3cret", hdrs, BODY, NOW).signed_at == NOW + timedelta(
            seconds=seconds)
    else:
        exc = refused(verify_signature, "s3cret", hdrs, BODY, NOW)
        assert exc.status == 401 and "5 minutes" in fields(exc)[TIMESTAMP_HEADER]


def test_missing_or_malformed_headers_are_all_named() -> None:
    exc = refused(verify_signature, "s3cret", {}, BODY, NOW)
    assert exc.status == 401 and set(fields(exc)) == {TIMESTAMP_HEADER, SIGNATURE_HEADER}
    hdrs = {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "md5=abc"}
    exc = refused(verify_signature, "s3cret", hdrs, BODY, NOW)
    assert "not unix seconds" in fields(exc)[TIMESTAMP_HEADER]
    assert "sha256=" in fields(exc)[SIGNATURE_HEADER]


def test_absurd_timestamp_is_refused_not_crashing() -> None:
    exc = refused(verify_signature, "s3cret", headers(ts=999999999999), BODY, NOW)
    assert exc.status == 401


def test_no_secret_refuses_everything() -> None:
    assert refused(verify_signature, "", headers(""), BODY, NOW).status == 401


def test_idempotency_key_is_required_and_bounded() -> None:
    assert idempotency_key({IDEMPOTENCY_HEADER: "evt_123:retry-safe"}) == "evt_123:retry-safe"
    for bad in ({}, {IDEMPOTENCY_HEADER: ""}, {IDEMPOTENCY_HEADER: "has space"},
                {IDEMPOTENCY_HEADER: "k" * 201}):
        exc = refused(idempotency_key, bad)
        assert exc.status == 400 and IDEMPOTENCY_HEADER in fields(exc)


@pytest.mark.parametrize("body, why", [
    (b'{"email": ', "Expecting value"),
    (b"\xff\xfe{}", "utf-8"),
    (b'{"email": "a@b.example", "email": "c@d.example"}', "appears twice"),
    (b'{"email": NaN}', "NaN is not JSON"),
    (b"", "Expecting value"),
])
def test_malformed_json_is_a_400(body: bytes, why: str) -> None:
    exc = refused(parse_json, body)
    assert exc.status == 400 and why in exc.body()["problems"][0]["message"]


def test_canonical_hash_ignores_key_order_and_spacing_only() -> None:
    a = parse_json(b'{"email": "a@b.example", "ref": "R1"}')
    b = parse_json(b'{"ref":"R1","email":"a@b.example"}')
    assert canonical_hash(a) == canonical_hash(b)
    assert canonical_hash(a) != canonical_hash({**a, "ref": "R2"})


def test_referral_payload() -> None:
    assert validate_referral({"email": " Dr.Lee@Clinic.example ", "date": "2026-12-04",
                              "ref": "EHR-123"}) == ReferralHook(
        "dr.lee@clinic.example", date(2026, 12, 4), "EHR-123")
    assert validate_referral({"email": "dr.lee@clinic.example", "date": None}) == ReferralHook(
        "dr.lee@clinic.example")


def test_referral_payload_lists_every_problem_and_names_patient_fields() -> None:
    exc = refused(validate_referral, {"date": "12/04/2026", "ref": "Jane Doe",
                                      "patient_name": "Jane Doe", "diagnosis": "ACL"})
    assert exc.status == 422
    assert list(fields(exc)) == ["email", "date", "ref", "diagnosis", "patient_name"]
    assert fields(exc)["email"] == "is required"
    assert "YYYY-MM-DD" in fields(exc)["date"]
    assert "no names or spaces" in fields(exc)["ref"]
    assert "no patient details" in fields(exc)["patient_name"]
    assert exc.error == "the body is not valid: 5 problems"


@pytest.mark.parametrize("payload, field, message", [
    ({"email": "not-an-address"}, "email", "is not an email address"),
    ({"email": 42}, "email", "must be a string"),
    ({"email": "a@b.example", "date": "2026-02-30"}, "date", "is not a date"),
    ({"email": "a@b.example", "date": "20261204"}, "date", "is not a date"),
    ({"email": "a@b.example", "ref": 7}, "ref", "must be a string"),
])
def test_referral_payload_single_problems(payload: dict[str, object], field: str,
                                          message: str) -> None:
    exc = refused(validate_referral, payload)
    assert list(fields(exc)) == [field] and message in fields(exc)[field]


@pytest.mark.parametrize("payload", [[], "a@b.example", None, 3])
def test_payload_must_be_an_object(payload: object) -> None:
    exc = refused(validate_referral, payload)
    assert exc.status == 422 and "JSON object" in fields(exc)[""]


def test_reply_payload() -> None:
    hook = validate_reply({"email": "dr.lee@clinic.example",
                           "received_at": "2026-12-07T09:30:00-05:00",
                           "message_id": "<abc@clinic.example>"})
    assert hook == ReplyHook("dr.lee@clinic.example", datetime(2026, 12, 7, 14, 30, tzinfo=UTC),
                             "<abc@clinic.example>")
    assert hook.received_at is not None and hook.received_at.tzinfo == UTC
    assert validate_reply({"email": "dr.lee@clinic.example"}) == ReplyHook("dr.lee@clinic.example")


def test_reply_payload_lists_every_problem() -> None:
    exc = refused(validate_reply, {"email": "x", "received_at": "2026-12-07T09:30:00",
                                   "message_id": "", "subject": "Re: hello"})
    assert list(fields(exc)) == ["email", "received_at", "message_id", "subject"]
    assert "no UTC offset" in fields(exc)["received_at"]
    exc = refused(validate_reply, {"email": "a@b.example", "received_at": "last tuesday"})
    assert "not an ISO-8601 time" in fields(exc)["received_at"]
