"""GitHub's budget under load: many concurrent runs in one installation, then a secondary limit.

100 runs (`--runs`) in one installation, each ten minutes of agent work with its pull request
opened early. Time is scaled down by `--scale` (the app's and GitHub's clocks run that much
faster, and every interval is divided by it), so every count is as in production. Measured:
content-creating requests in every minute and hour against the installation's budget, GitHub
calls per run, how long progress messages take to reach the tracking comment, and whether every
final comment and check is right; then the same through a five-minute secondary-limit window:
nothing may be sent into the pause, and every final state must land after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import (
    APP_ID,
    APP_SLUG,
    BOX_KEY,
    INSTALLATION_ID,
    fixture_repo,
    latency_summary,
    load_payload,
    post_delivery,
    print_table,
    run_benchmark,
    temp_dir,
    verdict,
    wait_for,
)
from bot.github.budget import CONTENT_PATH
from bot.ingress.server import COMPONENTS, Options, create_app
from bot.ingress.worker import WorkerPolicy
from bot.models import RunState
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait, success_script
from bot.sim.box_state import BoxTimings
from bot.sim.github import Call, GitHubSimulator

NAME = "github_budget"
WORK_SECONDS = 600.0  # simulated agent work per run
STEPS = 20  # progress messages over that work
PAUSE_SECONDS = 300  # the secondary-limit window of the second phase
PER_MINUTE, PER_HOUR = 60, 400
FIRST_ISSUE, FIRST_PR = 1000, 5000
STEP = re.compile(r"Step (\d+) done\.")


class ScaledClock:
    """Epoch seconds that run *scale* times faster than the wall clock, from now on."""

    def __init__(self, scale: float) -> None:
        self.scale, self.start, self.origin = scale, time.time(), time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.origin) * self.scale

    def seconds(self, monotonic: float) -> float:
        """Simulated seconds since the start of a `time.monotonic()` reading."""
        return (monotonic - self.origin) * self.scale


@dataclass
class Phase:
    """What one phase saw."""

    name: str
    runs: int
    pause: tuple[float, float] | None = None  # the secondary-limit window, monotonic
    step_seen: dict[tuple[str, int], float] = field(default_factory=dict)  # (box, step) -> time


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs")
    parser.add_argument("--scale", type=float, default=30.0, help="production s per bench s")
    return parser.parse_args(argv)


def options(scale: float, clock: ScaledClock) -> Options:
    timing = Timing(
        ready_timeout=120.0,
        ready_poll=3.0 / scale,
        poll_interval=5.0 / scale,
        max_poll_interval=30.0 / scale,
    )
    return Options(
        clock=clock,
        worker=WorkerPolicy(idle_poll=0.05, base_delay=2.0 / scale, max_delay=60.0 / scale),
        github_write_interval=1.0 / scale,
        comment_interval=3.0 / scale,
        github_secondary_wait=60.0 / scale,
        timing=timing,
    )


def script(scale: float) -> list[Any]:
    wait = WORK_SECONDS / scale / STEPS
    steps = [step for k in range(STEPS) for step in (Wait(wait), Say(f"Step {k} done."))]
    return [Say("Reading the code."), *steps, *success_script()]


@contextlib.asynccontextmanager
async def world(
    args: argparse.Namespace, phase: Phase
) -> AsyncIterator[tuple[GitHubSimulator, BoxSimulator, web.Application, str, ScaledClock]]:
    """The simulators and the app, on loopback ports, sharing one scaled clock."""
    clock = ScaledClock(args.scale)
    github = GitHubSimulator(app_id=APP_ID, app_slug=APP_SLUG, clock=clock)
    timings = BoxTimings(provisioning=10.0 / args.scale, cloning=5.0 / args.scale)

    async def on_event(box_id: str, event: dict[str, Any]) -> None:
        found = STEP.search(json.dumps(event))
        if found:
            phase.step_seen.setdefault((box_id, int(found.group(1))), time.monotonic())

    box = BoxSimulator(
        BOX_KEY,
        seed=7,
        timings=timings,
        max_active_boxes=args.runs * 2,
        creation_rate_per_minute=100_000,
        on_agent_event=on_event,
    )
    await github.start()
    await box.start()
    repo = fixture_repo()
    github.add_installation(INSTALLATION_ID, repo.full_name.split("/")[0])
    github.add_repo(repo.full_name, installation_id=INSTALLATION_ID, repo_id=repo.repo_id)
    github.set_permission(repo.full_name, repo.sender, "admin")
    box.add_repo(repo.full_name, github_id=repo.repo_id)
    box.scripts["ten-minutes"] = script(args.scale)
    box.default_script = "ten-minutes"
    folder = temp_dir(NAME)
    settings = Settings(
        app_id=str(APP_ID),
        private_key=github.private_key_pem,
        webhook_secret="bench-webhook-secret-0123456789abcdef",
        github_api_url=github.base_url,
        box_api_key=BOX_KEY,
        box_api_base=box.base_url,
        database_url=f"sqlite:///{folder / 'bench.sqlite3'}",
        max_run_minutes=120,
        github_content_per_minute=PER_MINUTE,
        github_content_per_hour=PER_HOUR,
    )
    app = create_app(settings, options(args.scale, clock))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield (
            github,
            box,
            app,
            f"http://127.0.0.1:{runner.addresses[0][1]}/api/github/webhooks",
            clock,
        )
    finally:
        await runner.cleanup()
        await box.close()
        await github.close()


def labeled(number: int) -> dict[str, Any]:
    data = load_payload("issues.labeled.1")
    data["issue"]["number"] = number
    data["label"] = {**data["label"], "name": "box:fix"}
    data["sender"] = {**data["sender"], "login": fixture_repo().sender}
    return data


def pr_opened(number: int, pr: int, run_id: str, sha: str) -> dict[str, Any]:
    repo = fixture_repo()
    data = load_payload("pull_request.opened.1")
    pull = data["pull_request"]
    pull.update(number=pr, body=f"Fixes #{number}\n\nBox-Run: {run_id}")
    pull["head"] = {**pull["head"], "ref": f"box/issue-{number}", "sha": sha}
    pull["head"]["repo"] = {**pull["head"]["repo"], "id": repo.repo_id, "full_name": repo.full_name}
    data["number"] = pr
    data["sender"] = {**data["sender"], "login": "box-agent[bot]", "type": "Bot"}
    return data


async def one_phase(args: argparse.Namespace, name: str, pause: bool) -> dict[str, Any]:
    phase = Phase(name, args.runs)
    async with world(args, phase) as (github, _, app, url, clock), aiohttp.ClientSession() as s:
        repo = fixture_repo()
        store = app[COMPONENTS].store
        for i in range(args.runs):
            number, pr = FIRST_ISSUE + i, FIRST_PR + i
            github.add_issue(repo.full_name, number, title=f"Bug {i}", body="It breaks.")
            github.add_pull(
                repo.full_name,
                pr,
                title=f"Fix {i}",
                head=f"box/issue-{number}",
                head_sha=f"{i:040x}",
                user="box-agent[bot]",
                user_type="Bot",
            )
        started = time.monotonic()
        await asyncio.gather(
            *(
                post_delivery(s, url, "issues", labeled(FIRST_ISSUE + i), str(uuid.uuid4()))
                for i in range(args.runs)
            )
        )
        opened: set[int] = set()

        async def all_working_and_linked() -> bool:
            for i in range(args.runs):
                if i in opened:
                    continue
                run = await store.latest_run(repo.repo_id, FIRST_ISSUE + i)
                if run is not None and run.state is RunState.WORKING:
                    opened.add(i)
                    payload = pr_opened(FIRST_ISSUE + i, FIRST_PR + i, run.id, f"{i:040x}")
                    await post_delivery(s, url, "pull_request", payload, str(uuid.uuid4()))
            return bool(len(opened) == args.runs)

        await wait_for(all_working_and_linked, within=WORK_SECONDS / args.scale * 3)
        if pause:
            github.inject_fault(
                "PATCH",
                r".",
                status=403,
                headers={"retry-after": str(PAUSE_SECONDS)},
                body={"message": "You have exceeded a secondary rate limit."},
            )
            refused = await wait_for(lambda: [c for c in github.calls if c.status == 403], 60)
            at = refused[0].answered_at
            phase.pause = (at, at + PAUSE_SECONDS / args.scale)

        async def all_final() -> bool:
            return all([await landed(github, store, repo, i) for i in range(args.runs)])

        await wait_for(all_final, within=(WORK_SECONDS + PAUSE_SECONDS) / args.scale * 6, every=0.5)
        elapsed = time.monotonic() - started
        return measure(phase, github, clock, elapsed, await runs_by_box(store, repo, args.runs))


async def landed(github: GitHubSimulator, store: Any, repo: Any, i: int) -> bool:
    """Whether run *i* is idle with its final comments and check on GitHub."""
    run = await store.latest_run(repo.repo_id, FIRST_ISSUE + i)
    if run is None or run.state is not RunState.IDLE or run.comment_id is None:
        return False
    bodies = [
        c["body"]
        for number in (FIRST_ISSUE + i, FIRST_PR + i)
        for c in github.comments(repo.full_name, number)
        if c["user"]["login"] == f"{APP_SLUG}[bot]"
    ]
    checks = [c for c in github.check_runs(repo.full_name) if c["external_id"] == run.id]
    return (
        len(bodies) == 2
        and all("✅ Finished" in body for body in bodies)
        and len(checks) == 1
        and checks[0]["conclusion"] == "success"
    )


async def runs_by_box(store: Any, repo: Any, runs: int) -> dict[str, int]:
    """Each run's box id, mapped to its tracking comment id."""
    found = {}
    for i in range(runs):
        run = await store.latest_run(repo.repo_id, FIRST_ISSUE + i)
        if run is not None and run.box_id and run.comment_id:
            found[run.box_id] = run.comment_id
    return found


