"""Render one email: MJML compiled once, Jinja2 per email in a bounded sandbox, text, headers.

A template in ``templates/`` is the *body* of one email, written as MJML components (usually a
few ``<mj-text>`` blocks) with Jinja2 inside. It is spliced textually into the layout,
``templates/_layout.mjml``, at its line ``<!-- nurture:body -->``; the layout carries the
personal look, the signature, and the footer with the postal address and unsubscribe link.

**Compile once, render per email.** The spliced MJML is compiled to HTML once per content of
(layout, template): the cache key hashes both sources, so editing either file recompiles on the
next render. Only Jinja2 runs per email (:attr:`Renderer.compile_count` counts compilations).

**Where Jinja may go.** Jinja runs on MJML's *output*, so it must survive compilation. It does
inside ``<mj-text>``, ``<mj-raw>`` and attribute values. Between components it does not:
``{% if %}<mj-text>…</mj-text>{% endif %}`` would end up outside any table cell, so such a
template is rejected (checked before compiling, and the Jinja tags are compared before and
after). Put the condition inside the ``<mj-text>`` or wrap it in ``<mj-raw>``. In attribute
values, quote Jinja strings with ``'``. ``<``, ``>`` and ``&`` in Jinja tags are fine: they are
escaped for the compiler and unescaped again. ``<mj-include>`` is refused, since it can read any
file. The compiler is mrml; :mod:`nurture.mjml_html` says why and what it checks.

**Strict and sandboxed** (:mod:`nurture.sandbox` lists what is bounded): a misspelled variable
is an error, not a blank. For a value that may be missing *or empty*, write
``{{ contact.first_name | default('there', true) }}``. ``None`` prints as nothing. The subject is
rendered by a second, non-escaping sandbox, and its line breaks are removed (no header
injection). Every rendered email must link to ``unsubscribe_url`` and show ``practice.address``.

**Layouts.** A step names its layout (``layout: card`` in the campaign; default ``personal``).
``personal`` is ``_layout.mjml``: a plain note from a person. Any other name is ``_NAME.mjml``;
the shipped ``_card.mjml`` adds, below the note, the picked library item as a small card (title,
source or author, one line on why, the link written out). ``item`` is that item, or ``None``
when the step picks nothing (see :mod:`nurture.library`).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import html as htmlmod
import ipaddress
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP
from email.quoprimime import body_encode
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Template, TemplateSyntaxError

from .errors import Problem, TemplateError
from .mjml_html import JINJA as _JINJA
from .mjml_html import MjmlError, check_shape, lost_jinja, mjml_to_html
from .sandbox import BoundedSandbox, LimitExceeded
from .text import text_and_links

__all__ = ["CONTEXT_KEYS", "RenderedEmail", "Renderer", "WireMessage", "build_message",
           "is_our_message_id", "layout_file", "make_message_id", "sample_context",
           "sparse_context", "wire_bytes"]

LAYOUT = "_layout.mjml"
SLOT = "<!-- nurture:body -->"
#: The only names a template sees. Nothing about patients is ever among them.
CONTEXT_KEYS = frozenset({"contact", "sender", "owner", "practice", "item", "campaign", "step",
                          "unsubscribe_url", "referral_count", "last_referral_date", "touch_count"})


def layout_file(name: str) -> str:
    """The file of a layout: ``personal`` is ``_layout.mjml``, any other NAME ``_NAME.mjml``."""
    return LAYOUT if name == "personal" else f"_{name}.mjml"


_EMPTY_VALUE = re.compile(r"\w[ \t]+[,.](?=\s|$)|^[ \t]*[,.]", re.M)  # "Hi ,", "work at ."


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


# Compiling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Splice:
    """A template body spliced into the layout, and the way back to each file's lines."""

    layout: str
    body: str
    slot_line: int  # the layout line the body starts on
    body_newlines: int
    source: str

    def problem(self, line: int | None, field: str, message: str) -> Problem:
        if line is None:
            return Problem(self.body, None, field, message)
        if line < self.slot_line:
            return Problem(self.layout, line, field, message)
        if line <= self.slot_line + self.body_newlines:
            return Problem(self.body, line - self.slot_line + 1, field, message)
        return Problem(self.layout, line - self.body_newlines, field, message)


