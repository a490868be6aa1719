"""Calls per fix: every GitHub and Box API call one full run makes, by endpoint.

One run, end to end, with the real app between the two simulators in this process:
label → box → agent events → PR opened (linked, check run) → PR merged (box archived).
Run twice, with 50 and with 500 agent events spread over the same agent time, so that the
comment edits show whether they follow the clock or the number of events. Times are scaled
down by `SCALE` (a 5 s poll interval becomes 0.5 s), which keeps every count as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import (
    APP_SLUG,
    INSTALLATION_ID,
    WEBHOOK_PATH,
    app_env,
    fixture_repo,
    load_payload,
    post_delivery,
    print_table,
    run_benchmark,
    simulators,
    temp_dir,
    verdict,
    wait_for,
)
from bot.github.tracker import MIN_EDIT_INTERVAL
from bot.ingress.server import COMPONENTS, Options, create_app
from bot.ingress.worker import WorkerPolicy
from bot.models import RunState
from bot.runs.timing import Timing
from bot.settings import load_settings
from bot.sim.box import API_PREFIX, BoxSimulator, BoxTimings
from bot.sim.box_agent import success_script
from bot.sim.github import GitHubSimulator

NAME = "calls"
SCALE = 10.0  # production seconds per benchmark second
POLL_SECONDS = 5.0
AGENT_SECONDS = 60.0
PROVISION_SECONDS = 10.0
CLONE_SECONDS = 5.0
READY_POLL_SECONDS = 3.0
BOX_CHECK_EVERY = 6
BASE_SCRIPT_EVENTS = 9  # prompt, 2 partials + message, 3 commands, checkpoint, final message
ISSUE = 7
PR = 8
HEAD_SHA = "b" * 40
SENDER = "Codertocat"
EDIT_GROWTH_LIMIT = 1.5
FLOW_TIMEOUT = 60.0


@dataclass(frozen=True)
class Expected:
    """The fewest calls of one endpoint the flow needs, and why."""

    api: str
    endpoint: str
    minimum: str
    reason: str


# The minimum a full fix needs. "P" is the number of polls while the agent works
# (agent time / poll interval, plus the one that sees the end); counts are per run.
EXPECTED: tuple[Expected, ...] = (
    Expected("github", "GET /app", "1", "learn the app's slug once at start (not per run)"),
    Expected(
        "github",
        "POST /app/installations/{installation_id}/access_tokens",
        "1",
        "one installation token, cached until shortly before it expires",
    ),
    Expected(
        "github",
        "GET /repos/{owner}/{repo}/collaborators/{username}/permission",
        "1",
        "the labeler must have write access (cached for a minute, so one)",
    ),
    Expected(
        "github",
        "POST /repos/{owner}/{repo}/issues/{issue_number}/comments",
        "2",
        "the tracking comment on the issue, then its copy on the PR",
    ),
    Expected(
        "github",
        "GET /repos/{owner}/{repo}/issues/{issue_number}",
        "1",
        "title, body and labels for the prompt, as they are when the prompt is built",
    ),
    Expected(
        "github",
        "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
        "2",
        "the discussion for the prompt; on the PR, a look for a copy of the tracking comment"
        " posted before a crash (the issue's own is new, so it is not looked for)",
    ),
    Expected(
        "github",
        "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}",
        "phases + P",
        "one edit per visible phase and at most one per poll that changed the text",
    ),
    Expected(
        "github", "POST /repos/{owner}/{repo}/check-runs", "1", "the Box check on the PR head"
    ),
    Expected(
        "github",
        "GET /repos/{owner}/{repo}/pulls/{pull_number}/files",
        "1",
        "whether the PR changes .github/box.yml (then a `Box config` check validates it)",
    ),
    Expected(
        "github",
        "PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}",
        "1",
        "complete the check (the agent had already finished when the PR opened)",
    ),
    Expected(
        "github",
        "GET /repos/{owner}/{repo}/contents/.github/box.yml",
        "6",
        "repository and organisation file at the trigger (kept for the run's first minute),"
        " for the PR's `Box config` check, and at the close; conditional after the first",
    ),
    Expected(
        "box",
        "GET /limits",
        "1",
        "ask Box whether a box may start, so a refusal is explained before any create",
    ),
    Expected("box", "GET /repos?q=*", "1", "resolve owner/name to Box's databaseId (then cached)"),
    Expected("box", "POST /repos", "1", "select the repo right before creating the box"),
    Expected("box", "POST /boxes", "1", "create the box (Idempotency-Key = run id)"),
    Expected("box", "PATCH /boxes/{box_id}", "1", "name it owner/repo#N (create takes no name)"),
    Expected(
        "box",
        "GET /boxes/{box_id}",
        "R + P/6 + 1",
        "R polls until ready, a liveness check every 6 polls, one state check at the end",
    ),
    Expected(
        "box",
        "GET /boxes/{box_id}/events?type=prompt&sort=desc",
        "1",
        "a cursor after the newest prompt, taken before sending: if the send fails unclearly,"
        " the check cannot mistake an older prompt with the same text for this one",
    ),
    Expected("box", "POST /boxes/{box_id}/prompt", "1", "send the prompt once"),
    Expected("box", "GET /boxes/{box_id}/prompts/{prompt_id}", "P", "one status poll per interval"),
    Expected(
        "box",
        "GET /boxes/{box_id}/events?sort=asc",
        "P",
        "one page of new events per poll (100 per page)",
    ),
    Expected("box", "POST /boxes/{box_id}/stop", "1", "archive the box when the PR merges"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument(
        "--events", type=int, nargs="+", default=[50, 500], help="agent events per run"
    )
    return parser.parse_args(argv)


def options() -> Options:
    """Production timing divided by SCALE."""
    timing = Timing(
        ready_timeout=FLOW_TIMEOUT,
        ready_poll=READY_POLL_SECONDS / SCALE,
        poll_interval=POLL_SECONDS / SCALE,
        max_poll_interval=30.0 / SCALE,
        box_check_every=BOX_CHECK_EVERY,
    )
    return Options(
        worker=WorkerPolicy(idle_poll=0.1),
        github_write_interval=1.0 / SCALE,
        comment_interval=MIN_EDIT_INTERVAL / SCALE,
        timing=timing,
    )


def box_timings(events: int) -> BoxTimings:
    """Provisioning, cloning and an agent that emits *events* over the same agent time."""
    # The agent pauses once before each event it emits, the prompt event aside.
    return BoxTimings(
        provisioning=PROVISION_SECONDS / SCALE,
        cloning=CLONE_SECONDS / SCALE,
        agent_step=AGENT_SECONDS / SCALE / (events - 1),
    )


# -- naming endpoints ---------------------------------------------------------------------------

BOX_IDS = (
    (re.compile(r"bx_[0-9a-z]+"), "{box_id}"),
    (re.compile(r"prompt_[0-9a-f]+"), "{prompt_id}"),
)
SHOWN_QUERY_VALUES = ("type", "sort")
NAMED_QUERY_KEYS = ("q",)  # their value is the thing asked about: shown as *


def github_endpoint(github: GitHubSimulator, method: str, path: str) -> str:
    """Return `METHOD /templated/path` using the simulator's OpenAPI routes."""
    matched = github.spec.match(method, path)
    if matched is None:
        return f"{method} {path}"
    params = list(matched[1].items())  # in the order they appear in the route
    parts = []
    for part in path.split("/"):
        if params and part == params[0][1]:
            part = "{" + params.pop(0)[0] + "}"
        parts.append(part)
    return f"{method} {'/'.join(parts)}"


