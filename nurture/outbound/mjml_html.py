"""MJML → HTML with `mrml` (the Rust MJML compiler), plus the checks it does not make itself.

**Why mrml.** A one-off comparison (bench/README.md, "What was removed") compiled every
shipped (template, layout) with
the ``mjml`` Python package, the ``mrml`` binding and the reference npm ``mjml`` (4.18 and 5.4),
then rendered and screenshotted each result: mrml's emails are pixel-identical to the reference
on all of them and it compiles in about 0.1 ms instead of about 10 ms; the Python package drew
the card layout's rounded border differently. Compiles are cached
(:mod:`nurture.outbound.render`), so the speed matters for a worker's first emails and for
``validate``; the fidelity matters for every email.

**What mrml does not check**, and so is checked here before compiling, each with its line:
an unknown element (mrml drops it silently), an unclosed or stray component, ``<mj-include>``
(it can read any file; mrml is also given a loader that loads nothing), and Jinja between
components, where it would land outside any table cell (mrml keeps the text; the Python
package dropped it). Inside a component Jinja is safe: ``<``, ``>`` and ``&`` within Jinja tags
are escaped for the compiler and unescaped again by :mod:`nurture.outbound.render`.
"""

from __future__ import annotations

import html as htmlmod
import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any

import mrml

__all__ = ["MjmlError", "check_shape", "lost_jinja", "mjml_to_html"]

JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
COMMENTS = re.compile(r"<!--.*?-->|\{#.*?#\}", re.S)
#: Every MJML 4 element.
ELEMENTS = frozenset(f"mj-{name}" for name in (
    "accordion accordion-element accordion-text accordion-title all attributes body breakpoint "
    "button carousel carousel-image class column divider font group head hero html-attribute "
    "html-attributes image include navbar navbar-link preview raw section selector social "
    "social-element spacer style table text title wrapper").split()) | {"mjml"}
#: Elements whose content is passed through as HTML: Jinja is safe inside them.
RAW_CONTENT = frozenset({"mj-text", "mj-raw", "mj-button", "mj-table", "mj-navbar-link",
                         "mj-accordion-title", "mj-accordion-text", "mj-social-element",
                         "mj-style", "mj-title", "mj-preview", "mj-html-attribute"})
_OPTIONS = (mrml.ParserOptions(include_loader=mrml.noop_loader()),
            mrml.RenderOptions(disable_comments=True))


class MjmlError(ValueError):
    """mrml refused the source; ``line`` is where, when it says."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


def mjml_to_html(source: str) -> str:
    """Compile MJML to HTML. Jinja tags come out as they went in, apart from HTML escaping."""
    escaped = JINJA.sub(lambda m: htmlmod.escape(m.group(), quote=False), source)
    try:
        return str(mrml.to_html(escaped, *_OPTIONS).content)
    except OSError as exc:  # some of mrml's errors carry byte offsets: "at position 83:93"
        message = str(exc)
        line = None
        if at := re.search(r"position (\d+)", message):
            line = escaped.encode()[: int(at.group(1))].count(b"\n") + 1
        elif stray := re.search(r"<(?![A-Za-z/!])", escaped):  # "a < b" written as text
            line = escaped.count("\n", 0, stray.start()) + 1
            message += "; write a '<' in text as &lt;"
        raise MjmlError(re.sub(r" in root template| at position [\d:]+", "", message),
                        line) from None


class _Shape(HTMLParser):
    """Walks the MJML source as HTML, collecting (line, problem) pairs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[tuple[str, int]] = []
        self.errors: list[tuple[int, str]] = []

    def _raw(self) -> bool:
        return any(tag in RAW_CONTENT for tag, _ in self.open)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        line = self.getpos()[0]
        if tag == "mj-include":
            self.errors.append((line, "<mj-include> is not allowed in templates"))
        elif tag.startswith("mj-") or tag == "mjml":
            if tag not in ELEMENTS:
                self.errors.append((line, f"unknown MJML element <{tag}>"))
            self.open.append((tag, line))

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag == "mj-include":
            self.handle_starttag(tag, attrs)
        elif tag.startswith("mj-") and tag not in ELEMENTS:
            self.errors.append((self.getpos()[0], f"unknown MJML element <{tag}>"))

    def handle_endtag(self, tag: str) -> None:
        if not (tag.startswith("mj-") or tag == "mjml"):
            return
        line = self.getpos()[0]
        if tag not in (name for name, _ in self.open):
            self.errors.append((line, f"</{tag}> closes nothing"))
            return
        while (top := self.open.pop())[0] != tag:
            self.errors.append((top[1], f"<{top[0]}> is not closed before </{tag}>"))

    def handle_data(self, data: str) -> None:
        if self._raw() or not self.open:
            return
        line = self.getpos()[0]
        for match in JINJA.finditer(data):
            tag = " ".join(match.group().split())
            self.errors.append((line + data.count("\n", 0, match.start()), _between(tag)))


def _between(tag: str) -> str:
    return (f"{tag} does not survive MJML: Jinja between components is dropped (move it inside "
            "an <mj-text> or wrap it in <mj-raw>), and a tag written inside a Jinja string is "
            "parsed as HTML")


def check_shape(source: str) -> list[tuple[int, str]]:
    """(line, problem) for what MJML would accept silently or get wrong."""
    shape = _Shape()
    shape.feed(COMMENTS.sub(lambda m: "\n" * m.group().count("\n"), source))
    shape.close()
    return shape.errors + [(line, f"<{tag}> is never closed") for tag, line in shape.open]


def lost_jinja(source: str, compiled: str) -> list[tuple[int | None, str]]:
    """Jinja tags of ``source`` missing from ``compiled`` (a safety net behind
    :func:`check_shape`), and Jinja-like text that only ``compiled`` has."""
    src = COMMENTS.sub(lambda m: "\n" * m.group().count("\n"), source)
    before = [(" ".join(htmlmod.unescape(m.group()).split()), m.start())
              for m in JINJA.finditer(src)]
    after = [" ".join(htmlmod.unescape(m.group()).split()) for m in JINJA.finditer(compiled)]
    lost = Counter(tag for tag, _ in before) - Counter(after)
    found: list[tuple[int | None, str]] = []
    for tag, at in before:
        if lost[tag] > 0:
            lost[tag] -= 1
            found.append((src.count("\n", 0, at) + 1, _between(tag)))
    invented = set(after) - {tag for tag, _ in before}
    found += [(None, f"MJML's output contains Jinja-like text {tag!r}") for tag in invented]
    return found
