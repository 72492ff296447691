"""A Jinja2 sandbox whose every render is bounded in loops, time and size.

:class:`BoundedSandbox` is :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, plus these bounds, all enforced in-process and cheaply (a
signal-based timeout would only work in the main thread, and workers render in any thread):

- **loops**: ``range()`` yields at most ``max_iterations`` items, and all ``{% for %}`` loops of
  one render together run at most ``max_iterations`` times (every loop's iterable is compiled
  through :meth:`BoundedSandbox.guard_iter`);
- **time**: a deadline, checked at every loop iteration, call, filter and arithmetic operator;
- **size**: every value a template makes (``*``, ``+``, ``%``, ``**``, ``~``, filters, calls,
  ``{% set %}`` blocks, macros, printed values) is checked against ``max_size``, counting nested
  lists in full, and operations that multiply sizes are refused *before* they run, including
  widths (``center(10**9)``, ``'%0999999999d'``). The output is streamed and cut at the limit.

What is *not* bounded: one built-in operation on values near the size limit may be slow (the
deadline is checked between operations, not inside them). The limits protect against mistakes
in templates written by the practice; they are not a substitute for process isolation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["BoundedSandbox", "LimitExceeded"]

_MAX_INT_BITS = 4096
_WIDTH_NAMES = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent",
                          "wordwrap", "truncate", "batch", "slice", "format", "format_map"})


class LimitExceeded(Exception):
    """A template went past one of its bounds."""


@dataclass
class _Budget:
    iterations: int
    limit: int
    deadline: float
    seconds: float


_BUDGET: ContextVar[_Budget | None] = ContextVar("nurture_render_budget", default=None)


def _tick(iterations: int = 0) -> None:
    budget = _BUDGET.get()
    if budget is None:  # compile-time constant folding: sizes are still checked
        return
    budget.iterations -= iterations
    if budget.iterations < 0:
        raise LimitExceeded(f"loops ran more than {budget.limit} times in one render")
    if time.monotonic() > budget.deadline:
        raise LimitExceeded(f"rendering took longer than {budget.seconds:g} s")


def _size(value: Any, depth: int = 0) -> int:
    """How many characters a value stands for, counting nested containers in full, so that a
    list of a thousand copies of one long string is as big as their concatenation."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, range):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        if depth > 4:
            return len(items)
        return len(items) + sum(_size(item, depth + 1) for item in items)
    return 1


