"""User-facing errors (one line naming the file, the field and what is wrong) and messages.

The CLI prints ``error: <file>: <field>: <message>`` and exits with code 2 for every
``UserError``; anything else is a bug and keeps its traceback. Fields are neutral names
(``size``, ``segment_frames``, config keys); each CLI command maps them to its flags.

Library code never prints: it reports through the ``vidsim2real`` logger (``info`` for
progress notes, ``warn`` for warnings), whose default handler writes ``warning: ...`` lines to
stderr and notes to stdout; applications can reconfigure or silence it with ``logging``.
"""
from __future__ import annotations

import logging
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


NOTE = 25     # between INFO and WARNING: status lines that belong on stderr (e.g. "compiling ...")
logging.addLevelName(NOTE, "NOTE")


class _ConsoleHandler(logging.Handler):
    """Progress notes to the current stdout; status notes and warnings to the current stderr
    (streams looked up at each message, so redirected or captured streams get them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                print(f"warning: {record.getMessage()}", file=sys.stderr)
            elif record.levelno >= NOTE:
                print(record.getMessage(), file=sys.stderr, flush=True)
            else:
                print(record.getMessage(), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


log = logging.getLogger("vidsim2real")
if not log.handlers:
    log.addHandler(_ConsoleHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


def warn(message: str) -> None:
    """A one-line warning (stderr by default; kept out of stdout so summaries stay parseable)."""
    log.warning(message)


def note(message: str) -> None:
    """A one-line status note on stderr (kept out of stdout, which carries results)."""
    log.log(NOTE, message)


def info(message: str) -> None:
    """A one-line progress note (stdout by default)."""
    log.info(message)
