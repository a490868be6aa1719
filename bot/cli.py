"""The `box-bot` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

from bot.logs import setup_logging
from bot.server import create_app
from bot.settings import SettingsError, load_settings


def serve(_args: argparse.Namespace) -> int:
    """Run the app with the operator's settings until SIGINT or SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"box-bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30.0,
        print=None,
        access_log=None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(prog="box-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the GitHub App (webhook server and worker)"
    ).set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
