"""``vidsim2real`` entry point: sub-commands, one-line errors (exit 2) for bad input."""
from __future__ import annotations

import argparse
import errno
import sys

from .. import __version__
from ..errors import UserError

COMMANDS = ["scene_cmd", "render_cmd", "surrogate_cmd", "train_cmd", "translate_cmd", "metrics_cmd", "export_cmd"]

# OS errors that mean "this output cannot be written here" (the user's to fix, not a bug)
WRITE_ERRORS = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only file system",
                errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.ENOTDIR: "a path component is not a directory", errno.EISDIR: "is a directory",
                errno.EEXIST: "exists", errno.ENAMETOOLONG: "file name too long"}


class _DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default (those that have a meaningful one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings \
                and "%(default)" not in text and not action.required:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (its default code) and
    shows every option's default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib
    parser = _Parser(prog="vidsim2real", description="Render simulated surgical scenes and translate them "
                                                      "into realistic, temporally consistent video.")
    parser.add_argument("--version", action="version", version=f"vidsim2real {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the job's tensor work (default: torch's, one per core); with two jobs "
                             "side by side give each its share: both at every core's count oversubscribe the "
                             "cores and each runs several times slower")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def _value_options(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(option strings that take one value, all option strings) over every sub-command."""
    takes, known = set(), set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for a in p._actions:
            known.update(a.option_strings)
            if a.option_strings and a.nargs is None and not isinstance(a, (argparse._StoreTrueAction,
                                                                           argparse._StoreFalseAction)):
                takes.update(a.option_strings)
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
    return takes, known


def join_dash_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--frames -5:`` -> ``--frames=-5:``: argparse reads a value starting with '-' as an
    option; a value-taking option followed by something that is no known option gets it."""
    takes, known = _value_options(parser)
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in takes and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] not in known \
                and argv[i + 1].split("=")[0] not in known:
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(join_dash_values(argv, parser))
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: {args.threads} is not a thread count (1 or more)")
        import torch
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        exc.field = getattr(args, "flags", {}).get(exc.field, exc.field)     # library field -> this command's flag
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS and exc.filename is None:
            raise
        where = exc.filename or "output"
        what = f"cannot write: {WRITE_ERRORS[exc.errno]}" if exc.errno in WRITE_ERRORS else \
            f"cannot access: {exc.strerror or type(exc).__name__}"
        print(f"error: {where}: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
