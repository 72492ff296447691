"""Rendering: the shipped templates, the sandbox's limits, the compile cache, the headers."""

from __future__ import annotations

import binascii
import random
import re
import shutil
import string
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.header import Header
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nurture.errors import Problem, TemplateError
from nurture.outbound.mime import _quoted_printable, _text, build_message, make_message_id
from nurture.outbound.render import CONTEXT_KEYS, RenderedEmail, Renderer
from nurture.outbound.samples import sample_context, sparse_context
from nurture.outbound.text import (
    _feed_regular,
    _read_with_htmlparser,
    _TextParser,
    html_to_text,
    text_and_links,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (REPO / "templates").glob("*.mjml") if not p.name.startswith("_"))
PRACTICE = {"name": "Harbor Physical Therapy", "address": "48 Dock Street\nPortland, ME 04101",
            "phone": "(207) 555-0142", "website": "https://harborpt.example"}
SENDER = {"name": "Alex Moreau", "email": "alex@harborpt.example", "title": "Owner",
          "signature": "Warmly,"}


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the shipped templates, free to edit."""
    return Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))


@pytest.fixture
def renderer(templates: Path) -> Renderer:
    return Renderer(templates)


@pytest.fixture
def context() -> dict:
    return sample_context(practice=PRACTICE, sender=SENDER)


def write(templates: Path, name: str, body: str) -> str:
    (templates / name).write_text(body, encoding="utf-8")
    return name


def problems_of(renderer: Renderer, name: str, context: dict, field: str = "steps[0].template",
                subject: str = "Hello") -> list[Problem]:
    with pytest.raises(TemplateError) as caught:
        renderer.render(name, subject, context, field=field)
    return caught.value.problems


class StrictHTML(HTMLParser):
    """Fails on any end tag that does not close the innermost open element."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if tag == "a" and k == "href"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if tag == "a" and k == "href"]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def parse_strict(html: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(html)
    parser.close()
    assert parser.stack == [], f"never closed: {parser.stack}"
    return parser


# The shipped templates ------------------------------------------------------------------------
def test_all_nine_templates_ship() -> None:
    assert set(SHIPPED) == {"appreciation.mjml", "open-question.mjml", "question-follow-up.mjml",
                            "check-in.mjml", "article-share.mjml", "book-suggestion.mjml",
                            "coffee.mjml", "thank-you.mjml", "partner-check-in.mjml"}