@dataclass(frozen=True)
class _Compiled:
    splice: _Splice
    html: Template  # Jinja over MJML's output: the only step that runs per email
    source: Template  # Jinja over the spliced source: run only to find an error's line


def _template_line(exc: BaseException, filename: str) -> int | None:
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LimitExceeded):
        return f"over a limit: {exc}"
    name = type(exc).__name__
    if name == "UndefinedError":
        return f"undefined: {exc}"
    if name == "SecurityError":
        return f"not allowed in the sandbox: {exc}"
    message = getattr(exc, "message", None) or str(exc) or name
    return message if name.startswith("Template") else f"{name}: {message}"


def _squash(text: str) -> str:
    return " ".join(text.replace(",", " ").split()).casefold()


def _one_line(text: str) -> str:
    return " ".join(re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text).split())


class Renderer:
    """Renders the emails of one templates folder. One instance can be shared by threads."""

    def __init__(self, templates_dir: Path, *, max_output_bytes: int = 256_000,
                 max_render_seconds: float = 2.0, max_iterations: int = 10_000,
                 layout: str = LAYOUT) -> None:
        self.templates_dir, self.layout = Path(templates_dir), layout
        self.max_output_bytes, self.max_render_seconds = max_output_bytes, max_render_seconds
        self.max_iterations = max_iterations
        #: How many times MJML has compiled a (layout, template) pair: the cache's misses.
        self.compile_count = 0
        limits = {"max_size": max_output_bytes, "max_iterations": max_iterations,
                  "max_seconds": max_render_seconds}
        self._html_env = BoundedSandbox(autoescape=True, **limits)
        self._text_env = BoundedSandbox(autoescape=False, **limits)
        self._cache: OrderedDict[str, _Compiled] = OrderedDict()
        self._files: dict[str, tuple[tuple[int, ...], tuple[str, str]]] = {}
        self._subjects: OrderedDict[str, Template] = OrderedDict()
        self._lock = threading.Lock()

    # Public API ---------------------------------------------------------------------------
    def render(self, template: str, subject: str, context: Mapping[str, Any], *,
               field: str = "template", layout: str = "personal") -> RenderedEmail:
        """Render one email, or raise :class:`TemplateError` listing every problem found."""
        rendered, problems = self._render(template, subject, context, field, layout)
        if problems or rendered is None:
            raise TemplateError(problems)
        return rendered

    def check(self, template: str, subject: str, context: Mapping[str, Any], *,
              field: str, layout: str = "personal") -> list[Problem]:
        """The problems :meth:`render` would raise. When there are none, the template is also
        rendered for a contact whose optional fields are empty (:func:`sparse_context`), so a
        template that would say "Hi ," fails validation rather than in someone's inbox."""
        problems = self._render(template, subject, context, field, layout)[1]
        if not problems:
            sparse = self._render(template, subject, sparse_context(context), field, layout)[1]
            problems = [Problem(p.file, p.line, p.field,
                                f"{p.message} (with the contact's optional fields empty)")
                        for p in sparse]
        return list(dict.fromkeys(problems))

    # Steps ----------------------------------------------------------------------------------
    def _render(self, template: str, subject: str, context: Mapping[str, Any], field: str,
                layout: str = "personal") -> tuple[RenderedEmail | None, list[Problem]]:
        unknown = set(context) - CONTEXT_KEYS
        if unknown:
            raise ValueError(f"templates may not see {sorted(unknown)}; the context has exactly "
                             f"{sorted(CONTEXT_KEYS)}")
        problems: list[Problem] = []
        html = text = title = ""
        try:
            compiled = self._compiled(template, field, layout)
            pieces = self._body(compiled, context, field)
            html = "".join(pieces)
            text, hrefs = text_and_links(pieces)
            problems += self._compliance(compiled.splice, text, hrefs, context, field)
        except TemplateError as exc:
            problems += exc.problems
        try:
            title = self._subject(subject, context, str(self.templates_dir / template), field)
        except TemplateError as exc:
            problems += exc.problems
        return (None if problems else RenderedEmail(title, html, text)), problems

    def _read(self, name: str, field: str) -> tuple[str, str]:
        """The file's path and text; read again only when its stat changed (it is asked for
        with every email, and reading and resolving it cost more than rendering the subject)."""
        path = self.templates_dir / name
        try:
            stat = os.stat(path)
            seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        except OSError:
            seen = None
        known = self._files.get(name)
        if seen is not None and known is not None and known[0] == seen:
            return known[1]
        read = self._read_file(path, field)
        if seen is not None:
            with self._lock:
                self._files[name] = seen, read
        return read

    def _read_file(self, path: Path, field: str) -> tuple[str, str]:
        fail = lambda message: TemplateError([Problem(str(path), None, field, message)])  # noqa: E731
        if not path.resolve().is_relative_to(self.templates_dir.resolve()):
            raise fail(f"is outside the templates folder {self.templates_dir}")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            known = sorted(p.name for p in self.templates_dir.glob("*.mjml")
                           if not p.name.startswith("_"))
            raise fail(f"template not found (known: {', '.join(known) or 'none'})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot be read: {exc}") from None
        if len(text) > self.max_output_bytes:
            raise fail(f"is larger than the limit of {self.max_output_bytes} characters")
        return str(path), text

    def _compiled(self, template: str, field: str, layout_name: str = "personal") -> _Compiled:
        if Path(template).name.startswith("_"):
            raise TemplateError([Problem(str(self.templates_dir / template), None, field,
                                         "names starting with '_' are layouts, not emails")])
        body_path, body = self._read(template, field)
        layout_path, layout = self._read(
            self.layout if layout_name == "personal" else layout_file(layout_name), field)
        key = hashlib.sha256("\0".join([layout_path, layout, body_path, body]).encode()).hexdigest()
        with self._lock:
            if (hit := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                return hit
        compiled = self._compile(layout_path, layout, body_path, body, field)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > 128:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, layout_path: str, layout: str, body_path: str, body: str,
                 field: str) -> _Compiled:
        if layout.count(SLOT) != 1:
            raise TemplateError([Problem(layout_path, None, field,
                                         f"the layout must contain {SLOT} exactly once")])
        at = layout.index(SLOT)
        splice = _Splice(layout_path, body_path, layout.count("\n", 0, at) + 1, body.count("\n"),
                         layout[:at] + body + layout[at + len(SLOT):])
        problems = [splice.problem(line, field, msg) for line, msg in check_shape(splice.source)]
        try:
            source = self._jinja(self._html_env, splice.source, "source")
        except TemplateSyntaxError as exc:
            try:  # an unclosed {% if %} is found at the end of the layout: blame the body
                self._html_env.parse(body)
                problems.append(splice.problem(exc.lineno, field, _describe(exc)))
            except TemplateSyntaxError as inner:
                problems.append(Problem(body_path, inner.lineno, field, _describe(inner)))
        if problems:
            raise TemplateError(problems)
        with self._lock:
            self.compile_count += 1
        try:
            html = mjml_to_html(splice.source)
        except MjmlError as exc:
            raise TemplateError([splice.problem(exc.line, field, f"invalid MJML: {exc}")]
                                ) from None
        html = _JINJA.sub(lambda m: htmlmod.unescape(m.group()), html)
        lost = lost_jinja(splice.source, html)
        if lost:
            raise TemplateError([splice.problem(line, field, msg) for line, msg in lost])
        try:
            return _Compiled(splice, self._jinja(self._html_env, html, "html"), source)
        except TemplateSyntaxError as exc:
            raise TemplateError([splice.problem(None, field, f"after MJML: {_describe(exc)}")]
                                ) from None

    @staticmethod
    def _jinja(env: BoundedSandbox, source: str, kind: str) -> Template:
        code = env.compile(source, name=kind, filename=f"<nurture:{kind}>")
        return env.template_class.from_code(env, code, env.make_globals(None))

    def _body(self, compiled: _Compiled, context: Mapping[str, Any], field: str) -> list[str]:
        """The email's HTML, in the pieces its template yielded (see :meth:`render_pieces`)."""
        started = time.monotonic()
        try:
            return self._html_env.render_pieces(compiled.html, context)
        except Exception as exc:  # whatever the template code raised is the template's problem
            line = None
            # The compiled HTML's lines mean nothing to the author: replay on the source to
            # find the line, unless the failure was a timeout (it would only time out again).
            if time.monotonic() - started < self.max_render_seconds / 2:
                try:
                    self._html_env.render_bounded(compiled.source, context)
                except Exception as again:
                    if type(again) is type(exc):
                        line = _template_line(again, "<nurture:source>")
            raise TemplateError([compiled.splice.problem(line, field, _describe(exc))]) from None

    def _compliance(self, splice: _Splice, text: str, hrefs: list[str],
                    context: Mapping[str, Any], field: str) -> list[Problem]:
        """Every email carries the unsubscribe link and the postal address, and no blank."""
        url = str(context.get("unsubscribe_url") or "")
        practice = context.get("practice")
        address = str(practice.get("address") or "") if isinstance(practice, Mapping) else ""
        found = []
        if not url:
            found.append("unsubscribe_url is empty: every email needs an unsubscribe link")
        elif url not in hrefs:
            found.append("the email does not link to {{ unsubscribe_url }}")
        if not address.strip():
            found.append("practice.address is empty: every email needs the postal address")
        elif _squash(address) not in _squash(text):
            found.append("the email does not show {{ practice.address }}")
        problems = [Problem(splice.layout, None, field, message) for message in found]
        if blank := _EMPTY_VALUE.search(text):
            snippet = text[max(0, blank.start() - 20):blank.end()].strip()
            problems.append(Problem(splice.body, None, field, f"a value is blank in {snippet!r}; "
                                    "give it a fallback, e.g. | default('there', true)"))
        return problems

    def _subject(self, subject: str, context: Mapping[str, Any], path: str, field: str) -> str:
        name = f"{field[:-len('template')]}subject" if field.endswith("template") else (
            f"{field}.subject")
        try:
            with self._lock:
                template = self._subjects.get(subject)
            if template is None:
                template = self._jinja(self._text_env, subject, "subject")
                with self._lock:
                    self._subjects[subject] = template
                    while len(self._subjects) > 256:
                        self._subjects.popitem(last=False)
            title = _one_line(self._text_env.render_bounded(template, context))
        except Exception as exc:
            raise TemplateError([Problem(path, None, name, f"subject: {_describe(exc)}")]
                                ) from None
        if not title:
            raise TemplateError([Problem(path, None, name, "the subject is empty once rendered")])
        return title


