"""Watching at scale: many concurrent runs followed by one app process.

The app runs in its own process (`bench.serve_app`, real settings, BOX_POLL_INTERVAL=5);
the GitHub and Box simulators, the webhook sender and the measurements run in this one.
Each run has its own installation and repository by default (so GitHub's per-installation
write pacing does not decide the result; `--runs-per-installation` changes that) and an agent
that runs one command every few seconds for longer than the benchmark lasts. Once every run
is working, a window measures the app's CPU share and memory per run, Box calls per run per
minute, and the lag from an event appearing in Box to its line first appearing in a PATCH
of the tracking comment on GitHub.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import (
    APP_ID,
    APP_SLUG,
    BOX_KEY,
    WEBHOOK_PATH,
    ServerProcess,
    app_env,
    cpu_seconds,
    fixture_repo,
    latency_summary,
    load_payload,
    post_delivery,
    print_table,
    rss_kb,
    run_benchmark,
    temp_dir,
    verdict,
    wait_for,
)
from bot.sim.box import BoxSimulator, BoxTimings
from bot.sim.box_agent import RunCommand, Say
from bot.sim.github import Call, GitHubSimulator

NAME = "watch"
TICK = re.compile(r"tick-(\d+)-(bx_[0-9a-z]+)")
FIRST_INSTALLATION = 700_000
FIRST_REPO_ID = 5_000_000
TARGET_KB_PER_RUN = 50.0
TARGET_LAG_INTERVALS = 2.0
SEND_CONCURRENCY = 16
SETTLE_SECONDS = 5.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs")
    parser.add_argument("--runs-per-installation", type=int, default=1)
    parser.add_argument("--poll-interval", type=int, default=5, help="BOX_POLL_INTERVAL (s)")
    parser.add_argument("--agent-step", type=float, default=3.0, help="seconds between events")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--ramp-timeout", type=float, default=75.0, help="max seconds to start")
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames traced in the app")
    return parser.parse_args(argv)


@dataclass
class LagTracker:
    """Emission times of agent commands, and when each first shows up in a comment edit."""

    emitted: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: dict[tuple[str, int], float] = field(default_factory=dict)
    events: int = 0
    patches: int = 0

    async def on_agent_event(self, box_id: str, event: dict[str, Any]) -> None:
        """Box simulator hook: note when each `tick-N` command appears in Box."""
        self.events += 1
        for tool in (event.get("data") or {}).get("tools") or []:
            command = ((tool.get("use") or {}).get("input") or {}).get("command", "")
            if match := TICK.search(command):
                self.emitted.setdefault((match.group(2), int(match.group(1))), time.time())

    def on_github_call(self, call: Call) -> None:
        """GitHub simulator observer: note the first comment edit that shows each command."""
        if call.method != "PATCH" or "/issues/comments/" not in call.path:
            return
        self.patches += 1
        now = time.time()
        for match in TICK.finditer((call.json or {}).get("body", "")):
            self.seen.setdefault((match.group(2), int(match.group(1))), now)

    def lags(self, start: float, end: float) -> tuple[list[float], int]:
        """Return the lags of commands emitted in [start, end) and how many never showed."""
        found, missing = [], 0
        for key, emitted in self.emitted.items():
            if start <= emitted < end:
                if key in self.seen:
                    found.append(self.seen[key] - emitted)
                else:
                    missing += 1
        return found, missing


class ObservedCalls(list[Call]):
    """The GitHub simulator's call list, telling an observer about each call as it is added."""

    def __init__(self, tracker: LagTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def append(self, call: Call) -> None:
        super().append(call)
        self.tracker.on_github_call(call)


@dataclass(frozen=True)
class Thread:
    """Where one run happens."""

    installation_id: int
    repo: str
    repo_id: int
    number: int


def threads(runs: int, per_installation: int) -> list[Thread]:
    """One issue per run, `per_installation` runs per installation (one repository each)."""
    found = []
    for index in range(runs):
        installation = FIRST_INSTALLATION + index // per_installation
        repo = f"bench-org-{installation}/service"
        found.append(
            Thread(installation, repo, FIRST_REPO_ID + installation, index % per_installation + 1)
        )
    return found


def agent_script(steps: int) -> list[Any]:
    """An agent that keeps working: one distinct command per step."""
    commands = [RunCommand(f"echo tick-{n}-{{box_id}}", output="ok") for n in range(1, steps)]
    return [Say("Working through the issue."), *commands]


def seed(github: GitHubSimulator, box: BoxSimulator, runs: list[Thread], sender: str) -> None:
    """Create the installations, repositories, permissions and issues."""
    for thread in runs:
        if thread.number == 1:
            github.add_installation(thread.installation_id, thread.repo.split("/")[0])
            github.add_repo(
                thread.repo, installation_id=thread.installation_id, repo_id=thread.repo_id
            )
            github.set_permission(thread.repo, sender, "admin")
            box.add_repo(thread.repo, github_id=thread.repo_id)
        github.add_issue(thread.repo, thread.number, title=f"Bench issue {thread.number}")


def labeled(thread: Thread) -> dict[str, Any]:
    """An `issues.labeled` delivery (from the recorded payload) for one run's issue."""
    data = load_payload("issues.labeled.1", thread.installation_id)
    owner, name = thread.repo.split("/")
    data["repository"] = {
        **data["repository"],
        "id": thread.repo_id,
        "name": name,
        "full_name": thread.repo,
        "private": False,
        "owner": {**data["repository"]["owner"], "login": owner},
    }
    data["issue"]["number"] = thread.number
    data["label"] = {**data["label"], "name": "box:fix"}
    return data


async def start_runs(url: str, runs: list[Thread]) -> None:
    """Label every issue, a few deliveries at a time."""
    slots = asyncio.Semaphore(SEND_CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def send(index: int, thread: Thread) -> None:
            async with slots:
                status = await post_delivery(
                    session, url + WEBHOOK_PATH, "issues", labeled(thread), f"label-{index}"
                )
                if status != 202:
                    raise RuntimeError(f"label delivery {index} answered {status}")

        await asyncio.gather(*(send(i, t) for i, t in enumerate(runs)))


def working(box: BoxSimulator) -> int:
    """Count boxes whose agent is running a prompt now."""
    return sum(1 for b in box.boxes.values() if b.current is not None)


async def app_stats(server: ServerProcess, collect: bool = False) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/_bench/stats", params={"gc": "1"} if collect else {}) as r,
    ):
        data: dict[str, Any] = await r.json()
        return data


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = temp_dir(NAME)
    tracker = LagTracker()
    plan = threads(args.runs, args.runs_per_installation)
    total_seconds = args.ramp_timeout + SETTLE_SECONDS + args.window + 4 * args.poll_interval
    timings = BoxTimings(provisioning=2.0, cloning=1.0, agent_step=args.agent_step)
    github = GitHubSimulator(app_id=APP_ID, app_slug=APP_SLUG)
    box = BoxSimulator(
        BOX_KEY,
        seed=3,
        timings=timings,
        max_active_boxes=args.runs * 2,
        creation_rate_per_minute=args.runs * 10,
        on_agent_event=tracker.on_agent_event,
    )
    github.calls = ObservedCalls(tracker)
    box.scripts["watch"] = agent_script(math.ceil(total_seconds / args.agent_step) + 5)
    box.default_script = "watch"
    await github.start()
    await box.start()
    seed(github, box, plan, fixture_repo().sender)
    env = app_env(github, box, folder / "watch.sqlite3", BOX_POLL_INTERVAL=str(args.poll_interval))
    flags = ["--tracemalloc", str(args.tracemalloc)] if args.tracemalloc else []
    server = ServerProcess.box_bot(env, folder / "app.log", *flags)
    try:
        async with server:
            await wait_for(lambda: github.calls_to("GET", r"^/app$"), 30)
            await asyncio.sleep(1.0)
            base = await app_stats(server, collect=True)
            ramp_started = time.monotonic()
            await start_runs(server.url, plan)
            try:
                await wait_for(lambda: working(box) >= args.runs, args.ramp_timeout, every=0.5)
            except TimeoutError:
                print(f"only {working(box)} of {args.runs} runs working after the ramp timeout")
            ramp = time.monotonic() - ramp_started
            await asyncio.sleep(SETTLE_SECONDS)
            result = await measure_window(args, server, github, box, tracker)
            result["base_rss_kb"] = base["rss_kb"]
            result["base_traced_bytes"] = base.get("traced_bytes")
            result["ramp_seconds"] = round(ramp, 1)
    finally:
        await box.close()
        await github.close()
    return summarize(args, result)


async def measure_window(
    args: argparse.Namespace,
    server: ServerProcess,
    github: GitHubSimulator,
    box: BoxSimulator,
    tracker: LagTracker,
) -> dict[str, Any]:
    """Measure one window of steady watching; wait a little after it for late lines."""
    active_start = working(box)
    calls = (len(box.requests), len(github.calls), tracker.patches, tracker.events)
    cpu = (cpu_seconds(server.pid), time.process_time())
    wall = time.time()
    await asyncio.sleep(args.window)
    elapsed = time.time() - wall
    cpu_app = cpu_seconds(server.pid) - cpu[0]
    cpu_sims = time.process_time() - cpu[1]
    active_end = working(box)
    box_calls = len(box.requests) - calls[0]
    github_calls = len(github.calls) - calls[1]
    patches, events = tracker.patches - calls[2], tracker.events - calls[3]
    stats = await app_stats(server, collect=True)
    rss_now = rss_kb(server.pid)
    await asyncio.sleep(TARGET_LAG_INTERVALS * args.poll_interval)  # let late lines arrive
    lags, missing = tracker.lags(wall, wall + elapsed)
    return {
        "window_seconds": round(elapsed, 1),
        "active_runs_start": active_start,
        "active_runs_end": active_end,
        "app_cpu_share": round(cpu_app / elapsed, 3),
        "simulators_cpu_share": round(cpu_sims / elapsed, 3),
        "rss_kb": rss_now,
        "app_stats": stats,
        "box_calls": box_calls,
        "github_calls": github_calls,
        "comment_edits": patches,
        "agent_events": events,
        "lag": latency_summary(lags),
        "lines_never_shown": missing,
        "lines_measured": len(lags) + missing,
    }


def summarize(args: argparse.Namespace, window: dict[str, Any]) -> dict[str, Any]:
    """Turn the window's counts into per-run rates and check the targets."""
    runs = max(1, window["active_runs_start"])
    minutes = window["window_seconds"] / 60
    kb_per_run = (window["rss_kb"] - window["base_rss_kb"]) / runs
    traced = window["app_stats"].get("traced_bytes")
    traced_kb = None
    if traced is not None and window["base_traced_bytes"] is not None:
        traced_kb = round((traced - window["base_traced_bytes"]) / 1024 / runs, 1)
    lag_p99_s = window["lag"]["p99_ms"] / 1000
    lag_ok = (
        window["lines_never_shown"] == 0 and lag_p99_s < TARGET_LAG_INTERVALS * args.poll_interval
    )
    return {
        "settings": vars(args),
        **window,
        "per_run": {
            "rss_kb": round(kb_per_run, 1),
            "traced_kb": traced_kb,
            "box_calls_per_minute": round(window["box_calls"] / runs / minutes, 2),
            "github_calls_per_minute": round(window["github_calls"] / runs / minutes, 2),
            "comment_edits_per_minute": round(window["comment_edits"] / runs / minutes, 2),
            "agent_events_per_minute": round(window["agent_events"] / runs / minutes, 2),
        },
        "targets": {
            "kb_per_run_max": TARGET_KB_PER_RUN,
            "kb_per_run_met": kb_per_run < TARGET_KB_PER_RUN,
            "lag_p99_max_s": TARGET_LAG_INTERVALS * args.poll_interval,
            "lag_p99_s": round(lag_p99_s, 2),
            "lag_met": lag_ok,
        },
    }


def report(result: dict[str, Any]) -> None:
    per_run, lag, targets = result["per_run"], result["lag"], result["targets"]
    rows = [
        [
            "runs working (window start / end)",
            f"{result['active_runs_start']} / {result['active_runs_end']}",
        ],
        ["ramp to all working (s)", result["ramp_seconds"]],
        ["window (s)", result["window_seconds"]],
        ["app CPU (share of one core)", result["app_cpu_share"]],
        ["simulators + driver CPU (share of one core)", result["simulators_cpu_share"]],
        [
            "app RSS before runs / with runs (MiB)",
            f"{result['base_rss_kb'] / 1024:.1f} / {result['rss_kb'] / 1024:.1f}",
        ],
        ["RSS per run (KiB)", per_run["rss_kb"]],
        [
            "traced Python memory per run (KiB)",
            per_run["traced_kb"] if per_run["traced_kb"] is not None else "-",
        ],
        ["Box calls per run per minute", per_run["box_calls_per_minute"]],
        ["GitHub calls per run per minute", per_run["github_calls_per_minute"]],
        ["comment edits per run per minute", per_run["comment_edits_per_minute"]],
        ["agent events per run per minute", per_run["agent_events_per_minute"]],
        [
            "lag Box event → GitHub line p50 / p99 / max (s)",
            f"{lag['p50_ms'] / 1000:.2f} / {lag['p99_ms'] / 1000:.2f} / {lag['max_ms'] / 1000:.2f}",
        ],
        [
            "lines measured / never shown",
            f"{result['lines_measured']} / {result['lines_never_shown']}",
        ],
    ]
    settings = result["settings"]
    print_table(
        f"Watching {settings['runs']} runs (poll interval {settings['poll_interval']} s)",
        ["measure", "value"],
        rows,
    )
    print(
        f"\nmemory per run = {per_run['rss_kb']:.1f} KiB (target < {TARGET_KB_PER_RUN:.0f} KB):"
        f" {verdict(targets['kb_per_run_met'])}"
        f"\nlag p99 = {targets['lag_p99_s']:.2f} s (target < {targets['lag_p99_max_s']:.0f} s,"
        f" 2 polling intervals, every line shown): {verdict(targets['lag_met'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
