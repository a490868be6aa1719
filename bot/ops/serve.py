"""`box-bot serve`: the app on HOST:PORT until SIGTERM or SIGINT.

The socket is bound before the app starts, so an address that cannot be used is one line
naming HOST or PORT, and nothing else happens: no database is opened, GitHub is not called.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from bot.ingress.server import REQUEST_SHUTDOWN_SECONDS, SHUTDOWN_GRACE_SECONDS, create_app
from bot.settings import Settings
from bot.store.records import StoreInUse, StoreUnavailable

log = logging.getLogger(__name__)

LISTENING = "listening on %s"
STOPPING = "%s received: stopping within %g s (in-flight work finishes or is handed back)"
STOPPED = "stopped"
NO_SUCH_HOST = (
    "HOST {host!r} does not resolve ({reason}): set HOST to an address of this machine,"
    " or 0.0.0.0 for all of them"
)
PORT_IN_USE = (
    "PORT {port} is already in use on {host}: stop what listens there, or set PORT to a free port"
)
NOT_LOCAL = (
    "HOST {host!r} is not an address of this machine: set HOST to one of its addresses,"
    " or 0.0.0.0 for all of them"
)
PORT_DENIED = "PORT {port} needs privileges on {host}: set PORT to 1024 or above"
CANNOT_LISTEN = "cannot listen on {host}:{port} ({reason}): check HOST and PORT"
NO_DATABASE = "DATABASE_URL cannot be opened ({reason}): `box-bot doctor` says what to change"


class ListenError(Exception):
    """HOST:PORT cannot be listened on; the message names the setting to change."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on the first address *host* resolves to, or raise `ListenError`."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(NO_SUCH_HOST.format(host=host, reason=exc.strerror)) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ListenError(_listen_problem(host, port, exc)) from None
    return sock


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return PORT_IN_USE.format(host=host, port=port)
    if exc.errno == errno.EADDRNOTAVAIL:
        return NOT_LOCAL.format(host=host)
    if exc.errno == errno.EACCES:
        return PORT_DENIED.format(host=host, port=port)
    return CANNOT_LISTEN.format(host=host, port=port, reason=exc.strerror or exc)


def url_of(sock: socket.socket) -> str:
    """Return the `http://host:port` a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


async def serve(settings: Settings, fail: Callable[[str], None]) -> int:
    """Listen, run the app until SIGTERM or SIGINT, stop it gracefully; return the exit code."""
    try:
        sock = listen(settings.host, settings.port)
    except ListenError as exc:
        fail(str(exc))
        return 1
    runner = web.AppRunner(
        create_app(settings), access_log=None, shutdown_timeout=REQUEST_SHUTDOWN_SECONDS
    )
    try:
        try:
            await runner.setup()
        except StoreInUse as exc:  # already says what to do instead
            fail(str(exc))
            return 1
        except StoreUnavailable as exc:
            fail(NO_DATABASE.format(reason=exc))
            return 1
        await web.SockSite(runner, sock).start()
        log.info(LISTENING, url_of(sock))
        received = await until_signal()
        log.info(STOPPING, received.name, REQUEST_SHUTDOWN_SECONDS + SHUTDOWN_GRACE_SECONDS)
    finally:
        await runner.cleanup()
        sock.close()
    log.info(STOPPED)
    return 0


async def until_signal() -> signal.Signals:
    """Wait for SIGTERM or SIGINT; return which one came."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    handled = (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        loop.add_signal_handler(signum, _settle, received, signum)
    try:
        return await received
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _settle(received: asyncio.Future[signal.Signals], signum: signal.Signals) -> None:
    if not received.done():  # a second signal changes nothing: the stop is under way
        received.set_result(signum)