def box_endpoint(method: str, path: str, query: dict[str, str]) -> str:
    """Return `METHOD /templated/path`, with the query values that change what is asked."""
    route = path.removeprefix(API_PREFIX)
    for pattern, name in BOX_IDS:
        route = pattern.sub(name, route)
    shown = [f"{key}=*" for key in NAMED_QUERY_KEYS if key in query]
    shown += [f"{key}={query[key]}" for key in SHOWN_QUERY_VALUES if key in query]
    return f"{method} {route}" + ("?" + "&".join(shown) if shown else "")


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Marks:
    """Where each phase of the flow starts in the simulators' call lists."""

    github: dict[str, int] = field(default_factory=dict)
    box: dict[str, int] = field(default_factory=dict)

    def mark(self, phase: str, github: GitHubSimulator, box: BoxSimulator) -> None:
        self.github[phase], self.box[phase] = len(github.calls), len(box.requests)


@contextlib.asynccontextmanager
async def running_app(
    github: GitHubSimulator, box: BoxSimulator, name: str
) -> AsyncIterator[tuple[web.Application, str]]:
    """Serve the real app on a loopback port in this process."""
    folder = temp_dir(NAME)
    settings = load_settings(app_env(github, box, folder / f"{name}.sqlite3"))
    app = create_app(settings, options())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}{WEBHOOK_PATH}"
    finally:
        await runner.cleanup()


