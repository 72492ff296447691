"""The ``text/plain`` alternative of a rendered email, derived from its HTML.

The text part must read well on its own, as if it had been typed: paragraphs separated by one
blank line, ``<br>`` kept as a line break, and every link written out so nothing is lost, as
``text (url)``, or just the url when the text already says it. Everything a reader would not
see is left out: ``<head>``, CSS, scripts, comments (which include Outlook's ``<!--[if mso]>``
conditionals) and hidden elements.

It uses the standard library's :mod:`html.parser`, which is enough for the HTML that MJML emits.
"""

from __future__ import annotations

import re
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
        self._link: tuple[str, int] | None = None  # (href, index in out where its text starts)

    @property
    def _hidden(self) -> bool:
        return bool(self._open) and self._open[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        hidden = self._hidden or tag in _SKIP or bool(_HIDDEN.search(a.get("style", "")))
        if tag not in _VOID:
            self._open.append((tag, hidden))
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

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if not any(name == tag for name, _ in self._open):
            return  # a stray end tag: ignore it, as browsers do
        while self._open:
            name, hidden = self._open.pop()
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
    parser.feed(html)
    parser.close()
    return _layout(parser.out), parser.links


def html_to_text(html: str) -> str:
    """A plain-text rendering of ``html`` that reads on its own and keeps every link."""
    return text_and_links(html)[0]