@pytest.mark.parametrize("sparse", [False, True], ids=["full", "sparse"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_template_renders(renderer: Renderer, context: dict, name: str,
                                  sparse: bool) -> None:
    ctx = sparse_context(context) if sparse else context
    email = renderer.render(name, "A note from {{ sender.name }}", ctx, field="steps[0].template")

    assert email.html.lstrip().lower().startswith("<!doctype html>")
    assert "<html" in email.html and email.html.rstrip().endswith("</html>")
    parsed = parse_strict(email.html)
    assert parsed.hrefs == [ctx["unsubscribe_url"]]  # no tracking, no other links
    for href in parsed.hrefs:
        assert href in email.text
    assert "Harbor Physical Therapy · 48 Dock Street, Portland, ME 04101" in email.text
    assert ctx["unsubscribe_url"] in email.html
    for leftover in ("{{", "{%", "}}", "None", "<mj-", "googleapis", "<img"):
        assert leftover not in email.html + email.text, leftover
    assert "!" not in email.text, "no exclamation-mark marketing"
    assert not re.search(r"\w +[,.]", email.text), "a blank value left a gap"
    assert "finds you well" not in email.text.lower()
    assert email.subject == "A note from Alex Moreau"

    signed = "Best,\nAlex Moreau\nHarbor" if sparse else "Warmly,\nAlex Moreau\nOwner, Harbor"
    assert signed in email.text
    body = email.text.split(signed)[0]
    assert body.startswith("Hi there,\n\n" if sparse else "Hi Dana,\n\n")
    assert 50 <= len(body.split()) <= 120, len(body.split())
    assert "patient" not in email.text.lower() or name == "open-question.mjml"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_templates_pass_check(renderer: Renderer, context: dict, name: str) -> None:
    assert renderer.check(name, "Hello {{ contact.first_name }}", context, field="s") == []


def test_sample_context_fills_every_field() -> None:
    ctx = sample_context(practice={"name": "Mine"}, sender={})
    assert set(ctx) == CONTEXT_KEYS
    assert ctx["practice"]["name"] == "Mine"
    for key in ("contact", "sender", "owner", "practice", "campaign", "step"):
        assert all(value not in ("", [], None) for value in ctx[key].values()), key
    assert set(ctx["contact"]) == {"first_name", "last_name", "email", "organization", "role",
                                   "interests"}


def test_context_with_unknown_keys_is_refused(renderer: Renderer, context: dict) -> None:
    with pytest.raises(ValueError, match="patient"):
        renderer.render("check-in.mjml", "Hi", {**context, "patient": {"name": "x"}})


# Template errors ------------------------------------------------------------------------------
def test_undefined_variable_names_file_and_line(renderer: Renderer, templates: Path,
                                                context: dict) -> None:
    name = write(templates, "nick.mjml", "<mj-text>\n  <p>Hi,</p>\n  <p>{{ contact.nickname }}"
                                         "</p>\n</mj-text>\n")
    [problem] = problems_of(renderer, name, context)
    assert problem.file == str(templates / "nick.mjml")
    assert problem.line == 3
    assert problem.field == "steps[0].template"
    assert "nickname" in problem.message


def test_check_returns_problems_instead_of_raising(renderer: Renderer, templates: Path,
                                                  context: dict) -> None:
    write(templates, "nick.mjml", "<mj-text>{{ contact.nickname }}</mj-text>")
    [problem] = renderer.check("nick.mjml", "Hi", context, field="f")
    assert (problem.line, problem.field) == (1, "f")


def test_unknown_filter_is_a_problem(renderer: Renderer, templates: Path, context: dict) -> None:
    write(templates, "f.mjml", "<mj-text>\n\n{{ contact.first_name | shout }}\n</mj-text>\n")
    [problem] = problems_of(renderer, "f.mjml", context)
    assert (problem.file, problem.line) == (str(templates / "f.mjml"), 3)
    assert "shout" in problem.message


def test_syntax_error_in_body_and_in_layout(renderer: Renderer, templates: Path,
                                            context: dict) -> None:
    write(templates, "s.mjml", "<mj-text>\n<p>{{ contact.first_name }</p>\n</mj-text>\n")
    [problem] = problems_of(renderer, "s.mjml", context)
    assert (problem.file, problem.line) == (str(templates / "s.mjml"), 2)

    layout = templates / "_layout.mjml"
    lines = layout.read_text().splitlines()
    footer = next(i for i, line in enumerate(lines) if "unsubscribe_url" in line)
    lines[footer] += "{% endif %}"
    layout.write_text("\n".join(lines) + "\n")
    [problem] = problems_of(renderer, "check-in.mjml", context)
    assert (problem.file, problem.line) == (str(layout), footer + 1)


def test_missing_template_file(renderer: Renderer, context: dict, templates: Path) -> None:
    [problem] = problems_of(renderer, "nope.mjml", context, field="steps[2].template")
    assert problem.file == str(templates / "nope.mjml") and problem.field == "steps[2].template"
    assert "not found" in problem.message and "check-in.mjml" in problem.message


@pytest.mark.parametrize("name", ["../secrets.mjml", "_layout.mjml"])
def test_only_email_templates_inside_the_folder(renderer: Renderer, context: dict,
                                                name: str) -> None:
    assert problems_of(renderer, name, context)


def test_jinja_between_components_is_rejected(renderer: Renderer, templates: Path,
                                              context: dict) -> None:
    write(templates, "b.mjml", "<mj-text>a</mj-text>\n{% if touch_count %}\n"
                               "<mj-text>b</mj-text>\n{% endif %}\n")
    problems = problems_of(renderer, "b.mjml", context)
    assert [(p.line, p.message.split()[1]) for p in problems] == [(2, "if"), (4, "endif")]
    assert "<mj-text>" in problems[0].message


def test_jinja_in_mj_raw_and_comparisons_in_text_survive(renderer: Renderer, templates: Path,
                                                         context: dict) -> None:
    write(templates, "ok.mjml", "<mj-raw>{% if touch_count > 1 %}</mj-raw>\n"
                                "<mj-text><p>Again &amp; {{ 'again' if 1 < 2 }}</p></mj-text>\n"
                                "<mj-raw>{% endif %}</mj-raw>\n")
    assert "Again & again" in renderer.render("ok.mjml", "Hi", context).text
    assert "Again" not in renderer.render("ok.mjml", "Hi", {**context, "touch_count": 0}).text


@pytest.mark.parametrize("body,message", [
    ("<mj-text>a</mj-text>\n<mj-txt>b</mj-txt>\n", "unknown MJML element <mj-txt>"),
    ("<mj-text>a</mj-text>\n<mj-include path=\"/etc/passwd\" />\n", "<mj-include>"),
    ("<mj-text>a\n<mj-text>b</mj-text>\n", "<mj-text> is not closed"),
])
def test_invalid_mjml_is_a_problem(renderer: Renderer, templates: Path, context: dict,
                                   body: str, message: str) -> None:
    write(templates, "m.mjml", body)
    problems = problems_of(renderer, "m.mjml", context)
    assert message in problems[0].message
    assert problems[0].file == str(templates / "m.mjml")
    assert problems[0].line in (1, 2)


def test_blank_greeting_fails_check_with_sparse_contact(renderer: Renderer, templates: Path,
                                                        context: dict) -> None:
    write(templates, "hi.mjml", "<mj-text><p>Hi {{ contact.first_name }},</p></mj-text>")
    renderer.render("hi.mjml", "Hi", context)
    [problem] = renderer.check("hi.mjml", "Hi", context, field="f")
    assert "Hi ," in problem.message and "optional fields empty" in problem.message


def test_sender_carries_the_practice_name(renderer: Renderer, templates: Path,
                                          context: dict) -> None:
    write(templates, "sig.mjml",
          "<mj-text><p>{{ sender.name }}, {{ owner.practice }}</p></mj-text>")
    text = renderer.render("sig.mjml", "Hi", context).text
    assert f"{context['sender']['name']}, {context['sender']['practice']}" in text
    assert context["sender"]["practice"]


def test_default_filter_covers_empty_fields(renderer: Renderer, templates: Path,
                                            context: dict) -> None:
    """``default("there")`` must work for a contact whose first name is an empty field."""
    write(templates, "hi.mjml", '<mj-text><p>Hi {{ contact.first_name | default("there") }},'
                                "</p></mj-text>")
    assert renderer.check("hi.mjml", "Hi", context, field="f") == []
    blank = {**context, "contact": {**context["contact"], "first_name": ""}}
    assert "Hi there," in renderer.render("hi.mjml", "Hi", blank).text
    named = renderer.render("hi.mjml", "Hi", context).text
    assert f"Hi {context['contact']['first_name']}," in named


# Compliance -------------------------------------------------------------------------------------
def test_layout_without_unsubscribe_link_is_refused(renderer: Renderer, templates: Path,
                                                    context: dict) -> None:
    layout = templates / "_layout.mjml"
    layout.write_text(layout.read_text().replace('href="{{ unsubscribe_url }}"', 'href="#"'))
    [problem] = problems_of(renderer, "check-in.mjml", context)
    assert problem.file == str(layout) and "unsubscribe_url" in problem.message


def test_missing_postal_address_is_refused(renderer: Renderer, context: dict) -> None:
    ctx = {**context, "practice": {**context["practice"], "address": " "}}
    [problem] = problems_of(renderer, "check-in.mjml", ctx)
    assert "address" in problem.message


def test_layout_that_drops_the_address_is_refused(renderer: Renderer, templates: Path,
                                                  context: dict) -> None:
    layout = templates / "_layout.mjml"
    layout.write_text(layout.read_text().replace("{{ practice.address | replace('\\n', ', ') }}",
                                                 ""))
    assert "practice.address" in problems_of(renderer, "check-in.mjml", context)[0].message


# The sandbox and its limits ---------------------------------------------------------------------
@pytest.mark.parametrize("expression", [
    "''.__class__.__mro__",
    "('{0.__class__.__mro__}' | attr('format'))(1)",
    "'{0.__class__}'.format(1)",
    "contact.interests.append('x')",
    "cycler.__init__.__globals__",
])
def test_sandbox_refuses_escapes(renderer: Renderer, templates: Path, context: dict,
                                 expression: str) -> None:
    write(templates, "x.mjml", f"<mj-text>{{{{ {expression} }}}}</mj-text>")
    [problem] = problems_of(renderer, "x.mjml", context)
    assert problem.message.startswith("not allowed in the sandbox:")
    assert problem.message.endswith("is unsafe.") and problem.line == 1


@pytest.mark.parametrize("code", [
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}",
    "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% set s = 'abcdefgh' %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 40,
    "{% macro d(s) %}{{ s }}{{ s }}{% endmacro %}" + "{{ " + "d(" * 40 + "'x'" + ")" * 40 + " }}",
    "{{ 'x' | center(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{% set s = 'x' * 200000 %}{{ range(1000) | map('string') | join(s) }}",
    "{% set s = 'x' * 200000 %}{{ s.replace('x', s) }}",
    "{% set a = ['x' * 100000] * 3 %}{{ a }}",
    "{{ ([[1]] * 100000) | sum(start=[]) }}",
    "{{ 2 ** 100000 }}",
    "{% set ns = namespace(n=2) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
    "{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
])
def test_runaway_templates_fail_fast(renderer: Renderer, templates: Path, context: dict,
                                     code: str) -> None:
    write(templates, "r.mjml", f"<mj-text>{code}</mj-text>")
    problems = problems_of(renderer, "r.mjml", context)  # pytest-timeout bounds a runaway
    assert problems and problems[0].file == str(templates / "r.mjml")
    assert re.match(r"over a limit: |RecursionError", problems[0].message), problems[0].message


def test_output_size_limit(templates: Path, context: dict) -> None:
    write(templates, "big.mjml", "<mj-text>{% for i in range(contact.interests | length * 40) %}"
                                 "{{ 'y' * 100 }}{% endfor %}</mj-text>")
    small = Renderer(templates, max_output_bytes=12_000)
    [problem] = problems_of(small, "big.mjml", context)
    assert "larger than 12000 bytes" in problem.message
    assert Renderer(templates).render("big.mjml", "Hi", context).html.count("y" * 100) == 80


def test_deadline_stops_a_slow_render(templates: Path, context: dict) -> None:
    write(templates, "slow.mjml", "<mj-text>{% for i in range(3000) %}{% for j in range(3000) %}"
                                  "{{ j }}{% endfor %}{% endfor %}</mj-text>")
    slow = Renderer(templates, max_render_seconds=0.2, max_iterations=10**8,
                    max_output_bytes=10**9)
    [problem] = problems_of(slow, "slow.mjml", context)  # 9 million loops, stopped at 0.2 s
    assert "longer than 0.2 s" in problem.message


def test_none_prints_as_nothing_and_default_handles_empty(renderer: Renderer, templates: Path,
                                                          context: dict) -> None:
    write(templates, "n.mjml", "<mj-text><p>[{{ last_referral_date }}] "
                               "{{ contact.first_name | default('there', true) }}</p></mj-text>")
    ctx = sparse_context(context)
    assert "[] there" in renderer.render("n.mjml", "Hi", ctx).text
    del ctx["contact"]["first_name"]
    assert "[] there" in renderer.render("n.mjml", "Hi", ctx).text


def test_loops_and_filters_still_work(renderer: Renderer, templates: Path, context: dict) -> None:
    write(templates, "l.mjml", "<mj-text><p>{% for x in contact.interests %}{{ loop.index }}/"
                               "{{ loop | length }} {{ x | upper }};{% endfor %} "
                               "{{ contact.interests | map('title') | join(' & ') }}</p></mj-text>")
    assert "1/2 KNEE SURGERY;2/2 TRAIL RUNNING; Knee Surgery & Trail Running" in (
        renderer.render("l.mjml", "Hi", context).text)


def test_values_are_escaped_in_html(renderer: Renderer, context: dict) -> None:
    ctx = {**context, "contact": {**context["contact"], "organization": "<b>A&B</b>"}}
    email = renderer.render("appreciation.mjml", "Hi", ctx)
    assert "&lt;b&gt;A&amp;B&lt;/b&gt;" in email.html
    assert "at <b>A&B</b>." in email.text


# Subject ------------------------------------------------------------------------------------------
def test_subject_is_one_line_and_not_escaped(renderer: Renderer, context: dict) -> None:
    evil = "Dana\r\nBcc: x@evil.example"
    ctx = {**context, "contact": {**context["contact"], "first_name": evil}}
    email = renderer.render("check-in.mjml", "Q&A for {{ contact.first_name }}\n\tok", ctx)
    assert email.subject == "Q&A for Dana Bcc: x@evil.example ok"


def test_subject_problems_name_the_subject_field(renderer: Renderer, context: dict,
                                                 templates: Path) -> None:
    problems = problems_of(renderer, "check-in.mjml", context, subject="Hi {{ contact.nick }}")
    assert [(p.file, p.field) for p in problems] == [(str(templates / "check-in.mjml"),
                                                      "steps[0].subject")]
    assert problems_of(renderer, "check-in.mjml", context, subject="{{ '' }}")


# Compile cache ------------------------------------------------------------------------------------
def test_mjml_compiles_once_per_content(renderer: Renderer, templates: Path,
                                        context: dict) -> None:
    first = renderer.render("check-in.mjml", "Hi", context)
    other = {**context, "contact": {**context["contact"], "first_name": "Robin"}}
    second = renderer.render("check-in.mjml", "Hello {{ contact.first_name }}", other)
    assert renderer.compile_count == 1
    assert "Hi Dana," in first.text and "Hi Robin," in second.text

    path = templates / "check-in.mjml"
    path.write_text(path.read_text().replace("No agenda with this one.", "Just a quick note."))
    assert "Just a quick note." in renderer.render("check-in.mjml", "Hi", context).text
    assert renderer.compile_count == 2

    layout = templates / "_layout.mjml"
    layout.write_text(layout.read_text().replace("#ffffff", "#fefefe"))
    assert "#fefefe" in renderer.render("check-in.mjml", "Hi", context).html
    renderer.render("check-in.mjml", "Hi", context)
    assert renderer.compile_count == 3


def test_a_broken_template_is_not_cached(renderer: Renderer, templates: Path,
                                         context: dict) -> None:
    write(templates, "e.mjml", "<mj-text>{{ contact.nope }}</mj-text>")
    for _ in range(2):
        problems_of(renderer, "e.mjml", context)
    write(templates, "e.mjml", "<mj-text>{{ contact.role }}</mj-text>")
    assert "Orthopedic surgeon" in renderer.render("e.mjml", "Hi", context).text


# Text part ----------------------------------------------------------------------------------------
def test_html_to_text_reads_on_its_own() -> None:
    html = """<!doctype html><html><head><title>T</title><style>p { color: red; }</style></head>
    <body><!--[if mso | IE]><table><tr><td>outlook only<![endif]-->
    <div style="display:none">preview</div>
    <div><p>Hi   Dana,</p><p>Line one<br>line&nbsp;two</p>
    <p>See <a href="https://a.example/x">the piece</a>, <a href="https://b.example">https://b.example</a>
    or <a href="mailto:me@pt.example">me@pt.example</a>.</p>
    <ul><li>one</li><li>two</li></ul></div></body></html>"""
    assert html_to_text(html) == (
        "Hi Dana,\n\nLine one\nline two\n\n"
        "See the piece (https://a.example/x), https://b.example or me@pt.example.\n\n"
        "- one\n- two\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_text_of_our_emails_is_read_fast_and_exactly(renderer: Renderer, context: dict,
                                                     name: str) -> None:
    """MJML's output takes the regular-expression tokenizer, never the fallback, whole or in
    the pieces its template yields, and comes out exactly as HTMLParser reads it, for values
    that are markup-like too."""
    tricky = {**context, "contact": {**context["contact"], "first_name": "Ann & <Bo> &amp"}}
    for values in (context, tricky):
        rendered = renderer.render(name, "Hi", values, field="s")
        compiled = renderer._compiled(name, "s")
        pieces = renderer._html_env.render_pieces(compiled.html, values)
        assert len(pieces) > 3 and "".join(pieces) == rendered.html
        assert _feed_regular(_TextParser(), rendered.html)
        assert _feed_regular(_TextParser(), pieces)
        assert (text_and_links(pieces) == text_and_links(rendered.html)
                == _read_with_htmlparser(rendered.html))
        assert rendered.text == text_and_links(pieces)[0]


TOKENIZER_CASES = [
    '<P CLASS=x>Upper &amp; <A HREF="https://a.example/?a=1&amp;b=2">case</A></P>',
    '<p>a <b>b</b><br/>c<img alt="pic" src=x /><input disabled></p><div hidden="">d</div>',
    "<p>1 < 2 and 3 > 2</p>",  # a stray "<": HTMLParser reads it
    '<p style="display: none">x</p><!--[if !mso]><!--><p>y</p><!--<![endif]-->',
    "<script>if (a < b) {}</script><p>after</p><?pi?><![CDATA[z]]>",
    "<p>unclosed <a href='https://q.example'>link",
    "<p>before</p><script>if (a < b) {}</script><p>after</p>",
    '<head><style>p{color:red}</style></head><p>&#12345; &amp &ampxyz &lt;b&gt;</p>'
    '<a href="#top">top</a> <a href=" https://x.example/ ">https://x.example/</a>',
]


@pytest.mark.parametrize("html", TOKENIZER_CASES)
def test_text_tokenizer_agrees_with_htmlparser(html: str) -> None:
    assert text_and_links(html) == _read_with_htmlparser(html)


@pytest.mark.parametrize("html", TOKENIZER_CASES)
def test_text_of_pieces_is_the_text_of_the_whole(html: str) -> None:
    """Cut anywhere (inside a tag, a character reference, a <style>), the pieces read as the
    whole does: a template's values can fall anywhere."""
    whole, regular = text_and_links(html), _feed_regular(_TextParser(), html)
    for i in range(len(html) + 1):
        for j in range(i, len(html) + 1):
            pieces = [html[:i], html[i:j], "", html[j:]]
            assert text_and_links(pieces) == whole, (i, j)
            assert _feed_regular(_TextParser(), pieces) == regular, (i, j)  # no needless fallback


# Headers ------------------------------------------------------------------------------------------
def message(**overrides: object):
    rendered = RenderedEmail("Zoë's note, quickly", "<html><body><p>Hi</p></body></html>", "Hi\n")
    args = dict(from_name="Zoë Müller, DPT", from_email="zoe@pt.example", to_name="Dana Whitfield",
                to_email="dana@example.com",
                message_id=make_message_id(7, "hello", "", "s3cret", "pt.example"),
                date=datetime(2026, 12, 7, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
                unsubscribe_url="https://pt.example/u/" + "t" * 90,
                unsubscribe_mailto="mailto:zoe@pt.example?subject=unsubscribe%20" + "t" * 90)
    args.update(overrides)
    return build_message(rendered, **args)  # type: ignore[arg-type]


def test_message_id_is_deterministic_and_keyed() -> None:
    """From the touch's unique key (enrollment, step, trigger key), keyed with the secret."""
    one = make_message_id(7, "hello", "", "s3cret", "pt.example")
    assert re.fullmatch(r"<nurture\.7\.hello\.[0-9a-f]{12}@pt\.example>", one)
    assert one == make_message_id(7, "hello", "", "s3cret", "pt.example")
    assert one != make_message_id(7, "hello", "", "other", "pt.example")
    others = {make_message_id(*key, "s3cret", "pt.example") for key in (
        (8, "hello", ""), (7, "question", ""), (7, "hello", "round-2"), (7, "hello", "round-3"),
        (7, "hello", "2026-12-07"), (71, "hello", ""), (7, "hello-2", ""))}
    assert len(others) == 7 and one not in others
    assert make_message_id(7, "hello", "round-2", "s", "pt.example").startswith(
        "<nurture.7.hello.round-2.")
    for bad in ((7, "hello", "a b"), (7, "a.b", ""), (7, "hello", "x@y")):
        with pytest.raises(ValueError, match="cannot be written into a Message-ID"):
            make_message_id(*bad, "s3cret", "pt.example")
    with pytest.raises(ValueError, match="not a domain"):
        make_message_id(7, "hello", "", "s3cret", "pt example")


def test_build_message_headers_exact() -> None:
    date = datetime(2026, 12, 7, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    msg = message(date=date, reply_to="front@pt.example", in_reply_to="<nurture.6.a@pt.example>",
                  references=["<nurture.5.b@pt.example>", "<nurture.6.a@pt.example>"])
    wire = msg.as_bytes()
    assert b"\r\n" in wire and b"\n" not in wire.replace(b"\r\n", b"")
    parsed = message_from_bytes(wire, policy=policy.default)
    assert parsed["Date"] == format_datetime(date) == "Mon, 07 Dec 2026 09:30:00 -0500"
    assert parsed["Date"].datetime == date
    assert str(parsed["From"]) == '"Zoë Müller, DPT" <zoe@pt.example>'
    assert b"Zo=C3=AB" in wire  # RFC 2047, no SMTPUTF8 needed
    assert str(parsed["To"]) == "Dana Whitfield <dana@example.com>"
    assert parsed["Subject"] == "Zoë's note, quickly"
    assert parsed["Message-ID"] == make_message_id(7, "hello", "", "s3cret", "pt.example")
    assert parsed["Reply-To"] == "front@pt.example"
    assert parsed["In-Reply-To"] == "<nurture.6.a@pt.example>"
    assert parsed["References"] == "<nurture.5.b@pt.example> <nurture.6.a@pt.example>"
    assert parsed["List-Unsubscribe"] == (
        f"<https://pt.example/u/{'t' * 90}>, "
        f"<mailto:zoe@pt.example?subject=unsubscribe%20{'t' * 90}>")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Auto-Response-Suppress"] == "AutoReply"  # out-of-office notices come
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == "Hi\n"


def test_long_unsubscribe_urls_stay_verbatim_under_any_policy() -> None:
    for wire in (message().as_bytes(), message().as_bytes(policy=policy.SMTP)):
        assert b"=?utf-8?" not in wire.split(b"List-Unsubscribe:")[1].split(b"List-Unsub")[0]
        assert f"<https://pt.example/u/{'t' * 90}>".encode() in wire


def test_wire_bytes_are_what_the_email_package_would_write() -> None:
    """The transports send the bytes built by hand; parsing and re-serializing them with the
    email package must give them back unchanged, so the two never disagree."""
    for msg in (message(), message(
            reply_to="front@pt.example", in_reply_to="<nurture.6.a@pt.example>",
            references=["<nurture.5.b@pt.example>", "<nurture.6.a@pt.example>"])):
        assert msg.as_bytes() == msg.wire
        assert msg.as_bytes(policy=policy.SMTP) == msg.wire
        assert max(len(line) for line in msg.wire.split(b"\r\n")) <= 998
        assert b"\n" not in msg.wire.replace(b"\r\n", b"")


@pytest.mark.parametrize("body", [
    "Hello Dana,\nthanks for the referral — it means a lot.\n",
    "a" * 74 + " ",  # the C encoder would write this as a 77-character line
    "x" * 300 + "\n\n=\t \nCafé “quoted” 😀\x01\r\nlast line without an end",
    "",
])
def test_quoted_printable_decodes_to_the_body_and_keeps_lines_short(body: str) -> None:
    encoded = _quoted_printable(body)
    crlf = b"".join(line + b"\r\n" for line in body.encode("utf-8").splitlines())
    assert binascii.a2b_qp(encoded.encode("ascii")) == crlf
    assert all(len(line) <= 76 and not line.endswith((" ", "\t"))
               for line in encoded.split("\r\n"))
    assert encoded.endswith("\r\n") or not body


@pytest.mark.parametrize("seed", range(4))
def test_short_ascii_header_values_are_what_the_email_package_gives(seed: int) -> None:
    """_text() hands short printable ASCII back as it is: exactly what Header().encode() does,
    at every length around the cut-off, with spaces, quotes and encoded-word look-alikes."""
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    values = ["", " ", "=?utf-8?q?x?=", "a  b", " leading", "trailing ", "Zoë", "tab\there"]
    values += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 90)))
               for _ in range(3000)]
    for value in values:
        assert _text(value) == Header(value).encode(linesep="\r\n"), value


