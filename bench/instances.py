"""Several instances: what 1, 2 and 3 `box-bot serve` processes on PostgreSQL do, beside SQLite.

Every phase starts real `box-bot serve` processes (production settings, except
`BOX_POLL_INTERVAL=1`) on a fresh database between the GitHub and Box simulators:

- handled: signed `issues.labeled` deliveries of a label that is not the trigger (stored,
  read, nothing to do), posted round-robin to the instances; deliveries handled per second,
  from the first post until the shared inbox has none left pending;
- runs: issues labelled round-robin across three installations, an agent that works for
  a few seconds; runs driven from the label to the end of their prompt, per minute;
- intake: one instance on PostgreSQL at a fixed rate (default 500/s), p50/p99 latency;
- takeover: three instances with the production lease (`BOX_LEASE_SECONDS`, 30 s), one
  SIGKILLed while its runs work; the time until another instance holds each orphaned lease.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg

from bench.common import (
    SECRET,
    Target,
    latency_summary,
    load_payload,
    open_loop,
    print_table,
    run_benchmark,
    simulators,
    temp_dir,
    verdict,
    wait_for,
)
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from tests.serve_instances import Instance, deliver, instance_env

NAME = "instances"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS = ((5301, "bench-one"), (5302, "bench-two"), (5303, "bench-three"))
MAINTAINER = "Codertocat"
PENDING = ("pending", "processing")
TAKEOVER_MARGIN = 5.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument(
        "--pg", default=DEFAULT_PG, help="a PostgreSQL server to create databases on"
    )
    parser.add_argument("--deliveries", type=int, default=1500, help="deliveries per phase")
    parser.add_argument("--runs", type=int, default=30, help="runs per phase")
    parser.add_argument("--agent-seconds", type=float, default=3.0, help="each run's work")
    parser.add_argument("--rate", type=float, default=500.0, help="intake requests/s")
    parser.add_argument("--seconds", type=int, default=10, help="length of the intake phase")
    parser.add_argument("--lease", type=int, default=30, help="BOX_LEASE_SECONDS for takeover")
    return parser.parse_args(argv)


# -- databases, read from outside the instances -------------------------------------------------


@asynccontextmanager
async def fresh_database(backend: str, server: str, folder: Path) -> AsyncIterator[str]:
    """Yield the URL of a new database on *backend*, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    name = f"box_bot_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlparse(server)._replace(path=f"/{name}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one read-only query against either backend; the instances own the writes."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as reader:
            return [tuple(row) for row in reader.execute(sql).fetchall()]
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def counts(url: str, table: str, column: str) -> dict[str, int]:
    rows = await query(url, f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}")
    return {str(key): int(n) for key, n in rows}


# -- the simulated world ------------------------------------------------------------------------


def seed(github: GitHubSimulator, box: BoxSimulator, runs: int) -> list[tuple[dict[str, Any], int]]:
    """Three installations with one repository each; *runs* issues spread over them."""
    repos = []
    for n, (installation, owner) in enumerate(ACCOUNTS):
        name = f"{owner}/service"
        github.add_installation(installation, owner)
        repo = github.add_repo(name, installation_id=installation, repo_id=9_100_000 + n)
        repo["installation"] = installation
        github.set_permission(name, MAINTAINER, "admin")
        box.add_repo(name, github_id=9_100_000 + n)
        repos.append(repo)
    threads = []
    for number in range(1, runs + 1):
        repo = repos[number % len(repos)]
        github.add_issue(repo["full_name"], number, title=f"Bug {number}", user=MAINTAINER)
        threads.append((repo, number))
    return threads


def labeled(github: GitHubSimulator, repo: dict[str, Any], number: int) -> dict[str, Any]:
    """The recorded `issues.labeled` delivery, moved to *repo*'s issue *number*."""
    data = load_payload("issues.labeled.1", repo["installation"])
    data["label"] = {**data["label"], "name": "box:fix"}
    data["repository"] = {k: v for k, v in repo.items() if k != "installation"}
    data["issue"] = {**github.issue(repo["full_name"], number), "labels": [data["label"]]}
    data["sender"] = {**data["sender"], "login": MAINTAINER}
    return data


def other_label() -> dict[str, Any]:
    """A label that is not the trigger: stored (intake cannot tell), looked at, nothing to do."""
    data = load_payload("issues.labeled.1")
    data["label"] = {**data["label"], "name": "needs-triage"}
    return data