def labeled() -> dict[str, Any]:
    data = load_payload("issues.labeled.1")
    data["issue"]["number"] = ISSUE
    data["label"] = {**data["label"], "name": "box:fix"}
    data["sender"] = {**data["sender"], "login": SENDER}
    return data


def pull_request(fixture: str, run_id: str, *, merged: bool = False) -> dict[str, Any]:
    """A pull_request delivery for the box's PR, derived from a recorded payload."""
    repo = fixture_repo()
    data = load_payload(fixture)
    pull = data["pull_request"]
    pull.update(
        number=PR,
        body=f"Fixes #{ISSUE}\n\nBox-Run: {run_id}",
        merged=merged,
        state="closed" if fixture.endswith("closed.1") else "open",
    )
    pull["head"] = {**pull["head"], "ref": f"box/issue-{ISSUE}", "sha": HEAD_SHA}
    pull["head"]["repo"] = {**pull["head"]["repo"], "id": repo.repo_id, "full_name": repo.full_name}
    data["number"] = PR
    data["sender"] = {**data["sender"], "login": "box-agent[bot]", "type": "Bot"}
    return data


async def one_fix(events: int) -> dict[str, Any]:
    """Run the whole flow once; return the calls by endpoint and phase."""
    repo = fixture_repo()
    marks = Marks()
    emitted: list[float] = []

    async def on_event(_box_id: str, _event: dict[str, Any]) -> None:
        emitted.append(asyncio.get_running_loop().time())

    async with simulators(timings=box_timings(events), on_agent_event=on_event) as (github, box):
        box.scripts["bench"] = success_script(extra_commands=events - BASE_SCRIPT_EVENTS)
        box.default_script = "bench"
        github.add_issue(repo.full_name, ISSUE, title="Crash on empty config", user=SENDER)
        async with running_app(github, box, f"events-{events}") as (app, url):
            store = app[COMPONENTS].store
            await wait_for(lambda: github.calls_to("GET", r"^/app$"), 10)
            marks.mark("label → box → agent → idle", github, box)

            async def run_in(*states: RunState) -> Any:
                run = await store.latest_run(repo.repo_id, ISSUE)
                return run if run is not None and run.state in states else None

            async def delivered(delivery: str) -> bool:
                row = await store.get_delivery(delivery)
                return row is not None and row.status.value in ("done", "failed", "ignored")

            async with aiohttp.ClientSession() as session:
                await post_delivery(session, url, "issues", labeled(), "label-1")
                run = await wait_for(lambda: run_in(RunState.IDLE), FLOW_TIMEOUT)
                marks.mark("PR opened → linked, check", github, box)
                github.add_pull(
                    repo.full_name,
                    PR,
                    title="Fix the crash on an empty config",
                    head=f"box/issue-{ISSUE}",
                    head_sha=HEAD_SHA,
                    body=f"Fixes #{ISSUE}\n\nBox-Run: {run.id}",
                    user="box-agent[bot]",
                    user_type="Bot",
                )
                opened = pull_request("pull_request.opened.1", run.id)
                await post_delivery(session, url, "pull_request", opened, "pr-opened")
                await wait_for(lambda: delivered("pr-opened"), FLOW_TIMEOUT)
                marks.mark("PR merged → archived", github, box)
                closed = pull_request("pull_request.closed.1", run.id, merged=True)
                await post_delivery(session, url, "pull_request", closed, "pr-closed")
                await wait_for(lambda: delivered("pr-closed"), FLOW_TIMEOUT)
                await wait_for(lambda: run_in(RunState.ARCHIVED), FLOW_TIMEOUT)
                await asyncio.sleep(5 * POLL_SECONDS / SCALE)  # nothing more should happen
        return tally(github, box, marks, events, emitted)


