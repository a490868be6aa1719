"""Serve box-bot (or a bare HMAC-checking handler) in its own process for the benchmarks.

Settings come from the environment exactly as for `box-bot serve`; the flags only turn the
`Options` knobs. Prints `READY <port>` on stdout once listening and stops on SIGTERM.
`GET /_bench/stats` answers the process's CPU time, memory and run counts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import sys
import tracemalloc
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bench.common import READY_PREFIX, rss_kb
from bot.github.tracker import MIN_EDIT_INTERVAL
from bot.ingress.server import COMPONENTS, WEBHOOK_PATH, Options, create_app
from bot.ingress.webhook import MAX_BODY_BYTES, SIGNATURE_HEADER, verify_signature
from bot.logs import setup_logging
from bot.runs.timing import Timing
from bot.settings import Settings, load_settings

SHUTDOWN_SECONDS = 30.0
TOP_ALLOCATIONS = 15


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_app", description=__doc__)
    parser.add_argument("--bare", action="store_true", help="only check the HMAC, answer 202")
    parser.add_argument("--comment-interval", type=float, default=MIN_EDIT_INTERVAL)
    parser.add_argument("--write-interval", type=float, default=1.0)
    parser.add_argument("--ready-poll", type=float, default=None, help="Timing.ready_poll")
    parser.add_argument(
        "--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace allocations"
    )
    return parser.parse_args(argv)


def bare_app(secret: str) -> web.Application:
    """Return the smallest correct intake: verify the signature, answer 202, keep nothing."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(secret, body, request.headers.get(SIGNATURE_HEADER)):
            return web.Response(status=401)
        return web.Response(status=202)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(WEBHOOK_PATH, receive)
    return app


def box_bot_app(settings: Settings, args: argparse.Namespace) -> web.Application:
    """Return `create_app` with the benchmark's options and a stats route."""
    timing = None
    if args.ready_poll is not None:
        timing = Timing(poll_interval=settings.box_poll_interval, ready_poll=args.ready_poll)
    options = Options(
        comment_interval=args.comment_interval,
        github_write_interval=args.write_interval,
        timing=timing,
    )
    app = create_app(settings, options)
    app.router.add_get("/_bench/stats", stats)
    return app


async def stats(request: web.Request) -> web.Response:
    """Answer CPU seconds, RSS, task and run counts (and traced memory when tracing)."""
    if request.query.get("gc"):
        gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    components = request.app[COMPONENTS]
    data: dict[str, Any] = {
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "rss_kb": rss_kb(os.getpid()),
        "max_rss_kb": usage.ru_maxrss,
        "tasks": len(asyncio.all_tasks()),
        "driving": components.runs.driving,
        "comment_edits": components.runs.tracker.edits,
        "token_requests": components.auth.token_requests,
    }
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        group = "traceback" if tracemalloc.get_traceback_limit() > 1 else "lineno"
        top = tracemalloc.take_snapshot().statistics(group)[:TOP_ALLOCATIONS]
        data["traced_bytes"], data["traced_peak_bytes"] = current, peak
        data["top_allocations"] = [
            {"size": s.size, "count": s.count, "where": s.traceback.format(most_recent_first=True)}
            for s in top
        ]
    return web.json_response(data)


async def serve(app: web.Application, host: str, port: int) -> None:
    """Listen until SIGTERM or SIGINT, then shut down as `web.run_app` would."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{READY_PREFIX}{runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    app = bare_app(settings.webhook_secret) if args.bare else box_bot_app(settings, args)
    asyncio.run(serve(app, settings.host, settings.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
