"""The ``text/plain`` alternative of a rendered email, derived from its HTML.

The text part must read well on its own, as if it had been typed: paragraphs separated by one
blank line, ``<br>`` kept as a line break, and every link written out so nothing is lost, as
``text (url)``, or just the url when the text already says it. Everything a reader would not
see is left out: ``<head>``, CSS, scripts, comments (which include Outlook's ``<!--[if mso]>``
conditionals) and hidden elements.

It uses the standard library's :mod:`html.parser`, which is enough for the HTML that MJML emits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from html import unescape
from html.parser import HTMLParser
from typing import Any

__all__ = ["html_to_text", "text_and_links"]

_SKIP = {"head", "style", "script", "title", "template", "noscript"}
_BLOCK = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
          "blockquote", "section", "article", "header", "footer", "center", "hr", "pre"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}
_HIDDEN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all", re.I)
_SPACE = re.compile(r"[ \t\r\n\f\v]+")
_PARAGRAPH, _LINE = "\x00P", "\x00L"  # break markers, resolved in _layout()


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, hidden) of elements not yet closed
        self._opened: dict[str, int] = {}  # how many of each tag are in _open
        self._link: tuple[str, int] | None = None  # (href, index in out where its text starts)

    @property
    def _hidden(self) -> bool:
        return bool(self._open) and self._open[-1][1]

    def handle_starttag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self._start(tag, _facts(tuple(attrs)))

    def _start(self, tag: str, facts: _Facts) -> None:
        styled_hidden, href, alt = facts
        hidden = self._hidden or tag in _SKIP or styled_hidden
        if tag not in _VOID:
            self._open.append((tag, hidden))
            self._opened[tag] = self._opened.get(tag, 0) + 1
        if hidden:
            return
        if tag == "br":
            self.out.append(_LINE)
        elif tag in _BLOCK:
            self.out.append(_PARAGRAPH)
        elif tag == "li":
            self.out.extend([_LINE, "- "])
        elif tag == "a" and href:
            self._close_link()
            self._link = (href, len(self.out))
        elif tag == "img" and alt:
            self.out.append(alt)

    def handle_startendtag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self._start_end(tag, _facts(tuple(attrs)))

    def _start_end(self, tag: str, facts: _Facts) -> None:
        self._start(tag, facts)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self._opened.get(tag):
            return  # a stray end tag: ignore it, as browsers do
        while self._open:
            name, hidden = self._open.pop()
            self._opened[name] -= 1
            if name == tag:
                break
        if hidden:
            return
        if tag == "a":
            self._close_link()
        elif tag in _BLOCK:
            self.out.append(_PARAGRAPH)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.out.append(data.replace("\x00", ""))

    def _close_link(self) -> None:
        if self._link is None:
            return
        href, start = self._link
        self._link = None
        self.links.append(href)
        label = _SPACE.sub(" ", "".join(p for p in self.out[start:] if not p.startswith("\x00")))
        label = label.replace("\xa0", " ").strip()
        bare = re.sub(r"^(mailto|tel):", "", href, flags=re.I)
        if not label:
            self.out.append(href)
        elif label not in (href, bare, href.rstrip("/")):
            self.out.append(f" ({href})")

    def close(self) -> None:
        super().close()
        self._close_link()


def _layout(parts: list[str]) -> str:
    """Collapse whitespace as a browser would, then resolve the break markers."""
    text = _SPACE.sub(" ", "".join(parts).replace("\xa0", " "))
    paragraphs = []
    for block in text.split(_PARAGRAPH):
        lines = [line.strip() for line in block.split(_LINE)]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def text_and_links(html: str | Sequence[str]) -> tuple[str, list[str]]:
    """The plain-text rendering of ``html`` and the ``href`` of every visible link in it.

    ``html`` may also be given in the pieces a template rendered it in (its fixed text and the
    values between): the same result, faster, since each fixed piece is tokenised once per
    process rather than once per email (see :func:`_tokens`).
    """
    parser = _TextParser()
    if not _feed_regular(parser, html):
        return _read_with_htmlparser(html if isinstance(html, str) else "".join(html))
    parser.close()
    return _layout(parser.out), parser.links


def _read_with_htmlparser(html: str) -> tuple[str, list[str]]:
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return _layout(parser.out), parser.links


# The HTML that MJML emits is regular: tags, comments, a doctype, text with character
# references. Tokenised by one regular expression it converts about four times faster than
# through HTMLParser's general loop, which every email would otherwise pay for. Anything else
# (a stray "<", a processing instruction, CDATA) falls back to HTMLParser, from the start.
_NAME, _VALUE = r"""[^\s/>"'=]+""", r"""(?:"[^"]*"|'[^']*'|[^\s>"'=`<]+)"""
_ATTR = re.compile(rf"({_NAME})(?:\s*=\s*({_VALUE}))?")
_TOKEN = re.compile(r"""<(?:
    !--.*?-->
  | ![a-zA-Z][^>]*>
  | (?P<raw>style|script)\b(?P<rawattrs>[^>]*)>(?P<rawtext>.*?)</(?P=raw)\s*>
  | /(?P<end>[a-zA-Z][^\s/>]*)\s*>
  | (?P<start>[a-zA-Z][^\s/>]*)(?P<attrs>(?:\s+NAME(?:\s*=\s*VALUE)?)*)\s*(?P<close>/?)>
)""".replace("NAME", _NAME).replace("VALUE", _VALUE), re.S | re.X | re.I)
_OPEN_REFERENCE = re.compile(r"&[^\t\n\f <&;]*\Z")  # a character reference the piece cuts off
_RAW = ("style", "script")

_Facts = tuple[bool, str, str]  # hidden by its style, link target, image text
# Tokens: ("data", text) | ("start", tag, facts) | ("startend", tag, facts) | ("end", tag)
_Token = tuple[Any, ...]


@functools.lru_cache(maxsize=4096)
def _attrs(source: str) -> _Facts:
    """What the text needs of a tag's attributes (cached: the same tags recur in every email
    of a template)."""
    attrs: list[tuple[str, str | None]] = []
    for name, raw in _ATTR.findall(source):
        value = raw[1:-1] if raw[:1] in ("'", '"') else raw
        attrs.append((name.lower(), unescape(value) if raw else None))
    return _facts(tuple(attrs))


def _facts(attrs: tuple[tuple[str, str | None], ...]) -> _Facts:
    a = {k: v or "" for k, v in attrs}
    href = a.get("href", "")
    return (bool(_HIDDEN.search(a.get("style", ""))),
            href.strip() if href.strip() and not href.startswith("#") else "",
            a.get("alt", "") if a.get("alt", "").strip() else "")


def _tokens(html: str, *, final: bool, until: int = -1) -> tuple[list[_Token], int] | None:
    """The tokens of ``html`` and how far they reach; None if it is not as regular as MJML's
    output, and HTMLParser must read it instead.

    Unless ``final``, ``html`` may stop anywhere, even inside a tag: the tokens then stop
    before whatever may not be whole yet (a tag, a ``<style>`` without its end, a character
    reference), which the next piece completes. With ``until``, they stop at the first token
    that ends after it.
    """
    tokens: list[_Token] = []
    at = 0
    for match in _TOKEN.finditer(html):
        if match.start() != at:
            data = html[at:match.start()]
            if "<" in data:
                if final:
                    return None
                return tokens, at + data.index("<")
            tokens.append(("data", unescape(data)))
        if match["start"]:
            tag = match["start"].lower()
            if tag in _RAW and not final:
                return tokens, match.start()  # its end tag may be in the next piece
            kind = "startend" if match["close"] else "start"
            tokens.append((kind, tag, _attrs(match["attrs"])))
        elif match["end"]:
            tokens.append(("end", match["end"].lower()))
        elif match["raw"]:
            tag = match["raw"].lower()
            tokens.append(("start", tag, _attrs(match["rawattrs"])))
            if match["rawtext"]:
                tokens.append(("data", match["rawtext"]))
            tokens.append(("end", tag))
        at = match.end()
        if 0 <= until < at:
            return tokens, at
    tail = html[at:]
    if "<" in tail:
        if final:
            return None
        cut = tail.index("<")
    else:
        cut = len(tail)
        if not final and (reference := _OPEN_REFERENCE.search(tail)):
            cut = reference.start()
    if cut:
        tokens.append(("data", unescape(tail[:cut])))
    return tokens, at + cut


@functools.lru_cache(maxsize=2048)
def _piece_tokens(piece: str) -> tuple[tuple[_Token, ...], int] | None:
    """:func:`_tokens` of one piece of a template's output, cached: its fixed pieces are the
    same strings in every email."""
    found = _tokens(piece, final=False)
    return None if found is None else (tuple(found[0]), found[1])


def _feed_regular(parser: _TextParser, html: str | Sequence[str]) -> bool:
    """Feed ``html`` (or the HTML in these pieces) token by token to the parser's handlers;
    False (having fed some) if it is not as regular as MJML's output, and HTMLParser must read
    it instead."""
    if isinstance(html, str):  # one document, read once: nothing to cache
        found = _tokens(html, final=True)
        if found is not None:
            _replay(parser, found[0])
        return found is not None
    carry = ""  # the end of the pieces so far that the next piece completes
    for piece in map(str, html):  # str: adding a str to a template's Markup would escape it
        if carry:
            found = _tokens(carry + piece, final=False, until=len(carry))
            if found is None:
                return False
            _replay(parser, found[0])
            reach = found[1]
            if reach < len(carry):  # still not whole
                carry = (carry + piece)[reach:]
                continue
            piece = piece[reach - len(carry):]
        cached = _piece_tokens(piece)
        if cached is None:
            return False
        _replay(parser, cached[0])
        reach = cached[1]
        carry = piece[reach:]
    if carry:
        found = _tokens(carry, final=True)
        if found is None:
            return False
        _replay(parser, found[0])
    return True


def _replay(parser: _TextParser, tokens: Sequence[_Token]) -> None:
    for token in tokens:
        kind = token[0]
        if kind == "data":
            parser.handle_data(token[1])
        elif kind == "start":
            parser._start(token[1], token[2])
        elif kind == "end":
            parser.handle_endtag(token[1])
        else:
            parser._start_end(token[1], token[2])


def html_to_text(html: str) -> str:
    """A plain-text rendering of ``html`` that reads on its own and keeps every link."""
    return text_and_links(html)[0]
