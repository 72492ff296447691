"""The web endpoints on both databases: unsubscribe pages and signed webhooks.

Most tests drive the Flask app in-process with its test client; one starts the real waitress
server on a free port and talks to it over HTTP.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from nurture.app import Nurture
from nurture.cli.context import Context
from nurture.cli.web import serve
from nurture.clock import FakeClock
from nurture.models import (
    Contact,
    Enrollment,
    Event,
    Referral,
    Reply,
    Touch,
    WebhookDelivery,
    WebhookSignature,
)
from nurture.outbound.unsubscribe import make_token
from nurture.web import pages as web
from nurture.web.webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.races import hold_until_blocked
from tests.seeding import (
    LEE,
    SAM,
    contact,
    count,
    outbox,
    queue_due,
    rows,
    seed_outreach,
    touches,
)
from tests.servers import live_server
from tests.smtp_sink import free_port

# Made by make_token(settings with secret_key "test-secret", 1) when this test was written:
# links in old emails must keep working, so the token format must not change under them.
OLD_TOKEN_FOR_CONTACT_1 = "MQ.DzKC2c1oIdEwEjfa8DLm5CKnb2M"


@pytest.fixture
def project(app: Nurture, tmp_path: Path) -> Nurture:
    """Two prospects enrolled in referral-outreach, each with the first touch planned now."""
    return seed_outreach(app, tmp_path)


@pytest.fixture
def client(project: Nurture) -> FlaskClient:
    return web.create_app(project).test_client()


def snapshot(app: Nurture) -> dict[str, Any]:
    """Everything a webhook or an unsubscribe could change."""
    return {"contacts": [(c.email, c.status) for c in rows(app, Contact)],
            "touches": sorted((t.id, t.state) for t in rows(app, Touch)),
            "referrals": count(app, Referral), "replies": count(app, Reply),
            "events": count(app, Event), "deliveries": count(app, WebhookDelivery),
            "signatures": count(app, WebhookSignature)}


def post_hook(client: FlaskClient, app: Nurture, path: str, payload: Any = None, *,
              key: str | None = "key-1", secret: str = "test-secret", skew: int = 0,
              raw: bytes | None = None) -> TestResponse:
    body = raw if raw is not None else json.dumps(payload).encode()
    ts = int(app.now().timestamp()) + skew
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}
    if key is not None:
        headers[IDEMPOTENCY_HEADER] = key
    return client.post(path, data=body, headers=headers, content_type="application/json")


def problems(response: TestResponse) -> dict[str, str]:
    body = response.get_json()
    assert set(body) == {"error", "problems"}
    return {p["field"]: p["message"] for p in body["problems"]}


# Unsubscribe --------------------------------------------------------------------------------
def test_get_page_asks_and_changes_nothing(client: FlaskClient, project: Nurture) -> None:
    before = snapshot(project)
    token = make_token(project.settings, contact(project).id)
    response = client.get(f"/u/{token}")
    assert response.status_code == 200
    page = response.text
    assert "Rivera Physical Therapy" in page and "d***@clinic.example" in page
    assert LEE not in page  # the address is masked
    assert re.search(r'<form method="post">.*<button[^>]*>Unsubscribe</button>.*</form>', page,
                     re.S)
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    assert client.head(f"/u/{token}").status_code == 200
    assert snapshot(project) == before
    assert contact(project).status == "active"


def test_one_click_post_unsubscribes_and_cancels_a_queued_touch(client: FlaskClient,
                                                                project: Nurture) -> None:
    assert len(queue_due(project)) == 1  # Sam's window in Chicago opens later
    assert touches(project) == {"hello": "queued"}
    token = make_token(project.settings, contact(project).id)
    response = client.post(f"/u/{token}", data=b"List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and "Location" not in response.headers
    assert "You are unsubscribed" in response.text and "d***@clinic.example" in response.text
    assert contact(project).status == "unsubscribed"
    assert touches(project) == {"hello": "cancelled"}
    assert touches(project, SAM) == {"hello": "scheduled"}  # only Dana's
    [event] = rows(project, Event, Event.kind == "contact_unsubscribed")
    assert event.data["why"] == "one-click unsubscribe"

    again = client.post(f"/u/{token}", data=b"List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded")
    assert again.status_code == 200 and "You are unsubscribed" in again.text
    assert count(project, Event, Event.kind == "contact_unsubscribed") == 1
    page = client.get(f"/u/{token}")
    assert "You are unsubscribed" in page.text and "<button" not in page.text


def test_the_page_button_posts_a_one_click_body(client: FlaskClient, project: Nurture) -> None:
    token = make_token(project.settings, contact(project).id)
    page = client.get(f"/u/{token}").text
    form = dict(re.findall(r'<(?:input|button)[^>]*name="([^"]+)" value="([^"]+)"', page))
    assert form == {"List-Unsubscribe": "One-Click", "via": "page"}
    response = client.post(f"/u/{token}", data=form)  # what a browser sends on a click
    assert response.status_code == 200
    assert contact(project).status == "unsubscribed"
    assert touches(project) == {"hello": "cancelled"}
    [event] = rows(project, Event, Event.kind == "contact_unsubscribed")
    assert event.data["why"] == "unsubscribe page"


def test_forged_or_garbled_tokens_are_refused_plainly(client: FlaskClient,
                                                      project: Nurture) -> None:
    from itsdangerous import URLSafeSerializer

    before = snapshot(project)
    good = make_token(project.settings, contact(project).id)
    forged = [good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
              "garbage", "MQ",
              URLSafeSerializer("another-secret", salt="nurture.outbound.unsubscribe").dumps(1),
              URLSafeSerializer("test-secret", salt="some.other.purpose").dumps(1),
              URLSafeSerializer("test-secret", salt="nurture.outbound.unsubscribe").dumps("1")]
    for token in forged:
        for method in (client.get, client.post):
            response = method(f"/u/{token}")
            assert response.status_code == 400, token
            assert "This unsubscribe link is incomplete or was changed" in response.text
    assert snapshot(project) == before


def test_a_token_made_long_ago_still_works(client: FlaskClient, project: Nurture,
                                           clock: FakeClock) -> None:
    assert contact(project).id == 1
    assert make_token(project.settings, 1) == OLD_TOKEN_FOR_CONTACT_1
    clock.advance(days=365 * 2)
    response = client.post(f"/u/{OLD_TOKEN_FOR_CONTACT_1}",
                           data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert contact(project).status == "unsubscribed"


def test_a_token_for_a_deleted_contact_is_not_found(client: FlaskClient,
                                                    project: Nurture) -> None:
    token = make_token(project.settings, 999_999)
    assert client.get(f"/u/{token}").status_code == 404
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 404 and "no longer on our list" in response.text


# Webhooks: referral -------------------------------------------------------------------------
def test_signed_referral_is_recorded_and_the_thank_you_planned(client: FlaskClient,
                                                               project: Nurture) -> None:
    response = post_hook(client, project, "/hooks/referral",
                         {"email": "Dr.Lee@Clinic.example", "date": "2026-12-04",
                          "ref": "EHR-1042"})
    assert response.status_code == 200, response.text
    assert response.get_json() == {
        "email": LEE, "new_contact": False, "duplicate": False,
        "stopped": ["referral-outreach"], "thank_you": ["referral-outreach/thank-you"],
        "enrolled": ["partner-care"]}
    [referral] = rows(project, Referral)
    assert (referral.contact_id, referral.referred_on, referral.external_ref, referral.source) == (
        contact(project).id, date(2026, 12, 4), "EHR-1042", "webhook")
    [thanks] = rows(project, Touch, Touch.step_id == "thank-you")
    assert (thanks.trigger_key, thanks.state) == ("2026-12-04", "scheduled")
    assert thanks.due_at >= project.now()
    assert touches(project)["hello"] == "cancelled"
    assert "Idempotent-Replayed" not in response.headers


def test_wrong_secret_is_401_and_changes_nothing(client: FlaskClient, project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral", {"email": LEE}, secret="guess")
    assert response.status_code == 401
    assert response.get_json()["error"] == "the signature does not match"
    assert SIGNATURE_HEADER in problems(response)
    assert snapshot(project) == before


def test_unsigned_request_is_401(client: FlaskClient, project: Nurture) -> None:
    response = client.post("/hooks/referral", json={"email": LEE},
                           headers={IDEMPOTENCY_HEADER: "k"})
    assert response.status_code == 401
    assert set(problems(response)) == {TIMESTAMP_HEADER, SIGNATURE_HEADER}
    assert count(project, Referral) == 0


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_stale_or_future_timestamp_is_401(client: FlaskClient, project: Nurture,
                                          skew: int) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral", {"email": LEE}, skew=skew)
    assert response.status_code == 401
    assert response.get_json()["error"] == "the signature has expired"
    assert snapshot(project) == before


def test_timestamp_within_tolerance_is_accepted(client: FlaskClient, project: Nurture) -> None:
    assert post_hook(client, project, "/hooks/referral", {"email": LEE},
                     skew=-299).status_code == 200


def test_replayed_signature_is_401_even_with_a_new_key(client: FlaskClient,
                                                       project: Nurture,
                                                       clock: FakeClock) -> None:
    body = json.dumps({"email": LEE}).encode()
    ts = int(project.now().timestamp())
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign("test-secret", ts, body),
               IDEMPOTENCY_HEADER: "key-1"}
    assert client.post("/hooks/referral", data=body, headers=headers).status_code == 200
    clock.advance(minutes=4)  # still inside the tolerance
    for key in ("key-1", "key-2"):
        replay = client.post("/hooks/referral", data=body,
                             headers={**headers, IDEMPOTENCY_HEADER: key})
        assert replay.status_code == 401, key
        assert replay.get_json()["error"] == "this signed request was already received"
    assert count(project, Referral) == 1


def test_idempotent_repeat_replays_the_answer_and_changes_nothing(
        client: FlaskClient, project: Nurture, clock: FakeClock) -> None:
    first = post_hook(client, project, "/hooks/referral", {"email": LEE, "date": "2026-12-04"})
    assert first.status_code == 200
    after_first = snapshot(project)
    clock.advance(minutes=2)
    # A retry: signed again (new timestamp), same key, same JSON with its keys in another order.
    body = b'{"date":"2026-12-04","email":"dr.lee@clinic.example"}'
    ts = int(project.now().timestamp())
    retry = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign("test-secret", ts, body),
             IDEMPOTENCY_HEADER: "key-1"}
    repeat = client.post("/hooks/referral", data=body, headers=retry)
    assert repeat.status_code == 200
    assert repeat.data == first.data
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert count(project, Referral) == 1
    assert snapshot(project) == {**after_first, "signatures": 2}
    clock.advance(minutes=1)
    # ... and the retry's own signed request can't be replayed either.
    assert client.post("/hooks/referral", data=body, headers=retry).status_code == 401


def test_a_webhook_referral_tells_the_owner_once(client: FlaskClient, project: Nurture,
                                                 clock: FakeClock) -> None:
    payload = {"email": LEE, "date": "2026-12-04", "ref": "EHR-1"}
    assert post_hook(client, project, "/hooks/referral", payload).status_code == 200
    [note] = outbox(project)
    assert note["Subject"] == "Referral from Dana Lee"
    assert note["To"] == "Alex Rivera <alex@riverapt.example>"
    body = note.get_content().replace("\r\n", "\n")
    assert ("Dana Lee (dr.lee@clinic.example, Springfield Family Medicine) referred a patient "
            "on 2026-12-04.\nA thank-you is planned for Mon 7 Dec 2026, 09:00") in body
    assert "EHR-1" not in body  # not even the opaque id travels by email
    clock.advance(minutes=2)
    repeat = post_hook(client, project, "/hooks/referral", payload)  # a retry, signed anew
    assert repeat.headers["Idempotent-Replayed"] == "true"
    clock.advance(minutes=2)
    again = post_hook(client, project, "/hooks/referral", payload, key="key-2")  # a resend
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(outbox(project)) == 1  # neither told the owner again
    assert count(project, Referral) == 1


def test_a_webhook_referral_from_a_stranger_adds_them_and_tells_the_owner_over_smtp(
        project: Nurture, smtp_sink: Any) -> None:
    project.settings = replace(project.settings, smtp_url=smtp_sink.url)
    client = web.create_app(project).test_client()
    response = post_hook(client, project, "/hooks/referral", {"email": "New.Coach@Fit.example"})
    assert response.status_code == 200
    assert response.get_json()["new_contact"] is True
    new = contact(project, "new.coach@fit.example")
    assert (new.needs_details, new.status, new.first_name) == (True, "active", "")
    [note] = smtp_sink.messages
    assert note["Subject"] == "Referral from new.coach@fit.example"
    assert "They were not a contact yet: added, marked as needing details" in note.get_content()
    assert outbox(project) == []


def test_a_note_that_cannot_be_sent_keeps_the_webhook_referral(project: Nurture) -> None:
    project.settings = replace(project.settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    client = web.create_app(project).test_client()
    response = post_hook(client, project, "/hooks/referral", {"email": LEE})
    assert response.status_code == 200
    assert response.get_json()["thank_you"] == ["referral-outreach/thank-you"]
    assert count(project, Referral) == 1 and count(project, WebhookDelivery) == 1
    [event] = rows(project, Event, Event.kind == "owner_notification_failed")
    assert event.data["subject"] == "Referral from Dana Lee"


def test_same_key_with_another_body_is_409(client: FlaskClient, project: Nurture,
                                           clock: FakeClock) -> None:
    assert post_hook(client, project, "/hooks/referral", {"email": LEE}).status_code == 200
    before = snapshot(project)
    clock.advance(seconds=30)
    response = post_hook(client, project, "/hooks/referral",
                         {"email": SAM})
    assert response.status_code == 409
    assert IDEMPOTENCY_HEADER in problems(response)
    assert snapshot(project) == before
    assert touches(project, SAM) == {"hello": "scheduled"}


def test_idempotency_keys_are_per_endpoint(client: FlaskClient, project: Nurture) -> None:
    assert post_hook(client, project, "/hooks/reply", {"email": LEE}).status_code == 200
    assert post_hook(client, project, "/hooks/referral",
                     {"email": SAM}).status_code == 200
    assert count(project, Referral) == 1 and count(project, Reply) == 1


def test_missing_idempotency_key_is_400(client: FlaskClient, project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral", {"email": LEE}, key=None)
    assert response.status_code == 400
    assert "is required" in problems(response)[IDEMPOTENCY_HEADER]
    assert snapshot(project) == before


def test_malformed_json_is_400_and_changes_nothing(client: FlaskClient,
                                                   project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral", raw=b'{"email": "dr.lee@')
    assert response.status_code == 400
    assert response.get_json()["error"] == "the body is not valid JSON"
    assert snapshot(project) == before


def test_invalid_referral_is_422_listing_every_problem(client: FlaskClient,
                                                       project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral",
                         {"date": "Dec 4", "patient_name": "Jane Doe", "condition": "ACL tear"})
    assert response.status_code == 422
    found = problems(response)
    assert list(found) == ["email", "date", "condition", "patient_name"]
    assert found["email"] == "is required"
    assert "YYYY-MM-DD" in found["date"]
    assert "no patient details" in found["patient_name"]
    assert response.get_json()["error"] == "the body is not valid: 4 problems"
    response = post_hook(client, project, "/hooks/referral",
                         {"email": "dr.lee at clinic", "date": "2026-02-30"}, key="key-2")
    assert response.status_code == 422
    assert list(problems(response)) == ["email", "date"]
    assert "not an email address" in problems(response)["email"]
    assert snapshot(project) == before
    assert "Jane Doe" not in json.dumps([e.detail for e in rows(project, Event)])


def test_referral_from_the_future_is_422_and_changes_nothing(client: FlaskClient,
                                                              project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral", {"email": LEE, "date": "2062-12-04"})
    assert response.status_code == 422
    assert problems(response) == {"date": "2062-12-04 is in the future (today is 2026-12-07)"}
    assert snapshot(project) == before
    tomorrow = post_hook(client, project, "/hooks/referral", {"email": LEE, "date": "2026-12-08"},
                         key="key-2")  # a day of slack for time zones
    assert tomorrow.status_code == 200


def test_a_refused_delivery_does_not_burn_its_key(client: FlaskClient, project: Nurture,
                                                  clock: FakeClock) -> None:
    bad = post_hook(client, project, "/hooks/referral", {"email": LEE, "patient": "x"})
    assert bad.status_code == 422
    clock.advance(seconds=5)
    assert post_hook(client, project, "/hooks/referral", {"email": LEE}).status_code == 200


def test_body_too_large_is_413(client: FlaskClient, project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/referral",
                         {"email": LEE, "ref": "x" * 70_000})
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.get_json()["error"]
    assert snapshot(project) == before


def test_wrong_method_on_a_hook_answers_json(client: FlaskClient) -> None:
    response = client.get("/hooks/referral")
    assert response.status_code == 405 and "error" in response.get_json()


def test_concurrent_twins_act_once(project: Nurture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two deliveries with one key arrive together: the second waits for the first (on
    PostgreSQL it fails on the key's unique index and runs again), then replays its answer."""
    inside, calls = threading.Event(), []
    real = web.record_referral

    def held_referral(app: Nurture, session: Session, *args: Any) -> Any:
        calls.append(args)
        result = real(app, session, *args)
        inside.set()
        hold_until_blocked(session)  # the twin is now waiting for this transaction
        return result

    monkeypatch.setattr(web, "record_referral", held_referral)
    application = web.create_app(project)
    answers: dict[int, TestResponse] = {}

    def deliver(skew: int) -> None:  # different timestamps: different signatures, one key
        answers[skew] = post_hook(application.test_client(), project, "/hooks/referral",
                                  {"email": LEE}, skew=skew)

    first = threading.Thread(target=deliver, args=(0,))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=deliver, args=(-1,))
    second.start()
    first.join(30)
    second.join(30)
    assert [answers[skew].status_code for skew in (0, -1)] == [200, 200]
    assert answers[0].data == answers[-1].data
    assert [answers[skew].headers.get("Idempotent-Replayed") for skew in (0, -1)] == [
        None, "true"]
    assert len(calls) == 1  # the intake ran once
    assert count(project, Referral) == 1 and count(project, WebhookDelivery) == 1
    assert [note["Subject"] for note in outbox(project)] == ["Referral from Dana Lee"]


