"""The `box-bot` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bot.logs import setup_logging
from bot.ops import demo, dev, doctor, register, send
from bot.ops import serve as server
from bot.settings import LOG_LEVELS, SettingsError, load_settings, settings_help
from bot.store.connect import open_store
from bot.store.records import StoreUnavailable

MAX_PORT = 65535
NOT_A_PORT = "--port {port} is not a TCP port: use 1 to 65535, or 0 for a free one"


def serve(_args: argparse.Namespace) -> int:
    """Run the app with the operator's settings until SIGINT or SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
        return 2
    setup_logging(settings.log_level, settings.log_format)
    return asyncio.run(server.serve(settings, fail))


def fail(text: str) -> None:
    """Print one line saying why the command cannot go on."""
    print(f"box-bot: {text}", file=sys.stderr, flush=True)


def run_migrate(_args: argparse.Namespace) -> int:
    """Bring the database's schema up to date, then exit (to migrate before a deploy)."""
    try:
        settings = load_settings()
        version = asyncio.run(_migrate(settings.database_url, settings.database_pool_size))
    except (SettingsError, StoreUnavailable) as exc:
        fail(str(exc))
        return 1
    say(f"box-bot: the database schema is at version {version}")
    return 0


async def _migrate(database_url: str, pool_size: int) -> int:
    store = await open_store(database_url, pool_size=pool_size)  # opening migrates
    try:
        return await store.migrate()
    finally:
        await store.close()


def say(text: str) -> None:
    """Print one message for the operator at once (output may be piped)."""
    print(text, flush=True)


def run_dev(args: argparse.Namespace) -> int:
    """Run the app against the simulators: interactively, or the whole demo story."""
    if not port_ok(args.port, "box-bot dev"):
        return 2
    setup_logging(args.log_level)
    if args.demo:
        return asyncio.run(demo.run_demo(say, port=args.port or 0, within=args.timeout))
    port = dev.DEFAULT_PORT if args.port is None else args.port
    return asyncio.run(dev.run_dev(say, port=port))


def port_ok(port: int | None, command: str) -> bool:
    """Say in one line, and return False, when a `--port` is not a TCP port (0 picks one)."""
    if port is None or 0 <= port <= MAX_PORT:
        return True
    print(f"{command}: {NOT_A_PORT.format(port=port)}", file=sys.stderr, flush=True)
    return False


def run_send(args: argparse.Namespace) -> int:
    """Sign and post one webhook payload file."""
    try:
        result = asyncio.run(
            send.send_file(
                args.event, args.payload, url=args.url, secret=args.secret, delivery=args.delivery
            )
        )
    except send.SendError as exc:
        print(f"box-bot send: {exc}", file=sys.stderr)
        return 1
    say(result.describe())
    return 0 if result.ok else 1


def run_register(args: argparse.Namespace) -> int:
    """Create the GitHub App with the manifest flow and save its credentials to `.env`."""
    if not port_ok(args.port, "box-bot register"):
        return 2
    try:
        return asyncio.run(
            register.run_register(
                say,
                webhook_url=args.webhook_url,
                port=args.port,
                org=args.org,
                name=args.name,
                manifest=args.manifest,
                force=args.force,
                wait_seconds=args.timeout,
            )
        )
    except KeyboardInterrupt:
        say(register.CANCELLED)
        return 130


def run_doctor(_args: argparse.Namespace) -> int:
    """Check the settings and every service the app needs."""
    return asyncio.run(doctor.run_doctor(say))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(prog="box-bot", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version('box-bot')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_reading_settings(
        commands, "serve", "run the GitHub App (webhook server and worker)"
    ).set_defaults(func=serve)
    commands.add_parser(
        "migrate", help="bring the database schema up to date, then exit"
    ).set_defaults(func=run_migrate)
    _add_dev(commands)
    _add_send(commands)
    _add_register(commands)
    _add_reading_settings(
        commands, "doctor", "check the settings, the key, GitHub, Box and the database"
    ).set_defaults(func=run_doctor)
    return parser


def _add_reading_settings(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    """Add a sub-command whose `--help` lists the settings it reads."""
    return commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_dev(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev", help="run the app against simulated GitHub and Box, no credentials needed"
    )
    parser.add_argument(
        "--demo", action="store_true", help="tell the whole story by itself, then exit"
    )
    parser.add_argument(
        "--port", type=int, help="the app's port on 127.0.0.1 (default 3000; 0 picks a free one)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=demo.DEMO_TIMEOUT,
        help="with --demo: seconds before giving up (default %(default)g)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="the app's log lines on stderr (default %(default)s)",
    )
    parser.set_defaults(func=run_dev)


def _add_send(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("send", help="sign and post a webhook payload like GitHub does")
    parser.add_argument("event", help="the X-GitHub-Event name, e.g. issues or pull_request")
    parser.add_argument("payload", type=Path, help="a JSON payload file, sent byte for byte")
    parser.add_argument("--url", default=send.DEFAULT_URL, help="default %(default)s")
    parser.add_argument("--secret", help="the webhook secret (default: WEBHOOK_SECRET)")
    parser.add_argument("--delivery", help="the X-GitHub-Delivery id (default: a new uuid)")
    parser.set_defaults(func=run_send)


def _add_register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "register", help="create the GitHub App from app.yml and save its credentials to .env"
    )
    parser.add_argument(
        "--webhook-url",
        help="where GitHub delivers webhooks, e.g. https://smee.io/… (default: WEBHOOK_PROXY_URL)",
    )
    parser.add_argument(
        "--port", type=int, default=register.DEFAULT_PORT, help="local page port (%(default)s)"
    )
    parser.add_argument("--org", help="register the app for this organization")
    parser.add_argument("--name", help="the app's name on GitHub (default: app.yml's name)")
    parser.add_argument(
        "--manifest",
        type=Path,
        help="the app.yml to use (default: ./app.yml, else the one installed with box-bot)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=register.DEFAULT_TIMEOUT,
        help="seconds to wait for GitHub to send the browser back (default %(default)g)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace APP_ID, PRIVATE_KEY, WEBHOOK_SECRET in .env"
    )
    parser.set_defaults(func=run_register)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