def tally(
    github: GitHubSimulator,
    box: BoxSimulator,
    marks: Marks,
    events: int,
    emitted: list[float],
) -> dict[str, Any]:
    """Count calls by endpoint (and by phase), and find the ones that carried nothing new."""
    phases = list(marks.github)
    by_endpoint: Counter[str] = Counter()
    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for index, call in enumerate(github.calls):
        name = "github " + github_endpoint(github, call.method, call.path)
        by_endpoint[name] += 1
        by_phase[_phase_of(index, marks.github, phases)][name] += 1
    for index, request in enumerate(box.requests):
        name = "box " + box_endpoint(request.method, request.path, request.query)
        by_endpoint[name] += 1
        by_phase[_phase_of(index, marks.box, phases)][name] += 1
    agent_seconds = (max(emitted) - min(emitted)) if emitted else 0.0
    edits = github.calls_to("PATCH", r"/issues/comments/\d+$")
    return {
        "events_requested": events,
        "events_emitted": sum(len(b.events) for b in box.boxes.values()),
        "agent_seconds_scaled": round(agent_seconds * SCALE, 1),
        "calls": dict(sorted(by_endpoint.items())),
        "calls_by_phase": {phase: dict(sorted(c.items())) for phase, c in by_phase.items()},
        "github_total": sum(n for k, n in by_endpoint.items() if k.startswith("github")),
        "box_total": sum(n for k, n in by_endpoint.items() if k.startswith("box")),
        "comment_edits": len(edits),
        "comment_edits_by_comment": dict(Counter(c.path.rsplit("/", 1)[1] for c in edits)),
        "wasted": wasted_calls(github),
    }


def _phase_of(index: int, marks: dict[str, int], phases: list[str]) -> str:
    current = "startup"
    for phase in phases:
        if index >= marks[phase]:
            current = phase
    return current


def wasted_calls(github: GitHubSimulator) -> dict[str, Any]:
    """Find calls that told GitHub nothing new or asked what the app already knew."""
    unchanged_edits = 0
    last_body: dict[str, str] = {}
    for call in github.calls:
        if call.method == "PATCH" and re.search(r"/issues/comments/\d+$", call.path):
            body = (call.json or {}).get("body", "")
            unchanged_edits += last_body.get(call.path) == body
            last_body[call.path] = body
    unchanged_checks = 0
    last_check: dict[str, str] = {}
    for call in github.calls:
        if call.method == "PATCH" and "/check-runs/" in call.path:
            payload = json.dumps(call.json, sort_keys=True)
            unchanged_checks += last_check.get(call.path) == payload
            last_check[call.path] = payload
    mints = Counter(
        c.path for c in github.calls if c.method == "POST" and c.path.endswith("/access_tokens")
    )
    reads = Counter(
        f"{c.path}?{'&'.join(f'{k}={v}' for k, v in sorted(c.query.items()))}".rstrip("?")
        for c in github.calls
        if c.method == "GET"
    )
    return {
        "unchanged_comment_edits": unchanged_edits,
        "unchanged_check_updates": unchanged_checks,
        "extra_token_mints": sum(n - 1 for n in mints.values()),
        "repeated_github_reads": {path: n for path, n in reads.items() if n > 1},
    }


# -- the report ----------------------------------------------------------------------------------