def test_quoted_printable_takes_the_fast_encoder_when_its_lines_fit() -> None:
    body = "Hello Dana,\nthanks — it means a lot.\n"
    assert _quoted_printable(body) == binascii.b2a_qp(
        body.replace("\n", "\r\n").encode("utf-8"), istext=True).decode("ascii")


def test_optional_headers_are_left_out() -> None:
    msg = message()
    for name in ("Reply-To", "In-Reply-To", "References"):
        assert name not in msg


def test_build_message_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="timezone"):
        message(date=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="https"):
        message(unsubscribe_url="http://pt.example/u/x")
    message(unsubscribe_url="http://localhost:8000/u/x", date=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        message(to_name="Dana\r\nBcc: x@evil.example", to_email="a@b.example\nBcc: c@d.example")
    safe = message(to_name="Dana\r\nBcc: x@evil.example")
    assert "Bcc" not in safe and str(safe["To"]) == '"Dana Bcc: x@evil.example" <dana@example.com>'


def test_rendered_email_goes_into_a_message(renderer: Renderer, context: dict) -> None:
    email = renderer.render("thank-you.mjml", "Thank you, {{ contact.first_name }}", context)
    msg = message(date=datetime(2026, 12, 7, 14, tzinfo=UTC))
    msg = build_message(email, from_name="Alex", from_email="alex@harborpt.example",
                        to_name="Dana", to_email="dana@example.com",
                        message_id=make_message_id(1, "thank-you", "2026-12-07", "k",
                                                   "harborpt.example"),
                        date=datetime(2026, 12, 7, 14, tzinfo=UTC),
                        unsubscribe_url=context["unsubscribe_url"], unsubscribe_mailto="")
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    text, html = (p.get_content().replace("\r\n", "\n") for p in parsed.iter_parts())
    assert text == email.text and html.rstrip() == email.html.rstrip()
    assert parsed["List-Unsubscribe"] == f"<{context['unsubscribe_url']}>"
    assert parsed["Date"] == "Mon, 07 Dec 2026 14:00:00 +0000"
