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
        a = {k: v or "" for k, v in attrs}
        hidden = self._hidden or tag in _SKIP or bool(_HIDDEN.search(a.get("style", "")))
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
        elif tag == "a" and a.get("href", "").strip() and not a["href"].startswith("#"):
            self._close_link()
            self._link = (a["href"].strip(), len(self.out))
        elif tag == "img" and a.get("alt", "").strip():
            self.out.append(a["alt"])

    def handle_startendtag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
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


def text_and_links(html: str) -> tuple[str, list[str]]:
    """The plain-text rendering of ``html`` and the ``href`` of every visible link in it."""
    parser = _TextParser()
    if not _feed_regular(parser, html):
        return _read_with_htmlparser(html)
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


@functools.lru_cache(maxsize=4096)
def _attrs(source: str) -> tuple[tuple[str, str | None], ...]:
    """A tag's attributes (cached: the same tags recur in every email of a template). A tuple,
    so the cached value cannot be changed by whoever reads it."""
    attrs: list[tuple[str, str | None]] = []
    for name, raw in _ATTR.findall(source):
        value = raw[1:-1] if raw[:1] in ("'", '"') else raw
        attrs.append((name.lower(), unescape(value) if raw else None))
    return tuple(attrs)


def _feed_regular(parser: _TextParser, html: str) -> bool:
    """Feed ``html`` token by token to the parser's handlers; False (having fed some) if it is
    not as regular as MJML's output, and HTMLParser must read it instead."""
    at = 0
    for match in _TOKEN.finditer(html):
        if match.start() != at:
            data = html[at:match.start()]
            if "<" in data:
                return False
            parser.handle_data(unescape(data))
        at = match.end()
        if match["start"]:
            tag = match["start"].lower()
            if match["close"]:
                parser.handle_startendtag(tag, _attrs(match["attrs"]))
            else:
                parser.handle_starttag(tag, _attrs(match["attrs"]))
        elif match["end"]:
            parser.handle_endtag(match["end"].lower())
        elif match["raw"]:
            tag = match["raw"].lower()
            parser.handle_starttag(tag, _attrs(match["rawattrs"]))
            if match["rawtext"]:
                parser.handle_data(match["rawtext"])
            parser.handle_endtag(tag)
    tail = html[at:]
    if "<" in tail:
        return False
    if tail:
        parser.handle_data(unescape(tail))
    return True


def html_to_text(html: str) -> str:
    """A plain-text rendering of ``html`` that reads on its own and keeps every link."""
    return text_and_links(html)[0]