# Contexts -----------------------------------------------------------------------------------
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


# Messages -----------------------------------------------------------------------------------
def make_message_id(enrollment_id: int, step_id: str, trigger_key: str, secret: str,
                    domain: str) -> str:
    """The Message-ID of a touch, from what identifies its send (the touch's unique key).

    Not from the row's id: a preview of a step not planned yet (``nurture preview``) must carry
    the Message-ID the real send will, and a resend (``nurture resolve --resend``) the one
    already sent, so that a copy that did arrive threads as the same message. The key is
    written out, so two touches never share one; the HMAC makes it unguessable without the
    secret key.
    """
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise ValueError(f"{domain!r} is not a domain a Message-ID can use")
    parts = [str(enrollment_id), step_id, *([trigger_key] if trigger_key else [])]
    if not all(re.fullmatch(r"[A-Za-z0-9-]+", part) for part in parts):
        raise ValueError(f"{parts!r} cannot be written into a Message-ID")
    digest = hmac.new(secret.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()
    return f"<nurture.{'.'.join(parts)}.{digest[:12]}@{domain}>"


_OUR_ID = re.compile(r"<nurture\.([A-Za-z0-9.-]+)\.([0-9a-f]{12})@([A-Za-z0-9.-]+)>")


def is_our_message_id(message_id: str, secret: str, domain: str) -> bool:
    """Whether ``message_id`` was made by :func:`make_message_id` with this secret and domain:
    checked without a database, so a forged or foreign id is never taken for ours."""
    found = _OUR_ID.fullmatch(message_id.strip())
    if found is None or found.group(3).lower() != domain.lower():
        return False
    parts = found.group(1).split(".")
    digest = hmac.new(secret.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest[:12], found.group(2))


def _one_click_url(url: str) -> str:
    """RFC 8058 one-click needs https; plain http is accepted for a local development host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or host.endswith(".localhost") or (
            ipaddress.ip_address(host).is_loopback)
    except ValueError:
        local = False
    if not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise ValueError(f"unsubscribe URL {url!r} must be an https:// URL (RFC 8058)")
    return _ascii_token(url, "unsubscribe URL")


class _VerbatimHeader(UnstructuredHeader):
    """URIs and Message-IDs, folded only between them and never RFC 2047-encoded (the email
    package would encode a token longer than a line, and break List-Unsubscribe or threading).
    The folding lives on the header, so any generator policy keeps it."""

    def fold(self, *, policy: Any) -> str:
        return _fold_words(self.name, str(self), policy.linesep)


def _fold_words(name: str, value: str, linesep: str = "\r\n") -> str:
    lines, line = [], f"{name}:"
    for word in value.split():
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines, line = [*lines, line], ""
        line += f" {word}"
    return linesep.join([*lines, line]) + linesep


_VERBATIM = ("List-Unsubscribe", "In-Reply-To", "References")
_HEADERS = HeaderRegistry()
for _name in _VERBATIM:
    _HEADERS.map_to_type(_name.lower(), _VerbatimHeader)
#: SMTP: ``as_bytes()`` is exactly what an SMTP server or an ``.eml`` file receives (CRLF).
_POLICY = SMTP.clone(header_factory=_HEADERS)


def _ascii_token(value: str, what: str, pattern: str = r"[^\s<>,]+") -> str:
    if not (value.isascii() and re.fullmatch(pattern, value)):
        raise ValueError(f"{what} {value!r} is not valid in a header")
    return value


def _msg_id(value: str, what: str) -> str:
    return _ascii_token(value, what, r"<[^\s<>]+>")


class WireMessage(EmailMessage):
    """A composed email that also carries its exact wire bytes and envelope.

    Writing the bytes directly is several times cheaper than having the email package parse,
    fold and serialize every header of every email (measured in ``bench/``). The transports
    send :attr:`wire` as it is; the headers and parts are there for whoever reads the message,
    and serialize back to the same bytes.
    """

    wire: bytes
    envelope_from: str
    envelope_to: str


def wire_bytes(message: EmailMessage) -> bytes:
    """What goes on the wire for ``message``: its own bytes if it was composed here."""
    return message.wire if isinstance(message, WireMessage) else message.as_bytes(policy=_POLICY)


_CRLF = "\r\n"
Headers = list[tuple[str, Any]]  # (name, value folded with CRLF, or a header object)


def _text(value: str) -> str:
    """An unstructured header value: ASCII as it is, anything else RFC 2047-encoded.

    A short printable ASCII value is what the email package would give back anyway (most
    subjects are), without its parsing and folding machinery."""
    if len(value) <= 75 and value.isascii() and value.isprintable():
        return value
    return Header(value).encode(linesep=_CRLF)


def _address(name: str, address: str) -> str:
    if not re.fullmatch(r"[^\s<>]+@[^\s<>@]+", address):
        raise ValueError(f"{address!r} is not an email address")
    if not address.isascii():
        raise ValueError(f"{address!r} would need SMTPUTF8, which nurture does not use")
    return formataddr((_one_line(name), address), charset="utf-8")


def _write(headers: Headers) -> str:
    return "".join(value.fold(policy=_POLICY) if isinstance(value, _VerbatimHeader)
                   else f"{name}: {value}{_CRLF}" for name, value in headers)


def _quoted_printable(body: str) -> str:
    """``body`` as UTF-8 quoted-printable (RFC 2045), every line ending in CRLF.

    ``binascii.b2a_qp`` (C) is two to three times faster than the email package's pure-Python
    encoder, but now and then writes a 77-character line where the RFC allows 76; such a body
    is encoded again the slow way.
    """
    data = b"".join(line + b"\r\n" for line in body.encode("utf-8").splitlines())
    fast = binascii.b2a_qp(data, istext=True).decode("ascii")
    if all(len(line) <= 76 for line in fast.split(_CRLF)):
        return fast
    return body_encode(data.replace(b"\r\n", b"\n").decode("latin-1"), 76, eol=_CRLF)


def _part(subtype: str, body: str) -> tuple[EmailMessage, str]:
    """One quoted-printable part, and its text. Lines end in CRLF, the last one too."""
    encoded = _quoted_printable(body)
    headers = [("Content-Type", f'text/{subtype}; charset="utf-8"'),
               ("Content-Transfer-Encoding", "quoted-printable")]
    return _message(EmailMessage, headers, encoded), f"{_write(headers)}{_CRLF}{encoded}"


def _message(cls: type[EmailMessage], headers: Headers, payload: Any) -> Any:
    message = cls(policy=_POLICY)
    for name, value in headers:
        message.set_raw(name, value)
    message.set_payload(payload)
    return message


def build_message(rendered: RenderedEmail, *, from_name: str, from_email: str, to_name: str,
                  to_email: str, message_id: str, date: datetime, unsubscribe_url: str,
                  unsubscribe_mailto: str, reply_to: str | None = None,
                  in_reply_to: str | None = None, references: Sequence[str] = ()) -> WireMessage:
    """The email as it goes on the wire: ``multipart/alternative``, text first, then HTML.

    ``date`` is the caller's clock (never the system's) and must be timezone-aware. The bytes
    use CRLF, non-ASCII names and subjects are RFC 2047-encoded (no server needs SMTPUTF8), and
    both parts are quoted-printable, safe on any relay. Equal input gives equal bytes: the MIME
    boundary is derived from the content (a preview matches the send).
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    unsubscribe = [f"<{_one_click_url(unsubscribe_url)}>"]
    if unsubscribe_mailto:
        mailto = unsubscribe_mailto.removeprefix("mailto:")
        unsubscribe.append(f"<mailto:{_ascii_token(mailto, 'unsubscribe address')}>")
    from_email, to_email = from_email.strip(), to_email.strip()
    headers: Headers = [("From", _address(from_name, from_email)),
                        ("To", _address(to_name, to_email))]
    if reply_to:
        headers.append(("Reply-To", _text(reply_to)))
    headers += [("Subject", _text(_one_line(rendered.subject))),
                ("Date", format_datetime(date)),
                ("Message-ID", _msg_id(message_id, "Message-ID"))]
    if in_reply_to:
        headers.append(("In-Reply-To", _HEADERS("In-Reply-To", _msg_id(in_reply_to,
                                                                         "In-Reply-To"))))
    if references:
        headers.append(("References", _HEADERS("References", " ".join(
            _msg_id(ref, "reference") for ref in references))))
    # "=_" never occurs in quoted-printable text, so the boundary cannot clash with a body.
    digest = hashlib.sha256("\0".join([message_id, rendered.subject, rendered.text,
                                        rendered.html]).encode()).hexdigest()
    boundary = f"=_nurture_{digest[:32]}"
    headers += [("List-Unsubscribe", _HEADERS("List-Unsubscribe", ", ".join(unsubscribe))),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                # Exchange may still send out-of-office notices (they pause the contact until
                # the return date) and delivery reports; other automatic replies change
                # nothing here, and RFC 3834 asks responders not to answer mail a program sent.
                ("X-Auto-Response-Suppress", "AutoReply"),
                ("MIME-Version", "1.0"),
                ("Content-Type", f'multipart/alternative;{_CRLF} boundary="{boundary}"')]
    (text, text_wire), (html, html_wire) = _part("plain", rendered.text), _part("html",
                                                                              rendered.html)
    wire = "".join([_write(headers), _CRLF, f"--{boundary}{_CRLF}", text_wire, _CRLF,
                    f"--{boundary}{_CRLF}", html_wire, _CRLF, f"--{boundary}--{_CRLF}"])
    message = _message(WireMessage, headers, [text, html])
    message.wire, message.envelope_from, message.envelope_to = (wire.encode("ascii"),
                                                                from_email, to_email)
    return message
