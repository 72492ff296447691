"""Delivery against a real SMTP server (aiosmtpd on loopback) and a real outbox folder."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from nurture.errors import NurtureError
from nurture.outbound.smtp import SmtpTransport
from nurture.outbound.transport import (
    DeliveryError,
    OutboxTransport,
    PermanentDeliveryError,
    TransientDeliveryError,
    TransportConfigError,
    UncertainDeliveryError,
    classify_smtp_error,
    open_transport,
)
from nurture.settings import Settings
from tests.smtp_sink import SmtpSink, free_port


@pytest.fixture
def sink():
    with SmtpSink() as server:
        yield server


@pytest.fixture(autouse=True)
def no_leftover_server_threads():
    """Every test must stop the servers it started: a leaked thread would keep a port bound."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while (leftover := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leftover, f"threads left running: {leftover}"


def make_message(to: str = "dr.ada@clinic.example", n: int = 1, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Practice <hello@practice.example>"
    message["To"] = f"Dr Ada <{to}>"
    message["Subject"] = f"Thank you for your work, number {n}"
    message["Date"] = format_datetime(datetime(2025, 3, 4, 14, 5, 6, tzinfo=UTC))
    message["Message-ID"] = f"<touch-{n}.enrollment-7@practice.example>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(f"Hello Dr Ada,\n\nmessage {n}.\n.\nA line with a leading dot.\n")
    return message


# --- SMTP, against a real server ---------------------------------------------------------------


def test_smtp_send_arrives_with_headers_intact(sink):
    sent = make_message(In_Reply_To="<touch-0.enrollment-7@practice.example>")
    with SmtpTransport(sink.url, timeout=5) as transport:
        transport.send(sent)

    [received] = sink.wait_for(1)
    for header in ("Message-ID", "Date", "Subject", "From", "To", "In-Reply-To"):
        assert received[header] == sent[header], header
    # Dot-stuffing undone, text unchanged (the wire has CRLF line ends).
    assert received.get_content().replace("\r\n", "\n") == sent.get_content()
    assert sink.envelopes == [("hello@practice.example", ["dr.ada@clinic.example"])]


def test_a_batch_reuses_one_connection(sink):
    with SmtpTransport(sink.url, timeout=5) as transport:
        for n in range(1, 4):
            transport.send(make_message(n=n))

    received = sink.wait_for(3)
    assert [m["Message-ID"] for m in received] == [
        f"<touch-{n}.enrollment-7@practice.example>" for n in range(1, 4)
    ]
    assert sink.connections == 1


def test_close_ends_the_connection_and_the_transport_stays_usable(sink):
    transport = SmtpTransport(sink.url, timeout=5)
    transport.send(make_message(n=1))
    transport.close()
    transport.close()  # twice is harmless
    transport.send(make_message(n=2))
    transport.close()
    assert len(sink.wait_for(2)) == 2
    assert sink.connections == 2


def test_reconnects_once_when_the_server_restarted_between_sends(sink):
    with SmtpTransport(sink.url, timeout=5) as transport:
        transport.send(make_message(n=1))
        sink.restart()  # the open connection is cut, as a server restart would
        transport.send(make_message(n=2))

    received = sink.wait_for(2)
    assert [m["Message-ID"] for m in received].count(
        "<touch-2.enrollment-7@practice.example>") == 1
    assert len(received) == 2
    assert sink.connections == 2


def test_server_that_stays_down_is_transient_not_a_reconnect_loop(sink):
    transport = SmtpTransport(sink.url, timeout=2)
    transport.send(make_message(n=1))
    sink.set_down()
    opened, real_open = [], transport._open

    def counted_open():
        opened.append("connect")
        return real_open()

    transport._open = counted_open  # type: ignore[method-assign]
    with pytest.raises(TransientDeliveryError):
        transport.send(make_message(n=2))
    assert opened == ["connect"]  # the dead connection is replaced once, then it gives up
    sink.restart()
    transport.send(make_message(n=3))  # and it recovers by itself once the server is back
    transport.close()
    assert [m["Message-ID"] for m in sink.wait_for(2)][-1] == (
        "<touch-3.enrollment-7@practice.example>")


def test_connection_refused_is_transient_and_immediate():
    """Refused at once (ECONNREFUSED), not after waiting out the timeout."""
    with pytest.raises(TransientDeliveryError, match="cannot connect") as caught:
        SmtpTransport(f"smtp://127.0.0.1:{free_port()}", timeout=60).send(make_message())
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_server_that_never_greets_times_out_as_transient():
    """A listening socket that accepts but never speaks: the timeout must bound the wait."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(TransientDeliveryError) as caught:
            SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=0.3).send(make_message())
        assert "timed out" in str(caught.value)  # after our 0.3 s, pytest-timeout bounds it


@pytest.mark.parametrize(
    ("code", "text", "error_class", "kind"),
    [
        (550, "5.1.1 <dr.ada@clinic.example>: Recipient address rejected: User unknown",
         PermanentDeliveryError, "mailbox"),
        (452, "4.2.2 Mailbox full, try again later", TransientDeliveryError, None),
        (554, "5.7.1 Client host rejected: blocked using zen.spamhaus.org",
         PermanentDeliveryError, "policy"),
        (552, "5.2.2 Mailbox full", PermanentDeliveryError, "other"),
    ],
)
def test_recipient_refusals_are_classified(sink, code, text, error_class, kind):
    sink.reject["dr.ada@clinic.example"] = (code, text)
    with SmtpTransport(sink.url, timeout=5) as transport:
        with pytest.raises(error_class) as caught:
            transport.send(make_message(to="Dr.Ada@clinic.example"))
        # The refusal left the connection usable: the next contact's message goes out on it.
        transport.send(make_message(to="coach@gym.example", n=2))

    error = caught.value
    assert type(error) is error_class
    assert (error.code, error.enhanced) == (code, text.split()[0])
    assert error.recipient == "Dr.Ada@clinic.example"
    if kind is not None:
        assert error.kind == kind
    assert [m["To"] for m in sink.wait_for(1)] == ["Dr Ada <coach@gym.example>"]
    assert sink.connections == 1


def test_a_staged_message_arrives_only_once_committed(sink):
    """stage() hands the server everything but the closing dot: a message aborted there (as a
    worker killed before committing leaves it) is never delivered, and the next one goes out
    on a fresh connection."""
    transport = SmtpTransport(sink.url, timeout=5)
    transport.stage(make_message(n=1)).abort()
    staged = transport.stage(make_message(n=2))
    staged.commit()
    staged.abort()  # too late to take back: nothing happens
    transport.send(make_message(n=3))
    transport.close()
    assert [m["Message-ID"] for m in sink.wait_for(2)] == [
        f"<touch-{n}.enrollment-7@practice.example>" for n in (2, 3)]
    assert sink.mail_commands == 3
    assert sink.connections == 2  # the abort dropped the first one


def test_a_staged_message_keeps_its_dots_and_line_ends(sink):
    """The data goes as RFC 5321 wants it: a leading dot doubled, every line ending in CRLF,
    and the server gets back exactly the message."""
    message = make_message(n=1)
    with SmtpTransport(sink.url, timeout=5) as transport:
        transport.send(message)
    (received,) = sink.wait_for(1)
    content = received.get_content()
    assert content.replace("\r\n", "\n") == message.get_content()
    assert "\r\n.\r\nA line with a leading dot.\r\n" in content


def test_an_outbox_message_appears_only_once_committed(tmp_path):
    """The outbox stages a hidden temporary file: nothing to read until the commit renames it,
    and an aborted one leaves nothing behind."""
    outbox = OutboxTransport(tmp_path / "outbox")
    outbox.stage(make_message(n=1)).abort()
    staged = outbox.stage(make_message(n=2))
    assert list((tmp_path / "outbox").glob("*.eml")) == []
    staged.commit()
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [
        "touch-2.enrollment-7@practice.example.eml"]


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_connection_lost_after_data_is_uncertain_and_not_resent(sink, reused):
    with SmtpTransport(sink.url, timeout=5) as transport:
        if reused:  # a reused connection may be retried before MAIL FROM, never after DATA
            transport.send(make_message(n=1))
        sink.hang_up_after_data = True
        with pytest.raises(UncertainDeliveryError) as caught:
            transport.send(make_message(n=2))
    assert caught.value.recipient == "dr.ada@clinic.example"
    # The server did get it: that is exactly why a resend would be a duplicate.
    ids = [m["Message-ID"] for m in sink.wait_for(2 if reused else 1)]
    assert ids.count("<touch-2.enrollment-7@practice.example>") == 1
    assert sink.connections == 1


def test_login_uses_the_url_decoded_password():
    with SmtpSink(users={"owner@practice.example": "p@ss:w/rd %"}) as server:
        url = f"smtp://owner%40practice.example:p%40ss%3Aw%2Frd%20%25@127.0.0.1:{server.port}"
        with SmtpTransport(url, timeout=5) as transport:
            transport.send(make_message())
        assert server.logins == ["owner@practice.example"]
        assert len(server.wait_for(1)) == 1


def test_wrong_password_is_a_policy_failure_and_never_shows_the_password():
    with SmtpSink(users={"owner": "right"}) as server:
        url = f"smtp://owner:WRONG-s3cret@127.0.0.1:{server.port}"
        with pytest.raises(PermanentDeliveryError) as caught:
            SmtpTransport(url, timeout=5).send(make_message())
        assert caught.value.kind == "policy"
        assert caught.value.code == 535
        assert "s3cret" not in str(caught.value)
        assert server.messages == []


# --- URLs and names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "starttls", "scheme", "name"),
    [
        ("smtp://mail.example.org", "mail.example.org", 25, False, "smtp",
         "smtp://mail.example.org:25 (plain)"),
        ("smtp://u:pw@mail.example.org:587?starttls=true", "mail.example.org", 587, True, "smtp",
         "smtp://mail.example.org:587 (starttls, user u)"),
        ("SMTPS://Mail.Example.org", "mail.example.org", 465, False, "smtps",
         "smtps://mail.example.org:465 (implicit tls)"),
        ("smtps://mail.example.org:2465?starttls=false", "mail.example.org", 2465, False, "smtps",
         "smtps://mail.example.org:2465 (implicit tls)"),
        ("smtp://[::1]:2525", "::1", 2525, False, "smtp", "smtp://[::1]:2525 (plain)"),
    ],
)
def test_url_options(url, host, port, starttls, scheme, name):
    transport = SmtpTransport(url)
    assert (transport.host, transport.port, transport.starttls, transport.scheme) == (
        host, port, starttls, scheme)
    assert transport.name == name


def test_the_user_name_is_url_decoded():
    """(The password too: test_login_uses_the_url_decoded_password logs in with one.)"""
    transport = SmtpTransport("smtp://me%40practice.example:a%2Fb%3Ac%40d@mail.example.org")
    assert transport.username == "me@practice.example"


@pytest.mark.parametrize("password", ["hunter2", "p%40ss", "s3cr%2Ft"])
def test_name_and_repr_never_contain_the_password(password):
    transport = open_transport(Settings(smtp_url=f"smtps://owner:{password}@mail.example.org"))
    decoded = password.replace("%40", "@").replace("%2F", "/")
    for shown in (transport.name, repr(transport), str(vars(transport).get("name"))):
        assert password not in shown and decoded not in shown


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.org",
        "smtp://",
        "smtp://mail.example.org:99999",
        "smtp://mail.example.org:port",
        "smtp://mail.example.org?starttl=true",
        "smtp://mail.example.org?starttls=maybe",
        "smtps://mail.example.org?starttls=true",
    ],
)
def test_bad_urls_are_refused_without_quoting_them(url):
    with pytest.raises(TransportConfigError) as caught:
        SmtpTransport(url.replace("//", "//owner:hunter2@", 1))
    assert isinstance(caught.value, NurtureError)
    assert "hunter2" not in str(caught.value)


def test_open_transport_picks_outbox_without_a_url(tmp_path):
    def opened(**settings: object) -> object:
        return open_transport(Settings(project_dir=tmp_path, **settings))  # type: ignore[arg-type]

    assert isinstance(opened(), OutboxTransport)
    assert isinstance(opened(smtp_url="  "), OutboxTransport)
    assert isinstance(opened(smtp_url="smtp://localhost:2525"), SmtpTransport)
    assert opened(smtp_url="smtp://localhost:2525", smtp_timeout=7).timeout == 7  # type: ignore[attr-defined]
    assert opened(smtp_outbox="sent").name == f"outbox folder {tmp_path / 'sent'}"


# --- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "error_class", "kind", "enhanced"),
    [
        (550, b"5.1.1 <a@b.example>: Recipient address rejected", PermanentDeliveryError,
         "mailbox", "5.1.1"),
        (550, "5.1.10 Recipient address has null MX", PermanentDeliveryError, "mailbox",
         "5.1.10"),
        (550, "5.2.1 The email account that you tried to reach is disabled",
         PermanentDeliveryError, "mailbox", "5.2.1"),
        (552, "5.2.2 Mailbox full", PermanentDeliveryError, "other", "5.2.2"),
        (452, "4.2.2 Mailbox full", TransientDeliveryError, None, "4.2.2"),
        (554, "5.7.1 Service unavailable; client host blocked", PermanentDeliveryError,
         "policy", "5.7.1"),
        (535, "5.7.8 Authentication credentials invalid", PermanentDeliveryError, "policy",
         "5.7.8"),
        (553, "5.1.8 Sender address domain does not exist", PermanentDeliveryError, "other",
         "5.1.8"),
        (552, "5.3.4 Message size exceeds fixed limit", PermanentDeliveryError, "other",
         "5.3.4"),
        (421, "4.7.0 Try again later, closing connection", TransientDeliveryError, None,
         "4.7.0"),
        (421, "Service not available, closing channel", TransientDeliveryError, None, None),
        (451, "Requested action aborted: local error", TransientDeliveryError, None, None),
        # The enhanced code wins over the basic one, either way.
        (550, "4.2.2 Mailbox temporarily full", TransientDeliveryError, None, "4.2.2"),
        (450, "5.1.1 User unknown", PermanentDeliveryError, "mailbox", "5.1.1"),
        # Without an enhanced code, only the wording can say the mailbox is gone.
        (550, "User unknown", PermanentDeliveryError, "mailbox", None),
        (550, "<a@b.example>... No such user here", PermanentDeliveryError, "mailbox", None),
        (550, "Requested action not taken: mailbox unavailable", PermanentDeliveryError,
         "other", None),
        (554, "Message rejected as spam", PermanentDeliveryError, "policy", None),
        (530, "Authentication required", PermanentDeliveryError, "policy", None),
        (552, "Message too large", PermanentDeliveryError, "other", None),
        (-1, "", TransientDeliveryError, None, None),
    ],
)
def test_classify_smtp_error(code, message, error_class, kind, enhanced):
    error = classify_smtp_error(code, message, "a@b.example")
    assert type(error) is error_class
    assert isinstance(error, DeliveryError) and isinstance(error, NurtureError)
    assert (error.code, error.enhanced, error.recipient) == (code, enhanced, "a@b.example")
    if kind is not None:
        assert error.kind == kind


def test_classify_folds_multiline_replies_and_keeps_the_text():
    error = classify_smtp_error(
        550, b"5.1.1 The email account that you tried to reach does not exist.\n"
             b"5.1.1 Please try double-checking the recipient's email address.")
    assert error.detail == ("The email account that you tried to reach does not exist. "
                            "Please try double-checking the recipient's email address.")
    assert str(error).startswith("550 5.1.1 The email account")


# --- the outbox folder -------------------------------------------------------------------------


def test_outbox_writes_the_smtp_bytes_as_a_parseable_eml(tmp_path):
    outbox = tmp_path / "new" / "outbox"
    message = make_message()
    with OutboxTransport(outbox) as transport:
        transport.send(message)

    [written] = list(outbox.iterdir())
    assert written.name == "touch-1.enrollment-7@practice.example.eml"
    data = written.read_bytes()
    assert data == message.as_bytes(policy=email.policy.SMTP)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Message-ID"] == message["Message-ID"]
    assert parsed["Date"] == message["Date"]
    assert parsed.get_content().replace("\r\n", "\n") == message.get_content()


def test_outbox_same_message_twice_is_one_file_and_no_temp_files(tmp_path):
    transport = OutboxTransport(tmp_path)
    transport.send(make_message(n=1))
    transport.send(make_message(n=1))
    transport.send(make_message(n=2))
    names = sorted(p.name for p in tmp_path.iterdir())  # iterdir shows hidden temp files too
    assert names == ["touch-1.enrollment-7@practice.example.eml",
                     "touch-2.enrollment-7@practice.example.eml"]


@pytest.mark.parametrize(
    "message_id",
    ["<../../etc/passwd@x>", "<a/b@x>", "<a\\b@x>", "<.hidden@x>", f"<{'x' * 400}@x>"],
)
def test_outbox_names_are_safe_and_distinct(tmp_path, message_id):
    outbox = tmp_path / "outbox"
    transport = OutboxTransport(outbox)
    first = make_message()
    first.replace_header("Message-ID", message_id)
    look_alike = make_message()  # sanitises to the same characters, but is another message
    look_alike.replace_header("Message-ID", message_id.replace("/", "_").replace("\\", "_"))
    transport.send(first)
    transport.send(look_alike)
    files = list(outbox.iterdir())
    assert all(p.parent == outbox and p.suffix == ".eml" for p in files)
    assert all(not p.name.startswith(".") and len(p.name) < 200 for p in files)
    assert list(tmp_path.iterdir()) == [outbox]
    expected = 1 if message_id.replace("/", "_").replace("\\", "_") == message_id else 2
    assert len(files) == expected


def test_outbox_failure_is_a_delivery_error(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    with pytest.raises(TransientDeliveryError, match="cannot write"):
        OutboxTransport(blocker / "outbox").send(make_message())
