"""Intake under a slow upstream: webhooks stay fast while GitHub and Box take seconds to answer.

Both simulators answer every request after `--upstream-delay` seconds (5 by default). The
app (`bench.serve_app`, real settings, durable SQLite inbox) is sent `/box fix` comments at a
fixed rate; each one makes the worker ask GitHub for the sender's permission, post comments
and start a box, so the worker spends the whole phase waiting on the slow upstream. What is
measured is what GitHub sees: how long the app takes to store and acknowledge a delivery.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ServerProcess,
    Target,
    app_env,
    cpu_seconds,
    load_payload,
    open_loop,
    print_table,
    run_benchmark,
    simulators,
    temp_dir,
    verdict,
)
from bench.intake import app_ready

NAME = "slow_upstream"
EVENT = "issue_comment"
TARGET_P99_MS = 50.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of the measured phase")
    parser.add_argument("--rate", type=float, default=200.0, help="deliveries per second")
    parser.add_argument(
        "--upstream-delay", type=float, default=5.0, help="seconds GitHub and Box take to answer"
    )
    return parser.parse_args(argv)


def fix_comment() -> bytes:
    """Return the recorded comment delivery with a `/box fix` command in it."""
    data = load_payload("issue_comment.created.1")
    data["comment"]["body"] = "/box fix please look at this"
    return json.dumps(data).encode()


def inbox(database: Path) -> dict[str, int]:
    """Count an app's deliveries by status (after it stopped)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall()
    return {status: count for status, count in rows}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the app's intake while both upstreams are slow; return the results document."""
    folder = temp_dir(NAME)
    database = folder / "app.sqlite3"
    async with simulators() as (github, box):
        github.latency = args.upstream_delay
        box.inject_fault("*", ".", None, times=10**9, delay=args.upstream_delay)
        server = ServerProcess.box_bot(app_env(github, box, database), folder / "app.log")
        async with server:
            await app_ready(server, github)
            cpu_before = cpu_seconds(server.pid)
            target = Target.one(server.url, EVENT, fix_comment())
            result = await open_loop(target, args.rate, args.seconds)
            result.server_cpu = round((cpu_seconds(server.pid) - cpu_before) / result.duration, 3)
            upstream_calls = {"github": len(github.calls), "box": len(box.requests)}
    p99 = result.latency["p99_ms"]
    return {
        "settings": vars(args),
        "phase": result.to_json(),
        "inbox_after": inbox(database),
        "upstream_calls_during_run": upstream_calls,
        "targets": {"p99_ms_max": TARGET_P99_MS, "p99_ms": p99, "p99_met": p99 < TARGET_P99_MS},
        "work_dir": str(folder),
    }


def report(result: dict[str, Any]) -> None:
    """Print the phase and the target."""
    phase, settings = result["phase"], result["settings"]
    latency = phase["latency"]
    rows = [
        ["upstream answer delay (s)", settings["upstream_delay"]],
        ["deliveries sent / acknowledged", f"{phase['sent']} / {phase['ok']}"],
        ["rate (req/s)", phase["target_rate"]],
        ["p50 / p99 / max (ms)", "{p50_ms} / {p99_ms} / {max_ms}".format(**latency)],
        ["app CPU (share of one core)", phase["server_cpu_share"]],
        ["inbox after the run", json.dumps(result["inbox_after"], sort_keys=True)],
        ["upstream calls made", json.dumps(result["upstream_calls_during_run"], sort_keys=True)],
    ]
    print_table("Webhook intake while GitHub and Box are slow", ["measure", "value"], rows)
    targets = result["targets"]
    print(
        f"\nwebhook p99 = {targets['p99_ms']:.1f} ms with {settings['upstream_delay']:.0f} s"
        f" upstreams (target < {TARGET_P99_MS:.0f} ms): {verdict(targets['p99_met'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
