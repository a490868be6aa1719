"""Webhook intake: how many signed deliveries per second box-bot takes in, beside a bare handler.

The deliveries are the recorded payloads (`tests/fixtures/webhooks/`) of every event the app
subscribes to, each once in a fixed shuffled order, each with a new `X-GitHub-Delivery`
(installation events are left out: an installation sends a handful in its life, and at this
rate each deletion would have the app mint a new token, measuring that instead of intake):
most of them no handler acts on (issue edits, comments without `/box`, passing CI), so intake
answers them without storing; the rest are stored durably before the 202. Three workloads go
to box-bot's app (real settings, durable SQLite inbox, the worker running against the
simulators): that mix, only the deliveries it stores, and only those it skips. A bare aiohttp
handler that only checks the HMAC and answers 202, the ceiling for this stack, takes the mix.
Each is measured saturated (closed loop; wrk when installed) and at a fixed 500 requests/s
(open loop, latency from the scheduled send time). Every phase gets a fresh server process
and database.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    APP_ID,
    WEBHOOKS,
    Kind,
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
from bot.ingress.screen import Screen
from bot.sim.github import GitHubSimulator
from handlers import build_router

NAME = "intake"
TARGET_RATIO = 0.6
TARGET_P99_MS = 20.0
# Sent to every GitHub App whatever it subscribes to, but rarely: not part of the mix.
INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})
MIX_SEED = 17
WORKLOADS = ("mix", "stored", "skipped")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured phase")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="connections when saturated")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate requests/s")
    return parser.parse_args(argv)


def subscribed_events() -> frozenset[str]:
    """The events GitHub sends this app as it works: those its handlers take, as app.yml asks."""
    return frozenset(event for event, _action in build_router().routes) - INSTALLATION_EVENTS


def recorded_kinds() -> list[Kind]:
    """Every recorded payload of a subscribed event, as a delivery to the bench installation."""
    events = subscribed_events()
    kinds = [
        Kind(path.stem, path.stem.split(".", 1)[0], json.dumps(load_payload(path.stem)).encode())
        for path in sorted(WEBHOOKS.glob("*.json"))
        if path.stem.split(".", 1)[0] in events
    ]
    random.Random(MIX_SEED).shuffle(kinds)
    return kinds


def kept(kind: Kind, screen: Screen) -> bool:
    """Whether box-bot's intake stores this delivery (the app's own decision, asked here)."""
    data = json.loads(kind.body)
    installation = data.get("installation") or {}
    return (
        screen.by_event(kind.event) is None
        and screen.by_payload(kind.event, data.get("action"), installation.get("id"), data) is None
    )


def workloads() -> dict[str, tuple[Kind, ...]]:
    """The mix, the part of it intake stores, and the part it skips."""
    screen = Screen(build_router().routes, str(APP_ID))
    mix = recorded_kinds()
    return {
        "mix": tuple(mix),
        "stored": tuple(k for k in mix if kept(k, screen)),
        "skipped": tuple(k for k in mix if not kept(k, screen)),
    }


def describe_mix(kinds: Sequence[Kind], stored: Sequence[Kind]) -> dict[str, Any]:
    """Count the mix by event, and how much of each intake stores."""
    by_event = collections.Counter(k.event for k in kinds)
    kept_by_event = collections.Counter(k.event for k in stored)
    return {
        "deliveries": len(kinds),
        "stored": len(stored),
        "stored_share": round(len(stored) / len(kinds), 3),
        "by_event": {e: {"all": n, "stored": kept_by_event[e]} for e, n in by_event.most_common()},
    }


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
    kind: str,
    workload: str,
    mode: str,
    args: argparse.Namespace,
    kinds: tuple[Kind, ...],
    sims: tuple[Any, Any],
    folder: Path,
) -> dict[str, Any]:
    """Start a fresh server of *kind*, warm it up, measure one phase and stop it."""
    github, box = sims
    database = folder / f"{kind}-{workload}-{mode}.sqlite3"
    env = app_env(github, box, database)
    flags = ("--bare",) if kind == "bare" else ()
    server = ServerProcess.box_bot(env, folder / f"{kind}-{workload}-{mode}.log", *flags)
    async with server:
        if kind == "app":
            await app_ready(server, github)
        warm, result = await warm_and_measure(server, mode, args, kinds)
    entry: dict[str, Any] = {"server": kind, "workload": workload, **result.to_json()}
    if kind == "app":
        entry["stored_deliveries"] = stored_deliveries(database)
        entry["acknowledged_deliveries"] = warm.ok + result.ok
    return entry


async def warm_and_measure(
    server: ServerProcess, mode: str, args: argparse.Namespace, kinds: tuple[Kind, ...]
) -> tuple[LoadResult, LoadResult]:
    """Send *kinds* in turn to *server* for the warm-up, then measure a phase with its CPU."""
    # A target per phase: each numbers its deliveries from 0 under its own prefix, so the
    # measured ones are never redeliveries of the warm-up's.
    warm = await _phase(Target(server.url, kinds), mode, args, args.warmup)
    cpu_before = cpu_seconds(server.pid)
    result = await _phase(Target(server.url, kinds), mode, args, args.seconds)
    result.server_cpu = round((cpu_seconds(server.pid) - cpu_before) / result.duration, 3)
    return warm, result


async def _phase(target: Target, mode: str, args: argparse.Namespace, seconds: int) -> LoadResult:
    if mode == "saturated":
        return await saturate(target, args.concurrency, seconds)
    return await open_loop(target, args.rate, seconds)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the bare handler on the mix and the app on each workload, in both modes."""
    folder = temp_dir(NAME)
    loads = workloads()
    plan = [("bare", "mix"), *(("app", w) for w in WORKLOADS)]
    phases: list[dict[str, Any]] = []
    async with simulators() as sims:
        for mode in ("saturated", "fixed_rate"):
            for kind, workload in plan:
                phases.append(
                    await measure(kind, workload, mode, args, loads[workload], sims, folder)
                )
    by = {(p["server"], p["workload"], p["mode"]): p for p in phases}
    bare = by["bare", "mix", "closed"]["requests_per_s"]
    ratios = {w: round(by["app", w, "closed"]["requests_per_s"] / bare, 3) for w in WORKLOADS}
    p99 = by["app", "mix", "open"]["latency"]["p99_ms"]
    return {
        "mix": describe_mix(loads["mix"], loads["stored"]),
        "mix_order": [k.name for k in loads["mix"]],
        "settings": vars(args),
        "phases": phases,
        "throughput_ratio_to_bare": ratios,
        "targets": {
            "throughput_ratio_min": TARGET_RATIO,
            "throughput_ratio_mix": ratios["mix"],
            "throughput_ratio_met": ratios["mix"] >= TARGET_RATIO,
            "p99_ms_at_rate_max": TARGET_P99_MS,
            "p99_ms_at_rate": p99,
            "p99_met": p99 < TARGET_P99_MS,
        },
        "work_dir": str(folder),
    }