# Webhooks: reply ----------------------------------------------------------------------------
def test_reply_hook_stops_the_sequence(client: FlaskClient, project: Nurture) -> None:
    response = post_hook(client, project, "/hooks/reply",
                         {"email": LEE, "received_at": "2026-12-07T08:55:00-05:00",
                          "message_id": "<r1@clinic.example>"})
    assert response.status_code == 200, response.text
    assert response.get_json() == {"email": LEE, "stopped": ["referral-outreach"]}
    [reply] = rows(project, Reply)
    assert (reply.source, reply.message_id) == ("webhook", "<r1@clinic.example>")
    assert reply.received_at == project.now() - timedelta(minutes=5)
    assert touches(project) == {"hello": "cancelled"}
    [enrollment] = rows(project, Enrollment, Enrollment.contact_id == contact(project).id)
    assert (enrollment.state, enrollment.stop_reason) == ("stopped", "reply")
    assert touches(project, SAM) == {"hello": "scheduled"}
    [note] = outbox(project)  # the owner hears of it, once the reply is committed
    assert note["Subject"] == "Reply from Dana Lee: answer personally"
    body = note.get_content()
    assert f"Dana Lee <{LEE}> replied" in body
    assert "Stopped: referral-outreach: nothing more goes out from it" in body
    again = post_hook(client, project, "/hooks/reply",
                      {"email": LEE, "received_at": "2026-12-07T08:55:00-05:00",
                       "message_id": "<r1@clinic.example>"}, skew=1)  # the same key, re-signed
    assert again.status_code == 200 and len(outbox(project)) == 1  # a replay tells nobody


