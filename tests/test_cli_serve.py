"""`box-bot serve` as an operator starts it: where it listens, why it cannot, how it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from bot.settings import Settings

SERVE = [sys.executable, "-m", "bot.cli", "serve"]


def serve_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of `box-bot serve` for *settings*, with nothing else set."""
    names = {"APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "WEBHOOK_SECRET", "BOX_API_KEY"}
    return {
        **{name: value for name, value in os.environ.items() if name not in names},
        "APP_ID": settings.app_id,
        "PRIVATE_KEY": settings.private_key,
        "WEBHOOK_SECRET": settings.webhook_secret,
        "GITHUB_API_URL": settings.github_api_url,
        "BOX_API_BASE": settings.box_api_base,
        "BOX_API_KEY": settings.box_api_key,
        "DATABASE_URL": settings.database_url,
        **overrides,
    }


def database_file(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def refused(settings: Settings, tmp_path: Path, **overrides: str) -> tuple[int, str, str]:
    """Run `box-bot serve` that must exit at once; return its code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *SERVE,
        env=serve_env(settings, **overrides),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_a_port_in_use_is_one_line_naming_port(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code, stdout, stderr = await refused(settings, tmp_path, HOST="127.0.0.1", PORT=str(port))
    assert code == 1
    assert stdout == ""
    assert stderr.splitlines() == [
        f"box-bot: PORT {port} is already in use on 127.0.0.1: stop what listens there,"
        " or set PORT to a free port"
    ]
    assert not database_file(settings).exists()  # nothing started before the port was bound


async def test_a_host_that_does_not_resolve_is_one_line_naming_host(
    settings: Settings, tmp_path: Path
) -> None:
    code, stdout, stderr = await refused(settings, tmp_path, HOST="no-such-host.invalid")
    assert code == 1
    assert stdout == ""
    [line] = stderr.splitlines()
    assert line.startswith("box-bot: HOST 'no-such-host.invalid' does not resolve (")
    assert line.endswith("set HOST to an address of this machine, or 0.0.0.0 for all of them")
    assert not database_file(settings).exists()


async def test_it_logs_where_it_listens_and_the_sigterm_that_stops_it(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *SERVE,
        env=serve_env(settings, HOST="127.0.0.1", PORT=str(port), LOG_FORMAT="text"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        listening = await read_until(process.stderr, "listening on http://")
        assert listening.endswith(f" INFO bot.ops.serve: listening on http://127.0.0.1:{port}\n")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as health,
        ):
            assert health.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
    _stdout, rest = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    lines = rest.decode().splitlines()
    assert lines[-2].endswith(
        " INFO bot.ops.serve: SIGTERM received: stopping within 25 s"
        " (in-flight work finishes or is handed back)"
    )
    assert lines[-1].endswith(" INFO bot.ops.serve: stopped")


async def read_until(stream: asyncio.StreamReader, text: str) -> str:
    """Read lines until one contains *text*; return that line."""
    seen = ""
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"output ended before {text!r}:\n{seen}"
            if text in line:
                return line
            seen += line


async def test_a_database_that_cannot_open_is_one_line(settings: Settings, tmp_path: Path) -> None:
    notes = tmp_path / "notes.sqlite3"
    notes.write_text("these are notes, not a database\n")
    code, stdout, stderr = await refused(
        settings,
        tmp_path,
        HOST="127.0.0.1",
        PORT=str(free_port()),
        DATABASE_URL=f"sqlite:///{notes}",
    )
    assert code == 1
    assert stdout == ""
    assert stderr.splitlines() == [
        "box-bot: DATABASE_URL cannot be opened (file is not a database):"
        " `box-bot doctor` says what to change"
    ]
