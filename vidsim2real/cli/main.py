"""``vidsim2real`` entry point: sub-commands, one-line errors (exit 2) for bad input."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import UserError

COMMANDS = ["scene_cmd", "render_cmd", "surrogate_cmd", "train_cmd", "translate_cmd", "metrics_cmd", "export_cmd"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (its default code)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib
    parser = _Parser(prog="vidsim2real", description="Render simulated surgical scenes and translate them "
                                                      "into realistic, temporally consistent video.")
    parser.add_argument("--version", action="version", version=f"vidsim2real {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        exc.field = getattr(args, "flags", {}).get(exc.field, exc.field)     # library field -> this command's flag
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