def test_reply_from_an_unknown_address_is_404(client: FlaskClient, project: Nurture) -> None:
    before = snapshot(project)
    response = post_hook(client, project, "/hooks/reply", {"email": "who@nowhere.example"})
    assert response.status_code == 404
    assert problems(response) == {"email": "is not a contact"}
    assert snapshot(project) == before


def test_invalid_reply_is_422(client: FlaskClient, project: Nurture) -> None:
    response = post_hook(client, project, "/hooks/reply",
                         {"email": LEE, "received_at": "yesterday", "body": "Sounds good!"})
    assert response.status_code == 422
    assert list(problems(response)) == ["received_at", "body"]
    assert count(project, Reply) == 0


# The real server ----------------------------------------------------------------------------
@pytest.fixture
def live_url(project: Nurture) -> Iterator[str]:
    with live_server(project) as url:
        yield url


def http(url: str, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_real_server_serves_pages_and_hooks(live_url: str, project: Nurture) -> None:
    token = make_token(project.settings, contact(project).id)
    status, headers, page = http(f"{live_url}/u/{token}")
    assert status == 200 and "<button" in page and headers["Server"] == "nurture"
    assert contact(project).status == "active"
    status, _, page = http(f"{live_url}/u/{token}", b"List-Unsubscribe=One-Click",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and "You are unsubscribed" in page
    assert touches(project) == {"hello": "cancelled"}

    body = json.dumps({"email": SAM}).encode()
    ts = int(project.now().timestamp())
    signed = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign("test-secret", ts, body),
              IDEMPOTENCY_HEADER: "live-1", "Content-Type": "application/json"}
    status, _, answer = http(f"{live_url}/hooks/referral", body, signed)
    assert status == 200 and json.loads(answer)["thank_you"] == ["referral-outreach/thank-you"]
    status, _, answer = http(f"{live_url}/hooks/referral", body, signed)
    assert status == 401
    assert http(f"{live_url}/u/garbage")[0] == 400


def test_serve_command_runs_the_server_it_was_asked_for(
        tmp_path: Path, database_url: str, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    class Server:
        def run(self) -> None:
            calls.append(("run", 0))

        def close(self) -> None:
            calls.append(("close", 0))

    def fake_make_server(app: Nurture, host: str, port: int) -> Server:
        assert app.settings.database_url == database_url
        calls.append((host, port))
        return Server()

    monkeypatch.setattr("nurture.cli.web.make_server", fake_make_server)
    (tmp_path / "nurture.toml").touch()  # a project folder: commands refuse any other
    obj = Context(project_dir=tmp_path, clock=clock, overrides={"database_url": database_url})
    try:
        result = CliRunner().invoke(serve, [], obj=obj)
        assert result.exit_code == 0, result.output
        assert "serving on http://127.0.0.1:8000" in result.output
        assert calls == [("127.0.0.1", 8000), ("run", 0), ("close", 0)]
        result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--port", "8080"], obj=obj)
        assert calls[-3] == ("0.0.0.0", 8080)
        result = CliRunner().invoke(serve, ["--port", "0"], obj=obj)
        assert result.exit_code == 2 and "--port" in result.output
    finally:
        obj.close()
