"""Errors nurture raises, and the one shape every input problem takes.

Bad input (a campaign file, a CSV row, a template, a webhook body) is reported as a list of
:class:`Problem` values so that a user sees *every* problem at once, each naming the file, the
line and the field, and can fix them all in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one piece of input."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class NurtureError(Exception):
    """Base class of the errors the library raises on purpose."""


class InputError(NurtureError):
    """Input failed validation; nothing was written. Carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.field))
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class CampaignError(InputError):
    """A campaign YAML file is invalid."""


class TemplateError(InputError):
    """A template is missing, invalid, or failed to render within its limits."""


class ContactsError(InputError):
    """A contacts CSV file has bad rows; none of it was imported."""


class NotFound(NurtureError):
    """A contact, campaign or touch named by the user does not exist."""