@asynccontextmanager
async def started(
    count: int, github: GitHubSimulator, box: BoxSimulator, url: str, folder: Path, **env: str
) -> AsyncIterator[list[Instance]]:
    settings = {"BOX_POLL_INTERVAL": "1", **env}
    base = instance_env(github, box, url, SECRET, **settings)
    tag = uuid.uuid4().hex[:6]
    instances = [Instance(f"{tag}-{n}", base, folder) for n in range(count)]
    try:
        await asyncio.gather(*(one.start() for one in instances))
        yield instances
    finally:
        await asyncio.gather(*(one.stop() for one in instances))


# -- phases -------------------------------------------------------------------------------------


async def handled_per_second(instances: list[Instance], url: str, total: int) -> dict[str, Any]:
    """Post *total* deliveries round-robin; time until the shared inbox has none pending."""
    payload = other_label()
    turn = itertools.cycle(instances)
    limit = asyncio.Semaphore(32)

    async def one(http: aiohttp.ClientSession, target: Instance) -> None:
        async with limit:
            await deliver(http, target, "issues", payload, SECRET)

    began = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http, next(turn)) for _ in range(total)))
    posted = time.perf_counter() - began

    async def drained() -> bool:
        now = await counts(url, "deliveries", "status")
        return sum(now.values()) >= total and not any(now.get(s) for s in PENDING)

    await wait_for(drained, 600, every=0.1)
    elapsed = time.perf_counter() - began
    return {
        "deliveries": total,
        "posted_s": round(posted, 2),
        "handled_s": round(elapsed, 2),
        "handled_per_s": round(total / elapsed, 1),
        "statuses": await counts(url, "deliveries", "status"),
    }


async def runs_driven(
    instances: list[Instance], url: str, github: GitHubSimulator, threads: list[Any]
) -> dict[str, Any]:
    """Label every issue round-robin; time until every run finished its prompt."""
    turn = itertools.cycle(instances)
    began = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        for repo, number in threads:
            await deliver(http, next(turn), "issues", labeled(github, repo, number), SECRET)

    async def finished() -> bool:
        return (await counts(url, "runs", "state")).get("idle", 0) >= len(threads)

    await wait_for(finished, 900, every=0.2)
    elapsed = time.perf_counter() - began
    return {
        "runs": len(threads),
        "all_idle_s": round(elapsed, 2),
        "runs_per_minute": round(len(threads) / elapsed * 60, 1),
        "states": await counts(url, "runs", "state"),
    }