def mix_line(mix: dict[str, Any]) -> str:
    """Say what the mix is made of, in one line."""
    parts = ", ".join(f"{e} {c['all']} ({c['stored']} stored)" for e, c in mix["by_event"].items())
    return (
        f"mix: {mix['deliveries']} recorded payloads, each once in turn, of which"
        f" {mix['stored']} ({mix['stored_share']:.0%}) are stored: {parts}"
    )


def report(result: dict[str, Any]) -> None:
    """Print the mix, the phases and the targets."""
    print(mix_line(result["mix"]))
    rows = [
        [
            p["server"],
            p["workload"],
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
    headers = ["server", "workload", "load", "tool", "req/s", "p50 ms", "p99 ms", "max ms"]
    print_table(
        "Webhook intake (recorded payloads, signed, unique delivery ids)",
        [*headers, "errors", "server cpu", "stored"],
        rows,
    )
    targets, ratios = result["targets"], result["throughput_ratio_to_bare"]
    print("\nthroughput app/bare: " + ", ".join(f"{w} {r:.2f}" for w, r in ratios.items()))
    print(
        f"mix throughput app/bare = {targets['throughput_ratio_mix']:.2f}"
        f" (target >= {TARGET_RATIO}): {verdict(targets['throughput_ratio_met'])}"
    )
    print(
        f"mix p99 at {result['settings']['rate']:.0f} req/s = {targets['p99_ms_at_rate']:.1f} ms"
        f" (target < {TARGET_P99_MS:.0f} ms): {verdict(targets['p99_met'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
