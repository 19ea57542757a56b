"""The ``artent`` console script. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from artent_fast import __version__
from artent_fast.extras import BrokenImportError, MissingExtraError

# Subcommand modules, in help order. A module that fails to import (missing optional
# extra) is skipped with a note, so the rest of the CLI keeps working.
SUBCOMMANDS = ("profile", "demo", "sweep", "plot", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artent",
        description="Artificial-entanglement profiles of model weights, weight updates and attention matrices.",
        epilog="Run 'artent COMMAND --help' for a command's options. Definitions: docs/definitions.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"artent_fast.cli.{name}")
        except ModuleNotFoundError as exc:
            sub.add_parser(name, help=f"(unavailable: {exc})")
            continue
        module.register(sub)
    return parser


class ClosedPipeSafe:
    """stdout that goes quiet when its reader has gone (``artent profile | head -2``): a closed pipe is not
    the command's failure, so the work (writing the output folder) goes on and nothing more is printed."""

    def __init__(self, stream):
        self.stream, self.reader_gone = stream, False

    def _gone(self) -> None:
        self.reader_gone = True
        try:  # the interpreter's last flush of the real stdout then writes nowhere instead of failing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, AttributeError, ValueError):  # not a real file (a test's capture)
            pass

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._gone()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    sys.stdout = ClosedPipeSafe(stdout)
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    finally:
        sys.stdout = stdout


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, MissingExtraError, BrokenImportError) as exc:
        print(f"artent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"artent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
