"""A real SMTP server on loopback for tests: what nurture sends, as a mail server receives it.

Tests of delivery, jobs and the engine talk to it over a socket with smtplib, exactly as they
would talk to Postfix, so connection reuse, reconnects and per-recipient refusals are exercised
for real. Nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; a tiny race is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class _Handler:
    """aiosmtpd hooks: count sessions, refuse configured recipients, store what arrives."""

    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        self.sink._count_session()
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):  # noqa: N802
        session.host_name = hostname
        self.sink._count_session()
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        self.sink._count_mail()
        envelope.mail_from = address  # what aiosmtpd does without this hook
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        refusal = self.sink.reject.get(address.lower())
        if refusal is not None:
            code, text = refusal
            return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.sink._store(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        if self.sink.hang_up_after_data:
            # The message is stored, but the client never hears "250": the ambiguous case.
            server.transport.abort()
        return "250 OK: queued"


class _Controller(Controller):
    """A Controller whose sessions are remembered, so an outage can cut them like a crash."""

    def __init__(self, sink: SmtpSink, **kwargs: Any):
        if sink.users is not None:
            # AUTH over plain text is fine on loopback; TLS is not what these tests are about.
            kwargs.update(authenticator=sink._authenticate, auth_require_tls=False)
        super().__init__(_Handler(sink), **kwargs)
        self.live: set[SMTP] = set()

    def factory(self) -> SMTP:
        live = self.live

        class _Tracked(SMTP):
            def connection_made(self, transport):
                live.add(self)
                super().connection_made(transport)

            def connection_lost(self, error):
                live.discard(self)
                super().connection_lost(error)

        return _Tracked(self.handler, **self.SMTP_kwargs)

    def drop_connections(self) -> None:
        """Abort every open client connection, from inside the server's loop."""

        async def abort_all() -> None:
            for server in list(self.live):
                if server.transport is not None:
                    server.transport.abort()
            await asyncio.sleep(0.05)  # let connection_lost run, so the sockets really close

        asyncio.run_coroutine_threadsafe(abort_all(), self.loop).result(timeout=5)


class SmtpSink:
    """A real SMTP server on loopback for tests, backed by aiosmtpd's Controller."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *,
                 users: dict[str, str] | None = None):
        self.host = host
        self.port = port if port is not None else free_port(host)
        # user -> password accepted by AUTH PLAIN/LOGIN; None: AUTH is not offered.
        self.users = users
        self.logins: list[str] = []  # users that authenticated successfully, in order
        # rcpt address (lowercase) -> (code, "5.1.1 text"), answered at RCPT TO.
        self.reject: dict[str, tuple[int, str]] = {}
        # When true, the server stores the message, then drops the connection before answering.
        self.hang_up_after_data = False
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._envelopes: list[tuple[str, list[str]]] = []
        self._raw: list[bytes] = []
        self._sessions = self._mails = 0
        self._controller: _Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def messages(self) -> list[EmailMessage]:
        """Parsed messages in arrival order (a snapshot)."""
        with self._lock:
            return list(self._messages)

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        """(MAIL FROM, RCPT TO list) of each message, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._envelopes)

    @property
    def raw(self) -> list[bytes]:
        """The DATA bytes of each message exactly as received (a snapshot)."""
        with self._lock:
            return list(self._raw)

    @property
    def mail_commands(self) -> int:
        """MAIL FROM commands accepted, in all sessions."""
        with self._lock:
            return self._mails

    @property
    def connections(self) -> int:
        """SMTP sessions that said EHLO/HELO (aiosmtpd's own readiness probe is not counted)."""
        with self._lock:
            return self._sessions

    def start(self) -> SmtpSink:
        if self._controller is None:
            controller = _Controller(self, hostname=self.host, port=self.port)
            controller.start()
            self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections, as a crashed or restarted server would."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.drop_connections()
            controller.stop()

    def set_down(self) -> None:
        """Simulate an outage: connections are cut and the port refuses new ones."""
        self.stop()

    def restart(self) -> SmtpSink:
        """Come back on the same port after :meth:`set_down`; stored messages are kept."""
        self.stop()
        return self.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(messages)}"
                )
            time.sleep(0.01)

    def clear(self) -> None:
        """Forget received messages and the session count (rejections are kept)."""
        with self._lock:
            self._messages.clear()
            self._envelopes.clear()
            self._raw.clear()
            self.logins.clear()
            self._sessions = self._mails = 0

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert self.users is not None
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                with self._lock:
                    self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _count_session(self) -> None:
        with self._lock:
            self._sessions += 1

    def _count_mail(self) -> None:
        with self._lock:
            self._mails += 1

    def _store(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self._lock:
            self._messages.append(message)  # type: ignore[arg-type]
            self._envelopes.append((mail_from, rcpt_tos))
            self._raw.append(content)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
