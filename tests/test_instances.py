"""Three `box-bot serve` processes on one PostgreSQL database, and one of them SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.models import MARKER_TEXT, RunState
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.records import Bound, Limit, LimitHit, Limits
from tests.conftest import BOX_KEY, MAINTAINER, SECRET, load_payload
from tests.databases import PG_SERVER, SKIPPED
from tests.databases import database_url as new_database
from tests.flow import wait_until
from tests.serve_instances import Instance, deliver, instance_env
from tests.test_store_contract import created, make_run

pytestmark = pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)

# Three accounts with one repository each, ten issues in each repository.
ACCOUNTS = ((4301, "Codertocat", 186853002), (4302, "octo-org", 186853003), (4303, "hubbers", 1))
ISSUES = range(1, 11)
LEASE_SECONDS = 3
AGENT_SECONDS = 30.0  # the first prompt outlasts the kill, which waits for all thirty to start
FOLLOW_UP_SECONDS = 1.0
FOLLOW_UP = "/box fix also cover the empty input"
PROMPT_PATH = re.compile(r"^/boxes/([^/]+)/prompt$")
BOT_LOGIN = "box-bot[bot]"
LIMIT_NOTICE = (
    "🛑 **No box was started: the limit of 2 active boxes across all installations is reached"
    " (the operator's `BOX_MAX_ACTIVE`: 2).** It frees up when one of the active boxes is"
    " archived (`/box archive`). Then comment `/box fix` to try again."
)

Thread = tuple[str, int]


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    async with new_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    """The database as the test reads it: through the store, like any instance."""
    opened = await open_store(pg_url)
    yield opened
    await opened.close()


@pytest.fixture
async def sims() -> AsyncIterator[tuple[GitHubSimulator, BoxSimulator, dict[str, Any]]]:
    """GitHub with three installations and thirty open issues; Box with their repositories."""
    github = GitHubSimulator(app_id=321, app_slug="box-bot")
    box = BoxSimulator(BOX_KEY, seed=13, max_active_boxes=40, creation_rate_per_minute=60)
    await github.start()
    await box.start()
    repos: dict[str, Any] = {}
    for installation, owner, repo_id in ACCOUNTS:
        name = f"{owner}/Hello-World"
        github.add_installation(installation, owner)
        repos[name] = github.add_repo(
            name, installation_id=installation, repo_id=repo_id, default_branch="master"
        )
        repos[name]["installation"] = installation
        github.set_permission(name, MAINTAINER, "admin")
        box.add_repo(name, github_id=repo_id)
        for number in ISSUES:
            github.add_issue(name, number, title=f"Crash {number} on empty input", user=MAINTAINER)
    box.scripts["steady"] = [Wait(AGENT_SECONDS), Say("Fixed it.")]
    box.scripts["quick"] = [Wait(FOLLOW_UP_SECONDS), Say("Covered it too.")]
    box.default_script = "steady"
    box.script_rules["also cover the empty input"] = "quick"
    yield github, box, repos
    await box.close()
    await github.close()


@contextlib.asynccontextmanager
async def instances(
    github: GitHubSimulator, box: BoxSimulator, url: str, workdir: Path, **settings: str
) -> AsyncIterator[list[Instance]]:
    """Start three instances together (they migrate under one lock); stop them at the end."""
    env = instance_env(github, box, url, SECRET, **settings)
    started = [Instance(f"instance-{n}", env, workdir) for n in range(3)]
    try:
        await asyncio.gather(*(one.start() for one in started))
        yield started
    finally:
        await asyncio.gather(*(one.stop() for one in started))


def in_repo(data: dict[str, Any], repo: dict[str, Any], issue: dict[str, Any]) -> dict[str, Any]:
    """A recorded payload moved to *repo* and *issue*, as that installation's delivery."""
    data["repository"] = {k: v for k, v in repo.items() if k != "installation"}
    data["issue"] = issue
    data["installation"]["id"] = repo["installation"]
    data["sender"] = {**data["sender"], "login": MAINTAINER}
    return data


def labeled(github: GitHubSimulator, repo: dict[str, Any], number: int) -> dict[str, Any]:
    data = load_payload("issues.labeled.1")
    issue = github.issue(repo["full_name"], number)
    issue = {**issue, "labels": [{**data["label"], "name": "box:fix"}]}
    data["label"] = {**data["label"], "name": "box:fix"}
    return in_repo(data, repo, issue)


