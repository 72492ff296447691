"""YAML written by people, read the way a compiler reads source: every problem with its line.

Shared by the campaign files (:mod:`nurture.content.campaigns`) and the content library
(:mod:`nurture.content.library`). PyYAML composes the document into nodes, which remember their
lines;
:func:`parse` returns the data together with the line of every key path (``steps[1].wait``), so a
later check can point at the exact line. :func:`pydantic_problems` turns pydantic's errors into
``(field path, message)`` pairs worded for someone editing YAML, not for a Python programmer.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import InputError, Problem

__all__ = ["ancestors", "dotted", "hint", "line_of", "parse", "pydantic_problems"]

#: pydantic's wording, in the terms of someone writing YAML.
MESSAGES = {
    "missing": "is required",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "list_type": "must be a list, e.g. [a, b]",
    "model_type": "must be a mapping of fields (key: value)",
    "too_short": "must list at least one item",
}


def parse(content: bytes, file: str, error: type[InputError] = InputError
          ) -> tuple[Any, dict[str, int], list[tuple[str, str]]]:
    """The file's data, the line of each key path, and (path, message) for keys given twice.

    A file that is not YAML raises ``error``: nothing more can be said about it.
    """
    def fail(line: int, message: str) -> InputError:
        return error([Problem(file, line, "", message)])

    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(content[: exc.start].count(b"\n") + 1, "is not UTF-8 text") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        lines, duplicates = key_lines(node)  # before constructing, which rewrites merge keys
        return loader.construct_document(node) if node else None, lines, duplicates
    except yaml.MarkedYAMLError as exc:
        message = exc.problem or "cannot be read"
        if exc.context:
            where = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message = f"{exc.context}{where}: {message}"
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise fail(line, f"invalid YAML: {message}") from None
    except yaml.reader.ReaderError as exc:
        message = f"invalid YAML: character #x{exc.character:04x}: {exc.reason}"
        raise fail(text[: exc.position].count("\n") + 1, message) from None
    finally:
        if loader:
            loader.dispose()


def key_lines(root: yaml.Node | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Map each key path ("steps[1].wait") to the 1-based line of its key or list item."""
    lines = {"": root.start_mark.line + 1 if root else 1}
    duplicates: list[tuple[str, str]] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root else []
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias of a node already walked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
                stack.append((item, f"{path}[{i}]"))
        elif isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                sub = f"{path}.{key.value}" if path else key.value
                if key.value in keys:  # YAML keeps the last one, so point there
                    message = f'"{key.value}" is given twice (also on line {lines[sub]}); keep one'
                    duplicates.append((sub, message))
                keys.add(key.value)
                lines[sub] = key.start_mark.line + 1
                stack.append((value, sub))
    return lines, duplicates


def ancestors(path: str) -> Iterator[str]:
    """ "steps[1].wait", then "steps[1]", "steps" and "" (the whole file)."""
    yield path
    while path:
        path = re.sub(r"(\.[^.\[\]]*|\[\d+\]|^[^.\[\]]*)$", "", path)
        yield path


def line_of(lines: Mapping[str, int], field: str) -> int | None:
    """The line of ``field`` or, when it is missing, of its nearest parent."""
    return next((lines[a] for a in ancestors(field) if a in lines), None)


def pydantic_problems(error: ValidationError, models: Mapping[str, type[BaseModel]]
                      ) -> list[tuple[str, str]]:
    """(field path, message) for each pydantic error.

    ``models`` maps the path of a mapping (list indexes left out, "" for the root) to its model,
    so an unknown key can be answered with the fields that model takes.
    """
    found = []
    for err in error.errors(include_url=False):
        *parent, key = loc = err["loc"]
        if err["type"] in ("extra_forbidden", "invalid_key"):  # invalid_key: `1: x`
            model = models.get(".".join(p for p in parent if isinstance(p, str)))
            known = list(model.model_fields) if model else []
            found.append((dotted(parent if err["type"] == "invalid_key" else loc),
                          f'"{key}" is not a field here{hint(str(key), known)}'))
        elif err["type"] == "literal_error":
            allowed = err["ctx"]["expected"].replace("'", "")
            found.append((dotted(loc), f'"{err["input"]}" is not one of {allowed}'))
        else:
            message = MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
            found.append((dotted(loc), message))
    return found


def dotted(loc: Any) -> str:
    """("steps", 1, "wait") → "steps[1].wait", the way the YAML author sees the field."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def hint(word: str, choices: list[str]) -> str:
    """A "did you mean" for a typo, else the list of what is allowed."""
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f'; did you mean "{close[0]}"?'
    return f"; expected one of: {', '.join(choices)}" if choices else ""
