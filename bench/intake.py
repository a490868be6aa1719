"""Webhook intake: how many signed deliveries per second box-bot stores and acknowledges.

Two servers, each in its own process, take the same recorded `issue_comment.created`
delivery with a new `X-GitHub-Delivery` every time: box-bot's app (real settings, durable
SQLite inbox, the worker running against the simulators) and a bare aiohttp handler that only
checks the HMAC and answers 202, the ceiling for this stack. Each is measured saturated
(closed loop; wrk when installed) and at a fixed 500 requests/s (open loop, latency from the
scheduled send time). Every phase gets a fresh server process and database.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    LoadResult,
    ServerProcess,
    Target,
    app_env,
    cpu_seconds,
    failed_requests,
    load_label,
    load_payload,
    open_loop,
    print_table,
    run_benchmark,
    saturate,
    simulators,
    temp_dir,
    verdict,
    wait_for,
)
from bot.sim.github import GitHubSimulator

NAME = "intake"
EVENT = "issue_comment"
PAYLOAD = "issue_comment.created.1"
TARGET_RATIO = 0.6
TARGET_P99_MS = 20.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured phase")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="connections when saturated")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate requests/s")
    return parser.parse_args(argv)


def delivery_body() -> bytes:
    """Return the recorded comment delivery, read now from the test fixtures."""
    return json.dumps(load_payload(PAYLOAD)).encode()


async def app_ready(server: ServerProcess, github: GitHubSimulator) -> None:
    """Wait until the app answers /healthz and its worker has learnt who it is (`GET /app`)."""

    async def healthy() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "/healthz") as response,
        ):
            return response.status == 200

    await wait_for(healthy, 20)
    await wait_for(lambda: github.calls_to("GET", r"^/app$"), 20)


def stored_deliveries(database: Path) -> int:
    """Count the deliveries in an app's inbox (after it stopped)."""
    with sqlite3.connect(database) as conn:
        count: int = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
        return count


async def measure(
    kind: str, mode: str, args: argparse.Namespace, github: Any, box: Any, folder: Path
) -> dict[str, Any]:
    """Start a fresh server of *kind*, warm it up, measure one phase and stop it."""
    database = folder / f"{kind}-{mode}.sqlite3"
    env = app_env(github, box, database)
    flags = ("--bare",) if kind == "bare" else ()
    server = ServerProcess.box_bot(env, folder / f"{kind}-{mode}.log", *flags)
    async with server:
        if kind == "app":
            await app_ready(server, github)
        warm, result = await warm_and_measure(server, mode, args)
    entry: dict[str, Any] = {"server": kind, **result.to_json()}
    if kind == "app":
        stored = stored_deliveries(database)
        entry["stored_deliveries"] = stored
        entry["acknowledged_deliveries"] = warm.ok + result.ok
    return entry


async def warm_and_measure(
    server: ServerProcess, mode: str, args: argparse.Namespace
) -> tuple[LoadResult, LoadResult]:
    """Send the delivery to *server* for the warm-up, then measure a phase with its CPU share."""
    target = Target(server.url, EVENT, delivery_body())
    warm = await _phase(target, mode, args, args.warmup)
    cpu_before = cpu_seconds(server.pid)
    result = await _phase(target, mode, args, args.seconds)
    result.server_cpu = round((cpu_seconds(server.pid) - cpu_before) / result.duration, 3)
    return warm, result


async def _phase(target: Target, mode: str, args: argparse.Namespace, seconds: int) -> LoadResult:
    if mode == "saturated":
        return await saturate(target, args.concurrency, seconds)
    return await open_loop(target, args.rate, seconds)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both servers in both modes; return the results document."""
    folder = temp_dir(NAME)
    phases: list[dict[str, Any]] = []
    async with simulators() as (github, box):
        for mode in ("saturated", "fixed_rate"):
            for kind in ("bare", "app"):
                phases.append(await measure(kind, mode, args, github, box, folder))
    by = {(p["server"], p["mode"] == "closed"): p for p in phases}
    ratio = by["app", True]["requests_per_s"] / by["bare", True]["requests_per_s"]
    p99 = by["app", False]["latency"]["p99_ms"]
    return {
        "payload": PAYLOAD,
        "settings": vars(args),
        "phases": phases,
        "throughput_ratio": round(ratio, 3),
        "targets": {
            "throughput_ratio_min": TARGET_RATIO,
            "throughput_ratio_met": ratio >= TARGET_RATIO,
            "p99_ms_at_rate_max": TARGET_P99_MS,
            "p99_ms_at_rate": p99,
            "p99_met": p99 < TARGET_P99_MS,
        },
        "work_dir": str(folder),
    }


def report(result: dict[str, Any]) -> None:
    """Print the phases and the targets."""
    rows = [
        [
            p["server"],
            load_label(p),
            p["tool"],
            p["requests_per_s"],
            p["latency"]["p50_ms"],
            p["latency"]["p99_ms"],
            p["latency"]["max_ms"],
            failed_requests(p),
            p["server_cpu_share"],
            p.get("stored_deliveries", "-"),
        ]
        for p in result["phases"]
    ]
    headers = ["server", "load", "tool", "req/s", "p50 ms", "p99 ms", "max ms", "errors"]
    print_table(
        "Webhook intake (issue_comment.created, signed, unique delivery ids)",
        [*headers, "server cpu", "stored"],
        rows,
    )
    targets = result["targets"]
    print(
        f"\nthroughput app/bare = {result['throughput_ratio']:.2f}"
        f" (target >= {TARGET_RATIO}): {verdict(targets['throughput_ratio_met'])}"
    )
    print(
        f"app p99 at {result['settings']['rate']:.0f} req/s = {targets['p99_ms_at_rate']:.1f} ms"
        f" (target < {TARGET_P99_MS:.0f} ms): {verdict(targets['p99_met'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