def minimum_for(expected: Expected, fix: dict[str, Any]) -> int | None:
    """Evaluate the expected count of one endpoint for a measured run (None: no number)."""
    if expected.minimum.isdigit():
        return int(expected.minimum)
    polls = math.ceil(fix["agent_seconds_scaled"] / POLL_SECONDS) + 1
    ready = math.ceil((PROVISION_SECONDS + CLONE_SECONDS) / READY_POLL_SECONDS) + 1
    values = {"P": polls, "R + P/6 + 1": ready + polls // BOX_CHECK_EVERY + 1}
    return values.get(expected.minimum)


def excess_calls(fix: dict[str, Any]) -> list[dict[str, Any]]:
    """Endpoints called more often than the flow needs (a fixed minimum), or not expected."""
    expected = {f"{e.api} {e.endpoint}": e for e in EXPECTED}
    found = []
    for name, count in fix["calls"].items():
        known = expected.get(name)
        if known is None:
            found.append({"endpoint": name, "count": count, "expected": None})
        elif known.minimum.isdigit() and count > int(known.minimum):
            found.append({"endpoint": name, "count": count, "expected": int(known.minimum)})
    return found


def run_rows(fixes: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per endpoint: counts for each run, the expected count and why."""
    expected = {f"{e.api} {e.endpoint}": e for e in EXPECTED}
    names = sorted({name for fix in fixes for name in fix["calls"]} | set(expected))
    rows = []
    for name in names:
        counts = [fix["calls"].get(name, 0) for fix in fixes]
        known = expected.get(name)
        if known is None:
            rows.append([name, *counts, "-", "(not in the expected flow)"])
            continue
        values = [minimum_for(known, fix) for fix in fixes]
        shown = known.minimum
        if not known.minimum.isdigit() and None not in values:
            shown += " = " + "/".join(str(v) for v in values)
        rows.append([name, *counts, shown, known.reason])
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fixes = [await one_fix(events) for events in args.events]
    for fix in fixes:
        fix["excess"] = excess_calls(fix)
    edits = [fix["comment_edits"] for fix in fixes]
    growth = edits[-1] / edits[0] if edits[0] else math.inf
    event_growth = fixes[-1]["events_emitted"] / max(1, fixes[0]["events_emitted"])
    uninformative = [
        fix["wasted"]["unchanged_comment_edits"]
        + fix["wasted"]["unchanged_check_updates"]
        + fix["wasted"]["extra_token_mints"]
        + sum(item["count"] - (item["expected"] or 0) for item in fix["excess"])
        for fix in fixes
    ]
    return {
        "scale": SCALE,
        "installation": INSTALLATION_ID,
        "app": APP_SLUG,
        "timing_production_seconds": {
            "poll_interval": POLL_SECONDS,
            "agent_time": AGENT_SECONDS,
            "provisioning": PROVISION_SECONDS,
            "cloning": CLONE_SECONDS,
            "comment_interval": MIN_EDIT_INTERVAL,
        },
        "expected": [vars(e) for e in EXPECTED],
        "runs": fixes,
        "targets": {
            "calls_above_minimum": uninformative,
            "no_uninformative_calls": not any(uninformative),
            "comment_edit_growth": round(growth, 2),
            "event_growth": round(event_growth, 2),
            "edits_bounded": growth <= EDIT_GROWTH_LIMIT,
        },
    }


def report(result: dict[str, Any]) -> None:
    fixes = result["runs"]
    headers = ["endpoint", *(f"{f['events_emitted']} ev" for f in fixes), "expected", "why"]
    print_table("Calls per fix, by endpoint (P = polls while working)", headers, run_rows(fixes))
    wasted = [f["wasted"] for f in fixes]
    totals = [
        ["GitHub calls", *(f["github_total"] for f in fixes)],
        ["Box calls", *(f["box_total"] for f in fixes)],
        ["comment edits", *(f["comment_edits"] for f in fixes)],
        ["agent time (s, production)", *(f["agent_seconds_scaled"] for f in fixes)],
        ["unchanged comment edits", *(w["unchanged_comment_edits"] for w in wasted)],
        ["unchanged check updates", *(w["unchanged_check_updates"] for w in wasted)],
        ["extra token mints", *(w["extra_token_mints"] for w in wasted)],
        ["calls above the minimum", *result["targets"]["calls_above_minimum"]],
    ]
    print_table("Totals", ["", *(f"{f['events_emitted']} events" for f in fixes)], totals)
    for fix in fixes:
        for item in fix["excess"]:
            print(
                f"  {fix['events_emitted']} events: {item['endpoint']} called {item['count']}"
                f" times, expected {item['expected'] if item['expected'] is not None else 0}"
            )
        for path, count in fix["wasted"]["repeated_github_reads"].items():
            print(f"  {fix['events_emitted']} events: GET {path} read {count} times")
    targets = result["targets"]
    print(
        f"\nno call without information: {verdict(targets['no_uninformative_calls'])}"
        f"\ncomment edits grew x{targets['comment_edit_growth']} while events grew"
        f" x{targets['event_growth']} (bounded if <= x{EDIT_GROWTH_LIMIT}):"
        f" {verdict(targets['edits_bounded'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
