"""User-facing errors: one line naming the file, the field and what is wrong.

The CLI prints ``error: <file>: <field>: <message>`` and exits with code 2 for every
``UserError``; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A problem with the user's input (file, field, value), reported as one line."""

    exit_code = 2

    def __init__(self, message: str, file: str | os.PathLike | None = None, field: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        text = ": ".join(parts + [self.message])
        return " ".join(text.split("\n"))


def warn(message: str) -> None:
    """Print a one-line warning to stderr (kept out of stdout so summaries stay parseable)."""
    print(f"warning: {message}", file=sys.stderr)