class _GuardedCodeGenerator(CodeGenerator):
    """Compiles every ``{% for %}`` iterable through ``environment.guard_iter`` and checks the
    operands of every ``~`` before they are joined."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        env = self.environment
        guard = nodes.Call(nodes.EnvironmentAttribute("guard_iter", environment=env), [node.iter],
                           [], None, None, lineno=node.lineno, environment=env)
        super().visit_For(nodes.For(node.target, guard, node.body, node.else_, node.test,
                                    node.recursive, lineno=node.lineno, environment=env), frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.guard_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's ``default``, except that an empty field is missing too: a contact's optional
    fields are empty strings, and ``{{ contact.first_name | default("there") }}`` must say
    "there" for a contact without a first name."""
    if isinstance(value, Undefined) or value is None or value == "" or (boolean and not value):
        return default_value
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox every nurture template runs in; see the module docstring for the bounds."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "%", "**"})  # also stops compile-time folding

    def __init__(self, *, autoescape: bool, max_size: int, max_iterations: int,
                 max_seconds: float) -> None:
        super().__init__(autoescape=autoescape, undefined=StrictUndefined, finalize=self._finalize)
        self.max_size, self.max_iterations, self.max_seconds = max_size, max_iterations, max_seconds
        self.globals.pop("lipsum", None)
        self.globals["range"] = self._range
        self.filters["default"] = self.filters["d"] = _default
        self.filters = {name: self._guard(name, f) for name, f in self.filters.items()}
        self.concat = self._concat  # type: ignore[method-assign]  # {% set %} blocks, macros and call blocks join through this

    def render_bounded(self, template: Template, context: Mapping[str, Any]) -> str:
        """Render ``template`` within the bounds, streaming so a huge output stops early.
        ``max_size`` counts UTF-8 bytes here."""
        return "".join(self.render_pieces(template, context))

    def render_pieces(self, template: Template, context: Mapping[str, Any]) -> list[str]:
        """:meth:`render_bounded`, in the pieces the template yields: its fixed text and the
        values between (what :func:`nurture.outbound.text.text_and_links` caches by)."""
        budget = _Budget(self.max_iterations, self.max_iterations,
                         time.monotonic() + self.max_seconds, self.max_seconds)
        token = _BUDGET.set(budget)
        try:
            parts, size = [], 0
            for chunk in template.generate(dict(context)):
                size += len(chunk.encode("utf-8", "surrogatepass"))
                if size > self.max_size:
                    raise LimitExceeded(f"the output is larger than {self.max_size} bytes")
                parts.append(chunk)
            return parts
        finally:
            _BUDGET.reset(token)

    def bound(self, value: Any) -> Any:
        if _size(value) > self.max_size:
            raise LimitExceeded(f"a value grew past the limit of {self.max_size} characters")
        return value

    def guard_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        self.bound(list(parts))
        return parts

    def guard_iter(self, iterable: Any) -> Iterator[Any]:
        for item in iterable:
            _tick(1)
            yield item

    def _finalize(self, value: Any) -> Any:
        return "" if value is None else self.bound(value)

    def _concat(self, parts: Any) -> str:
        return str(self.bound("".join(parts)))

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > self.max_iterations:
            raise LimitExceeded(f"range() of {len(numbers)} items; the limit is "
                                f"{self.max_iterations}")
        return numbers

    def _check(self, name: str, values: Sequence[Any]) -> None:
        """Refuse, before it runs, an operation whose result could pass the size limit."""
        _tick()
        if not values:
            return
        first, *rest = values
        if name in _WIDTH_NAMES:
            widths = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            if name.startswith("format") and isinstance(first, str):
                widths += [int(w) for w in re.findall(r"\d{1,30}", first)]
            if any(abs(w) > self.max_size for w in widths):
                raise LimitExceeded(f"{name}() with a width over {self.max_size}")
        if (1 + _size(first)) * max([1, *map(_size, rest)]) > self.max_size:
            raise LimitExceeded(f"{name}() would make a value past the limit of "
                                f"{self.max_size} characters")

    def _guard(self, name: str, func: Any) -> Any:
        @wraps(func)  # keeps jinja's pass_context/pass_eval_context marks
        def guarded(*args: Any, **kwargs: Any) -> Any:
            args = tuple(list(a) if isinstance(a, Iterator) and not isinstance(a, LoopContext)
                         else a for a in args)  # measure map()/select() output before joining
            values = [a for a in (*args, *kwargs.values())
                      if not isinstance(a, (Context, EvalContext, ImmutableSandboxedEnvironment))]
            if name == "sum" and not isinstance(kwargs.get("start", 0), (int, float)):
                raise LimitExceeded("sum() adds numbers only")  # list sums are quadratic
            self._check(name, values)
            return self.bound(func(*args, **kwargs))
        return guarded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        receiver = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        values = [*([receiver] if isinstance(receiver, str) else []), *args, *kwargs.values()]
        __self._check(getattr(__obj, "__name__", "call"), values)
        return __self.bound(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        ints = [isinstance(x, int) for x in (left, right)]
        too_big = f"a value grew past the limit of {self.max_size} characters"
        if operator == "**" and all(ints) and right > 0:
            if left.bit_length() * right > _MAX_INT_BITS:
                raise LimitExceeded("a number too large to be useful in an email")
        elif operator == "*" and all(ints):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise LimitExceeded("a number too large to be useful in an email")
        elif operator == "*" and any(ints):
            count, seq = (left, right) if ints[0] else (right, left)
            if _size(seq) * count > self.max_size:
                raise LimitExceeded(too_big)
        elif operator == "%" and isinstance(left, str):
            self._check("format", [left, *(right if isinstance(right, tuple) else [right])])
        elif operator == "+" and _size(left) + _size(right) > self.max_size:
            raise LimitExceeded(too_big)
        return self.bound(super().call_binop(context, operator, left, right))