def commented(github: GitHubSimulator, repo: dict[str, Any], number: int) -> dict[str, Any]:
    """The maintainer asks for more on *number*: the comment is on GitHub, then delivered."""
    data = load_payload("issue_comment.created.1")
    in_repo(data, repo, github.issue(repo["full_name"], number))
    data["comment"] = github.add_comment(repo["full_name"], number, body=FOLLOW_UP, user=MAINTAINER)
    return data


def closed(github: GitHubSimulator, repo: dict[str, Any], number: int) -> dict[str, Any]:
    data = load_payload("issues.reopened.1")
    data["action"] = "closed"
    issue = {**github.issue(repo["full_name"], number), "state": "closed"}
    return in_repo(data, repo, issue)


async def runs_by_thread(
    store: Store, repos: dict[str, Any], threads: Sequence[Thread]
) -> dict[Thread, Any]:
    return {(name, n): await store.latest_run(repos[name]["id"], n) for name, n in threads}


async def leases(url: str, run_ids: Sequence[str]) -> dict[str, tuple[str | None, float | None]]:
    """Which instance holds each run's lease, and until when, as the database records it."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, lease_owner, lease_until FROM runs WHERE id = ANY($1::text[])",
            list(run_ids),
        )
    finally:
        await conn.close()
    return {row["id"]: (row["lease_owner"], row["lease_until"]) for row in rows}


async def dead_owner(url: str, run_ids: Sequence[str], renew_every: float) -> str:
    """The lease owner that stopped renewing: the instance that was killed."""
    before = await leases(url, run_ids)
    await asyncio.sleep(renew_every * 1.3)
    after = await leases(url, run_ids)
    stale = {owner for run, (owner, until) in after.items() if before[run] == (owner, until)}
    [owner] = stale - {None}
    assert owner is not None
    return owner


def prompts_per_box(box: BoxSimulator) -> Counter[str]:
    posts = box.requests_to("POST", PROMPT_PATH.pattern)
    return Counter(PROMPT_PATH.match(post.route).group(1) for post in posts)  # type: ignore[union-attr]


async def test_three_instances_lose_no_run_when_one_is_killed(
    sims: tuple[GitHubSimulator, BoxSimulator, dict[str, Any]],
    pg_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    github, box, repos = sims
    threads = [(name, number) for number in ISSUES for name in repos]
    async with (
        instances(
            github,
            box,
            pg_url,
            tmp_path,
            BOX_POLL_INTERVAL="1",
            BOX_LEASE_SECONDS=str(LEASE_SECONDS),
        ) as three,
        aiohttp.ClientSession() as http,
    ):
        turn = itertools.cycle(three)
        labels = [
            await deliver(http, next(turn), "issues", labeled(github, repos[name], n), SECRET)
            for name, n in threads
        ]
        # A delivery GitHub sends again reaches another instance: recognised, not redone.
        for (delivery_id, _), again in zip(labels[:3], three[1:] + three[:1], strict=True):
            _, answer = await deliver(
                http, again, "issues", labeled(github, repos[threads[0][0]], 1), SECRET, delivery_id
            )
            assert answer["duplicate"] is True

        # Every run is working once its box took the prompt.
        await wait_until(lambda: sum(prompts_per_box(box).values()) == len(threads), 40)
        runs = await runs_by_thread(store, repos, threads)
        run_ids = [run.id for run in runs.values()]
        owners = {run: owner for run, (owner, _) in (await leases(pg_url, run_ids)).items()}
        assert len(set(owners.values()) - {None}) == 3  # the work spread over the three

        victim, survivors = three[1], [three[0], three[2]]
        victim.kill()
        await victim.process.wait()  # type: ignore[union-attr]
        victim_owner = await dead_owner(pg_url, run_ids, LEASE_SECONDS / 3)
        orphans = {run_id for run_id, owner in owners.items() if owner == victim_owner}
        assert len(orphans) >= 5
        assert all(run.state is RunState.WORKING for run in runs.values() if run.id in orphans)

        # Follow-ups on every third thread land on the instances still alive.
        followed = threads[::4]
        comments = {}
        alive = itertools.cycle(survivors)
        for name, number in followed:
            payload = commented(github, repos[name], number)
            comments[(name, number)] = payload["comment"]["id"]
            await deliver(http, next(alive), "issue_comment", payload, SECRET)

        # Every run finishes, the dead instance's too, follow-ups included.
        async def settled() -> bool:
            now = await runs_by_thread(store, repos, threads)
            expected = len(threads) + len(followed)
            return (
                all(run.state is RunState.IDLE for run in now.values())
                and sum(prompts_per_box(box).values()) == expected
            )

        await wait_until(settled, 60)
        await asyncio.sleep(1.0)  # let the last comment edits land

        # One close per issue, round-robin to the two alive.
        for name, number in threads:
            await deliver(http, next(alive), "issues", closed(github, repos[name], number), SECRET)

        async def archived() -> bool:
            now = await runs_by_thread(store, repos, threads)
            return all(run.state is RunState.ARCHIVED for run in now.values())

        await wait_until(archived, 30)

    final = await runs_by_thread(store, repos, threads)
    # Exactly one box per issue, each created for its own repository.
    boxes = [run.box_id for run in final.values()]
    assert len(set(boxes)) == len(box.boxes) == len(threads)
    # One prompt per box, two where a follow-up came: no delivery's effect happened twice.
    expected = {final[t].box_id: 2 if t in comments else 1 for t in threads}
    assert prompts_per_box(box) == expected
    assert all(len(box.boxes[b].runs) == n for b, n in expected.items())
    # One stop per close.
    stops = Counter(r.route.split("/")[2] for r in box.requests_to("POST", r"^/boxes/[^/]+/stop$"))
    assert stops == {b: 1 for b in boxes}
    for name, number in threads:
        mine = [c for c in github.comments(name, number) if c["user"]["login"] == BOT_LOGIN]
        tracking = [c for c in mine if MARKER_TEXT in c["body"]]
        assert len(tracking) == 1, (name, number, mine)
        assert final[(name, number)].comment_id == tracking[0]["id"]
    for (name, _number), comment_id in comments.items():
        assert len(github.reactions(name, comment_id)) == 1


async def test_concurrent_requests_on_three_instances_start_only_the_limit_of_boxes(
    sims: tuple[GitHubSimulator, BoxSimulator, dict[str, Any]],
    pg_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    github, box, repos = sims
    box.default_script = "quick"
    threads = [(name, number) for number in ISSUES for name in repos]
    async with (
        instances(github, box, pg_url, tmp_path, BOX_MAX_ACTIVE="2") as three,
        aiohttp.ClientSession() as http,
    ):
        turn = itertools.cycle(three)
        sends = [
            deliver(http, next(turn), "issues", labeled(github, repos[name], n), SECRET)
            for name, n in threads
        ]
        await asyncio.gather(*sends)

        async def decided() -> dict[Thread, Any] | None:
            now = await runs_by_thread(store, repos, threads)
            states = Counter(run.state for run in now.values() if run is not None)
            return now if states[RunState.FAILED] + states[RunState.IDLE] == len(threads) else None

        final = await wait_until(decided, 60)

        states = Counter(run.state for run in final.values())
        assert states == {RunState.IDLE: 2, RunState.FAILED: len(threads) - 2}
        assert len(box.requests_to("POST", r"^/boxes$")) == len(box.boxes) == 2
        for (name, number), run in final.items():
            if run.state is RunState.FAILED:
                assert run.notice == LIMIT_NOTICE

                def shown(name: str = name, number: int = number) -> bool:
                    tracking = [
                        c for c in github.comments(name, number) if MARKER_TEXT in c["body"]
                    ]
                    return len(tracking) == 1 and LIMIT_NOTICE in tracking[0]["body"]

                await wait_until(shown, 30)


async def test_reservations_from_three_instances_at_once_stop_at_the_limit(pg_url: str) -> None:
    """The check and the write of a reservation hold one named lock across instances."""
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        runs = [await created(stores[0], make_run(n, f"user{n}")) for n in range(1, 31)]
        limits = Limits(active=Bound(Limit.ACTIVE, 2))
        hits = await asyncio.gather(
            *(stores[i % 3].reserve(run.id, limits) for i, run in enumerate(runs))
        )
    finally:
        for store in stores:
            await store.close()
    assert hits.count(None) == 2
    assert set(hits) - {None} == {LimitHit(Limit.ACTIVE, 2)}