async def scaling(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for backend, count in (("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)):
        row: dict[str, Any] = {"backend": backend, "instances": count}
        async with simulators(max_active_boxes=10_000, creation_rate_per_minute=10_000) as (
            github,
            box,
        ):
            box.scripts["work"] = [Wait(args.agent_seconds), Say("Fixed it.")]
            box.default_script = "work"
            threads = seed(github, box, args.runs)
            async with (
                fresh_database(backend, args.pg, folder) as url,
                started(count, github, box, url, folder) as instances,
            ):
                await ready(instances, github)
                row["handled"] = await handled_per_second(instances, url, args.deliveries)
                row["driven"] = await runs_driven(instances, url, github, threads)
        print(
            f"  {backend} x{count}: {row['handled']['handled_per_s']} deliveries/s,"
            f" {row['driven']['runs_per_minute']} runs/min",
            flush=True,
        )
        rows.append(row)
    return rows


async def ready(instances: list[Instance], github: GitHubSimulator) -> None:
    """Wait until every instance has learnt who it is (`GET /app`)."""
    await wait_for(lambda: len(github.calls_to("GET", r"^/app$")) >= len(instances), 30)


async def intake(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One instance on PostgreSQL at a fixed rate; latency counts from each scheduled send."""
    async with (
        simulators() as (github, box),
        fresh_database("postgresql", args.pg, folder) as url,
        started(1, github, box, url, folder) as (one,),
    ):
        await ready([one], github)
        target = Target.one(one.url, "issues", json.dumps(other_label()).encode())
        await open_loop(target, args.rate, 2)  # warm-up
        result = await open_loop(target, args.rate, args.seconds)
    return result.to_json()


async def takeover(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """SIGKILL the instance holding the most leases; time until others hold every one of them."""
    async with simulators(max_active_boxes=100, creation_rate_per_minute=100) as (github, box):
        box.scripts["long"] = [Wait(args.lease * 3.0), Say("Fixed it.")]
        box.default_script = "long"
        threads = seed(github, box, 12)
        async with (
            fresh_database("postgresql", args.pg, folder) as url,
            started(3, github, box, url, folder, BOX_LEASE_SECONDS=str(args.lease)) as three,
        ):
            await ready(three, github)
            turn = itertools.cycle(three)
            async with aiohttp.ClientSession() as http:
                for repo, number in threads:
                    await deliver(http, next(turn), "issues", labeled(github, repo, number), SECRET)

            async def working() -> bool:
                return (await counts(url, "runs", "state")).get("working", 0) == len(threads)

            await wait_for(working, 120, every=0.2)
            owners = dict(await query(url, "SELECT id, lease_owner FROM runs"))
            victim = await dead_owner_after_kill(three, url, owners, args.lease / 3)
            orphans = {run for run, owner in owners.items() if owner == victim.owner}
            killed_at = victim.killed_at
            taken: dict[str, float] = {}
            while len(taken) < len(orphans):
                now = dict(await query(url, "SELECT id, lease_owner FROM runs"))
                for run in orphans - taken.keys():
                    if now[run] not in (None, victim.owner):
                        taken[run] = time.monotonic() - killed_at
                if time.monotonic() - killed_at > args.lease * 4:
                    break
                await asyncio.sleep(0.1)
    delays = sorted(taken.values())
    worst = delays[-1] if len(delays) == len(orphans) else float("nan")
    return {
        "lease_seconds": args.lease,
        "orphaned_runs": len(orphans),
        "taken_over": len(taken),
        "first_s": round(delays[0], 2) if delays else None,
        "last_s": round(worst, 2),
        "latency": latency_summary(delays),
        "target_s": args.lease + TAKEOVER_MARGIN,
        "met": worst < args.lease + TAKEOVER_MARGIN,
    }


class Victim:
    def __init__(self, owner: str, killed_at: float) -> None:
        self.owner, self.killed_at = owner, killed_at


async def dead_owner_after_kill(
    three: list[Instance], url: str, owners: dict[str, str], renew: float
) -> Victim:
    """SIGKILL the second instance; its lease owner is the one that stops renewing."""
    before = dict(await query(url, "SELECT id, lease_until FROM runs"))
    three[1].kill()
    killed_at = time.monotonic()
    await asyncio.sleep(renew * 1.5)
    after = dict(await query(url, "SELECT id, lease_until FROM runs"))
    stale = {owners[run] for run in owners if after[run] == before[run]} - {None}
    if len(stale) != 1:
        raise RuntimeError(f"cannot tell which lease owner died: {stale}")
    return Victim(stale.pop(), killed_at)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    folder = temp_dir(NAME)
    print("scaling (deliveries handled, runs driven):", flush=True)
    rows = await scaling(args, folder)
    print("intake on PostgreSQL:", flush=True)
    rate = await intake(args, folder)
    print("takeover after SIGKILL:", flush=True)
    moved = await takeover(args, folder)
    return {
        "settings": vars(args) | {"pg": urlparse(args.pg).hostname},
        "scaling": rows,
        "intake_postgresql": rate,
        "takeover": moved,
        "note": (
            "all instances, PostgreSQL, the simulators and the load generator share the"
            " machine's cores: more instances add CPU contention, not cores"
        ),
        "work_dir": str(folder),
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            r["backend"],
            r["instances"],
            r["handled"]["handled_per_s"],
            r["driven"]["runs"],
            r["driven"]["all_idle_s"],
            r["driven"]["runs_per_minute"],
        ]
        for r in result["scaling"]
    ]
    print_table(
        "Deliveries handled and runs driven",
        ["backend", "instances", "handled/s", "runs", "all idle s", "runs/min"],
        rows,
    )
    rate = result["intake_postgresql"]
    latency = rate["latency"]
    print(
        f"\nintake on PostgreSQL at {rate['target_rate']:.0f}/s: p50 {latency['p50_ms']} ms,"
        f" p99 {latency['p99_ms']} ms, {rate['ok']}/{rate['sent']} acknowledged"
    )
    moved = result["takeover"]
    print(
        f"takeover after SIGKILL (lease {moved['lease_seconds']} s): {moved['taken_over']}"
        f"/{moved['orphaned_runs']} runs, first {moved['first_s']} s, last {moved['last_s']} s"
        f" (target < {moved['target_s']:.0f} s): {verdict(moved['met'])}"
    )
    print(f"\n{result['note']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(NAME, lambda: measure(args), report)


if __name__ == "__main__":
    sys.exit(main())
