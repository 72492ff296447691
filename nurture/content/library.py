"""The content library: articles and books worth sharing, and the choice of one for a contact.

The library lives beside the campaigns, in ``campaigns/library.yaml`` and/or any YAML files in a
``campaigns/library/`` folder, all read as one. Each file has two lists::

    articles:
      - title: Exercise is medicine          # required
        url: https://example.org/piece       # required, http(s)
        source: British Journal of Sports Medicine
        summary: One line on why it is worth their time.
        tags: [exercise, prevention]         # matched against the contact's interests
        audiences: [physician, trainer]      # matched against the contact's role
    books:
      - title: Born to Run
        author: Christopher McDougall
        why: One line on why it is worth reading.
        url: https://example.org/book
        id: born-to-run                      # optional; default: from the title

An item's ``id`` is what nurture remembers having sent (never twice to one contact), so it
must stay put: the default is made from the title, and giving one explicitly lets the title be
edited later without the item counting as new. Mistakes are reported like campaign mistakes:
all at once, with file, line and field.

:func:`pick` is the choice itself, a pure function: among the items of the step's kind that this
contact has not been sent, the one most related to the contact's fields named in ``match``
(interests against ``tags``, role against ``audiences``), compared in that order, ties going to
the item listed first. The order of the file is the owner's own preference.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ..errors import InputError, Problem
from .yamlfile import line_of, parse, pydantic_problems

__all__ = ["Item", "Library", "LibraryError", "library_files", "library_for", "load_library",
           "pick", "related"]

KINDS = {"articles": "article", "books": "book"}
MAX_LINE = 300  # a summary or why is one line on a card


class LibraryError(InputError):
    """The content library is invalid."""


@dataclass(frozen=True)
class Item:
    """One article or book. ``byline`` and ``why`` read the same for both kinds, for layouts."""

    kind: str  # article, book
    id: str
    title: str
    url: str
    tags: tuple[str, ...]
    audiences: tuple[str, ...]
    source: str = ""  # article: where it was published
    summary: str = ""  # article: why it is worth reading
    author: str = ""  # book
    why: str = ""  # book: why it is worth reading
    file: str = ""
    line: int = 0

    @property
    def byline(self) -> str:
        return self.source if self.kind == "article" else self.author

    def view(self) -> dict[str, Any]:
        """What a template sees as ``item``: plain values only."""
        common = {"kind": self.kind, "id": self.id, "title": self.title, "url": self.url,
                  "byline": self.byline, "tags": list(self.tags),
                  "audiences": list(self.audiences)}
        if self.kind == "article":
            return {**common, "source": self.source, "summary": self.summary,
                    "why": self.summary}
        return {**common, "author": self.author, "why": self.why}


@dataclass(frozen=True)
class Library:
    items: tuple[Item, ...] = ()
    files: tuple[str, ...] = ()

    def of_kind(self, kind: str) -> list[Item]:
        return [item for item in self.items if item.kind == kind]

    def get(self, item_id: str) -> Item | None:
        return next((item for item in self.items if item.id == item_id), None)


# Reading ------------------------------------------------------------------------------------
def _one_line(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if "\n" in value:
        raise ValueError("must be one line (it is shown as one line on a card)")
    if len(value) > MAX_LINE:
        raise ValueError(f"is longer than {MAX_LINE} characters")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value := value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
        raise ValueError(f'"{value}" is not a web address; write it out, e.g. https://...')
    return value


def _id(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", value):
        raise ValueError(f'"{value}" is not an id; use lowercase letters, digits and hyphens')
    return value


Line = Annotated[str, AfterValidator(_one_line)]
Url = Annotated[str, AfterValidator(_url)]
Id = Annotated[str, AfterValidator(_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _RawArticle(_Strict):
    id: Id | None = None
    title: Line
    url: Url
    source: Line
    summary: Line
    tags: list[Line] = []
    audiences: list[Line] = []


class _RawBook(_Strict):
    id: Id | None = None
    title: Line
    author: Line
    why: Line
    url: Url
    tags: list[Line] = []
    audiences: list[Line] = []


class _RawLibrary(_Strict):
    articles: list[_RawArticle] = []
    books: list[_RawBook] = []


_MODELS: dict[str, type[BaseModel]] = {"": _RawLibrary, "articles": _RawArticle,
                                       "books": _RawBook}


def _default_id(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.casefold()).strip("-")[:100].rstrip("-")


def library_files(campaigns_dir: Path) -> list[Path]:
    """``library.yaml`` (or ``.yml``) and the YAML files of a ``library/`` folder, in order."""
    found = [campaigns_dir / name for name in ("library.yaml", "library.yml")]
    folder = campaigns_dir / "library"
    if folder.is_dir():
        found += sorted(p for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml")
                        and not p.name.startswith(("_", ".")))
    return [p for p in found if p.is_file()]


def _read_file(path: Path, problems: list[Problem]) -> list[Item]:
    file = str(path)
    try:
        data, lines, found = parse(path.read_bytes(), file, LibraryError)
    except OSError as exc:
        problems.append(Problem(file, None, "", f"cannot be read: {exc.strerror}"))
        return []
    except LibraryError as exc:
        problems.extend(exc.problems)
        return []
    raw = None
    if data is None:
        return []  # an empty library file is an empty library
    try:
        raw = _RawLibrary.model_validate(data)
    except ValidationError as error:
        found += pydantic_problems(error, _MODELS)
    problems.extend(Problem(file, line_of(lines, field), field, message)
                    for field, message in found)
    if raw is None or found:
        return []
    items = []
    for key, entries in (("articles", raw.articles), ("books", raw.books)):
        for i, entry in enumerate(entries):
            values = entry.model_dump()
            values["id"] = values["id"] or _default_id(values["title"])
            if not values["id"]:
                problems.append(Problem(file, line_of(lines, f"{key}[{i}]"), f"{key}[{i}].id",
                                        "give this item an id (its title makes none)"))
                continue
            values["tags"], values["audiences"] = tuple(values["tags"]), tuple(values["audiences"])
            items.append(Item(kind=KINDS[key], file=file,
                              line=line_of(lines, f"{key}[{i}]") or 1, **values))
    return items


def load_library(campaigns_dir: Path) -> Library:
    """Read and check every library file; LibraryError lists every problem. No file: empty."""
    files = library_files(campaigns_dir)
    problems: list[Problem] = []
    items = [item for path in files for item in _read_file(path, problems)]
    first: dict[str, Item] = {}
    for item in items:
        if item.id in first:
            other = first[item.id]
            where = f"line {other.line}" if other.file == item.file else (
                f"{other.file}:{other.line}")
            problems.append(Problem(item.file, item.line, "id", f'"{item.id}" is already the '
                                    f"id of {where}; give one of them an id of its own"))
        else:
            first[item.id] = item
    if problems:
        raise LibraryError(problems)
    return Library(tuple(items), tuple(str(p) for p in files))


_cache: dict[Path, tuple[tuple[Any, ...], Library]] = {}
_lock = threading.Lock()


def library_for(campaigns_dir: Path) -> Library:
    """:func:`load_library`, read again only when a library file changed (workers run long)."""
    key = campaigns_dir.resolve()
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                      for p in library_files(campaigns_dir))
    with _lock:
        hit = _cache.get(key)
    if hit and hit[0] == signature:
        return hit[1]
    library = load_library(campaigns_dir)
    with _lock:
        _cache[key] = (signature, library)
    return library


# Choosing -----------------------------------------------------------------------------------
def _words(text: str) -> frozenset[str]:
    words = re.findall(r"[a-z0-9]+", text.casefold())
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                     for w in words)


def related(a: str, b: str) -> bool:
    """True when one phrase's words contain the other's: "running" and "trail running",
    "surgeon" and "Orthopedic surgeon", "knees" and "knee"."""
    wa, wb = _words(a), _words(b)
    return bool(wa and wb) and (wa <= wb or wb <= wa)


def _score(item: Item, contact: Mapping[str, Any], match: Sequence[str]) -> tuple[int, ...]:
    scores = []
    for field in match:
        if field == "interests":
            interests = [str(i) for i in contact.get("interests") or []]
            scores.append(sum(any(related(i, t) for t in item.tags) for i in interests))
        elif field == "role":
            role = str(contact.get("role") or "")
            scores.append(int(bool(role) and any(related(role, a) for a in item.audiences)))
    return tuple(scores)


def pick(items: Iterable[Item], contact: Mapping[str, Any], match: Sequence[str],
         exclude: Iterable[str] = ()) -> Item | None:
    """The item to send ``contact`` (a template's view of them), or None when none is left.

    ``items`` are the library's items of the step's kind; ``exclude`` the ids already sent.
    """
    sent = set(exclude)
    left = [item for item in items if item.id not in sent]
    if not left:
        return None
    ranked = sorted(enumerate(left), key=lambda pair: (_score(pair[1], contact, match),
                                                       -pair[0]), reverse=True)
    return ranked[0][1]