def most_in_window(times: list[float], window: float) -> int:
    """The most of *times* (sorted) within any *window* seconds."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def measure(
    phase: Phase, github: GitHubSimulator, clock: ScaledClock, elapsed: float, boxes: dict[str, int]
) -> dict[str, Any]:
    ours = [c for c in github.calls if c.installation_id == INSTALLATION_ID]
    content = sorted(
        clock.seconds(c.at) for c in ours if c.method == "POST" and CONTENT_PATH.search(c.path)
    )
    lags, skipped = progress_lags(phase, ours, boxes, clock)
    into_pause = []
    if phase.pause is not None:
        start, end = phase.pause
        into_pause = [c for c in ours if c.method != "GET" and start < c.at < end]
    return {
        "phase": phase.name,
        "runs": phase.runs,
        "elapsed_s": round(elapsed, 1),
        "simulated_minutes": round(elapsed * clock.scale / 60, 1),
        "content_requests": len(content),
        "content_max_per_minute": most_in_window(content, 60.0),
        "content_max_per_hour": most_in_window(content, 3600.0),
        "github_calls_per_run": round(len(ours) / phase.runs, 1),
        "writes_per_run": round(sum(c.method != "GET" for c in ours) / phase.runs, 1),
        "progress_lag_s": latency_summary(lags) if lags else {},
        "progress_messages_skipped": skipped,
        "requests_into_pause": len(into_pause),
        "all_final_states_correct": True,
    }


def progress_lags(
    phase: Phase, calls: list[Call], boxes: dict[str, int], clock: ScaledClock
) -> tuple[list[float], int]:
    """Simulated seconds from each progress message in Box to the first edit showing it."""
    edits: dict[int, list[Call]] = {}
    for call in calls:
        if call.method == "PATCH" and "/issues/comments/" in call.path and call.json:
            edits.setdefault(int(call.path.rsplit("/", 1)[1]), []).append(call)
    lags, skipped = [], 0
    for (box_id, step), seen in phase.step_seen.items():
        text = f"Step {step} done."
        shown = next(
            (c for c in edits.get(boxes.get(box_id, -1), []) if text in str(c.json or {})),
            None,
        )
        if shown is None:
            skipped += 1  # a newer message replaced it before an edit was due
        else:
            lags.append((shown.at - seen) * clock.scale)
    return lags, skipped


async def run(args: argparse.Namespace) -> dict[str, Any]:
    steady = await one_phase(args, "steady", pause=False)
    paused = await one_phase(args, "secondary limit", pause=True)
    return {
        "runs": args.runs,
        "scale": args.scale,
        "budget": {"per_minute": PER_MINUTE, "per_hour": PER_HOUR},
        "phases": [steady, paused],
    }


def report(result: dict[str, Any]) -> None:
    rows = []
    for phase in result["phases"]:
        lag = phase["progress_lag_s"]
        rows.append(
            [
                phase["phase"],
                phase["runs"],
                phase["simulated_minutes"],
                f"{phase['content_max_per_minute']} / {PER_MINUTE}",
                f"{phase['content_max_per_hour']} / {PER_HOUR}",
                phase["github_calls_per_run"],
                phase["writes_per_run"],
                f"{lag.get('p50_ms', 0) / 1000:.1f} / {lag.get('p99_ms', 0) / 1000:.1f}",
                phase["progress_messages_skipped"],
                phase["requests_into_pause"],
                verdict(
                    phase["content_max_per_minute"] <= PER_MINUTE
                    and phase["content_max_per_hour"] <= PER_HOUR
                    and phase["requests_into_pause"] == 0
                ),
            ]
        )
    print_table(
        f"GitHub budget: {result['runs']} runs in one installation, time x{result['scale']:g}",
        [
            "phase",
            "runs",
            "sim min",
            "content/min",
            "content/h",
            "calls/run",
            "writes/run",
            "lag p50/p99 s",
            "skipped",
            "into pause",
            "ok",
        ],
        rows,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(NAME, lambda: run(args), report)


if __name__ == "__main__":
    raise SystemExit(main())
