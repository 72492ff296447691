"""The MJML compilers that ``bench.render_bench`` compares, and how their output is compared.

Compilers: the ``mjml`` Python package, the ``mrml`` binding and the npm ``mjml`` (run by node,
timed inside node so its start-up is not counted). Output: normalised HTML tokens and the pixels
of a headless-Chromium screenshot.
"""

from __future__ import annotations

import html as htmlmod
import importlib.metadata
import json
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nurture.outbound.mjml_html import COMMENTS, JINJA

Compiler = Callable[[list[str], int], list[tuple[str, float]]]

NODE_SCRIPT = r"""
const path = require('path');
const fn = (m => m.default || m)(require(path.join(process.argv[2], 'node_modules', 'mjml')));
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const opts = {validationLevel: 'soft', keepComments: false};
(async () => {
  const out = [];
  for (const src of input.sources) {
    let r = await fn(src, opts);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < input.repeat; i++) r = await fn(src, opts);
    out.push({html: r.html, ms: Number(process.hrtime.bigint() - t0) / 1e6 / input.repeat});
  }
  process.stdout.write(JSON.stringify(out));
})();
"""


def python_mjml() -> Callable[[str], str] | None:
    """The ``mjml`` Python package's compiler, if installed (nurture used it before mrml)."""
    try:
        from mjml import mjml_to_html
    except ImportError:
        return None
    return lambda source: str(mjml_to_html(source, keep_comments=False).html)


def compilers(npm_dirs: list[Path], per_ms: Callable[..., float]) -> dict[str, Compiler]:
    """name → compile(sources, repeat) → [(html, ms per compile)], for each compiler found."""
    found: dict[str, Any] = {}

    if (compile_py := python_mjml()) is not None:
        found[f"mjml (Python) {importlib.metadata.version('mjml')}"] = (
            lambda srcs, repeat: [(compile_py(s), per_ms(lambda s=s: compile_py(s), repeat))
                                  for s in srcs])
    try:
        import mrml

        options = mrml.RenderOptions(disable_comments=True)

        def rust_mrml(srcs: list[str], repeat: int) -> list[tuple[str, float]]:
            return [(mrml.to_html(s, render_options=options).content,
                     per_ms(lambda s=s: mrml.to_html(s, render_options=options), repeat * 10))
                    for s in srcs]

        found[f"mrml (Rust binding) {importlib.metadata.version('mrml')}"] = rust_mrml
    except ImportError:
        print("mrml is not installed (pip install mrml): skipped")
    for prefix in npm_dirs:
        version = json.loads((prefix / "node_modules/mjml/package.json").read_text())["version"]
        found[f"mjml (npm, reference) {version}"] = (
            lambda srcs, repeat, prefix=prefix: npm_mjml(prefix, srcs, repeat))
    return found


def npm_mjml(prefix: Path, srcs: list[str], repeat: int) -> list[tuple[str, float]]:
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as script:
        script.write(NODE_SCRIPT)
    out = subprocess.run(["node", script.name, str(prefix)], input=json.dumps(
        {"sources": srcs, "repeat": repeat}), capture_output=True, text=True, check=True)
    Path(script.name).unlink()
    return [(r["html"], r["ms"]) for r in json.loads(out.stdout)]


def node_startup_ms(prefix: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["node", "-e", f"require({json.dumps(str(prefix / 'node_modules/mjml'))})"],
                   check=True)
    return (time.perf_counter() - started) * 1000


class _Tokens(HTMLParser):
    """HTML as comparable tokens: attributes sorted, styles split into sorted declarations,
    whitespace collapsed, conditional comments kept (Outlook reads them)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        norm = []
        for key, value in sorted(attrs):
            if key in ("class", "style") and not (value or "").strip():
                continue
            if key == "class":
                value = " ".join(sorted((value or "").split()))
            if key == "style" and value:
                value = ";".join(sorted(d.strip().replace(" ", "") for d in value.split(";")
                                        if d.strip()))
            norm.append(f"{key}={' '.join((value or '').split())}")
        self.tokens.append(f"<{tag} {' '.join(norm)}>")

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("br", "img", "meta", "link", "hr", "input"):  # void: no end tag
            self.tokens.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text:
            self.tokens.append(re.sub(r"\s*([{};:,])\s*", r"\1", text))

    def handle_comment(self, data: str) -> None:
        if data.startswith("[if"):  # Outlook's HTML: compared like the rest
            condition, _, inner = data.partition("]>")
            inner_tokens = tokens(inner.removesuffix("<![endif]"))
            if inner_tokens:  # how the conditional blocks are split up does not matter
                self.tokens += [f"mso {' '.join(condition.split())}]:{t}" for t in inner_tokens]


def tokens(html: str) -> list[str]:
    parser = _Tokens()
    parser.feed(html)
    parser.close()
    return parser.tokens


def jinja_tags(text: str) -> Counter[str]:
    text = COMMENTS.sub("", text)
    return Counter(" ".join(htmlmod.unescape(m.group()).split()) for m in JINJA.finditer(text))


def render_jinja(compiled: str, ctx: dict[str, Any]) -> str:
    env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
    source = JINJA.sub(lambda m: htmlmod.unescape(m.group()), compiled)
    return env.from_string(source).render(ctx)


def screenshot(html: str, folder: Path, name: str, browser: str) -> Path:
    page, png = folder / f"{name}.html", folder / f"{name}.png"
    page.write_text(html, encoding="utf-8")
    subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", "--window-size=640,1200",
                    f"--screenshot={png}", page.as_uri()], capture_output=True, timeout=120,
                   check=True)
    return png
