"""What every ``artent`` subcommand shares: one help formatter and one way to add the subcommand."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (except where there is none to show: None, False, an empty list, or a
    help text that states it) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        nothing = action.default is None or action.default is False or action.default == []
        if nothing or action.default is argparse.SUPPRESS or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """The subcommand ``name``'s parser (one line in ``artent --help``, a description, an optional epilog),
    with the shared formatter."""
    return sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=HelpFormatter)
