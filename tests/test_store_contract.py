"""What every store backend promises: each operation called directly, on each backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest

from bot.models import BoxReport, PromptKind, PromptState, QueuedPrompt, Run, RunState
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.operations import SQLStore
from bot.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from bot.store.postgres import PostgresBackend
from bot.store.records import (
    DAY_SECONDS,
    Bound,
    CIFixClaim,
    CIFixOutcome,
    CreateOutcome,
    DeliveryStatus,
    LeaseTaken,
    Limit,
    LimitHit,
    Limits,
    PendingStop,
    Pruned,
    StoreUnavailable,
)
from bot.store.retention import prune_periodically
from tests.databases import BACKENDS, PG_SERVER, SKIPPED
from tests.databases import database_url as new_database

START = 1_800_000_000.0
PAYLOAD = b'{"action": "labeled", "issue": {"number": 7, "title": "Caf\\u00e9"}}'


@dataclass
class Clock:
    """The store's clock, moved by the test."""

    now: float = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    async with new_database(backend, tmp_path) as value:
        yield value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(url: str, clock: Clock) -> AsyncIterator[Store]:
    opened = await open_store(url, clock)
    yield opened
    await opened.close()


def make_run(number: int = 7, requester: str = "octocat", **fields: object) -> Run:
    defaults: dict[str, object] = {
        "id": f"run-{number}-{requester}",
        "installation_id": 4242,
        "repo_id": 186853002,
        "repo": "Codertocat/Hello-World",
        "repo_private": False,
        "number": number,
        "is_pull_request": False,
        "state": RunState.REQUESTED,
        "requester": requester,
        "provider": "claude",
    }
    return Run(**{**defaults, **fields})  # type: ignore[arg-type]


def make_prompt(
    run_id: str, trigger: str | None, kind: PromptKind = PromptKind.INITIAL
) -> QueuedPrompt:
    return QueuedPrompt(
        seq=0,
        run_id=run_id,
        kind=kind,
        requester="octocat",
        instructions=f"do the work for {trigger}",
        state=PromptState.QUEUED,
        trigger_key=trigger,
    )


async def created(store: Store, run: Run, trigger: str | None = None) -> Run:
    outcome, stored = await store.create_run(run, make_prompt(run.id, trigger or f"t-{run.id}"))
    assert outcome is CreateOutcome.CREATED
    return stored


# -- the webhook inbox -----------------------------------------------------------------------


async def test_a_delivery_is_stored_once_and_read_back_whole(store: Store) -> None:
    assert await store.add_delivery("d-1", "issues", "labeled", 4242, PAYLOAD) is True
    assert await store.add_delivery("d-1", "issues", "labeled", 4242, b"{}") is False

    delivery = await store.get_delivery("d-1")
    assert delivery is not None
    assert (delivery.id, delivery.event, delivery.action, delivery.installation_id) == (
        "d-1",
        "issues",
        "labeled",
        4242,
    )
    assert delivery.payload == PAYLOAD
    assert delivery.data() == {"action": "labeled", "issue": {"number": 7, "title": "Café"}}
    assert (delivery.status, delivery.attempts, delivery.done_handlers, delivery.last_error) == (
        DeliveryStatus.PENDING,
        0,
        (),
        None,
    )
    assert await store.get_delivery("d-2") is None
    assert await store.delivery_counts() == {"pending": 1}


async def test_claims_take_due_deliveries_oldest_first_and_only_once(
    store: Store, clock: Clock
) -> None:
    for n in range(5):
        await store.add_delivery(f"d-{n}", "issues", None, None, b"{}")
        clock.now += 1

    first = await store.claim_deliveries(3, lease_seconds=60)
    second = await store.claim_deliveries(3, lease_seconds=60)

    assert [d.id for d in first] == ["d-0", "d-1", "d-2"]
    assert [d.id for d in second] == ["d-3", "d-4"]
    assert {d.status for d in first + second} == {DeliveryStatus.PROCESSING}
    assert {d.attempts for d in first + second} == {1}
    assert await store.claim_deliveries(3, lease_seconds=60) == []
    assert await store.delivery_counts() == {"processing": 5}


async def test_a_claim_whose_lease_ran_out_is_claimed_again(store: Store, clock: Clock) -> None:
    await store.add_delivery("d-1", "issues", None, None, b"{}")
    await store.claim_deliveries(1, lease_seconds=30)

    clock.now += 29
    assert await store.claim_deliveries(1, lease_seconds=30) == []
    clock.now += 2
    (again,) = await store.claim_deliveries(1, lease_seconds=30)
    assert (again.id, again.attempts) == ("d-1", 2)


async def test_finished_deliveries_keep_their_outcome(store: Store) -> None:
    for name in ("ok", "dull", "bad"):
        await store.add_delivery(name, "issues", None, None, b"{}")
    await store.claim_deliveries(3, lease_seconds=60)

    await store.finish_delivery("ok", DeliveryStatus.DONE, ["handlers.issues.on_labeled"])
    await store.finish_delivery("dull", DeliveryStatus.IGNORED, error="no handler for this event")
    await store.finish_delivery("bad", DeliveryStatus.FAILED, ["a", "b"], "b: boom")

    ok, dull, bad = [await store.get_delivery(name) for name in ("ok", "dull", "bad")]
    assert ok is not None and dull is not None and bad is not None
    assert (ok.status, ok.done_handlers, ok.last_error) == (
        DeliveryStatus.DONE,
        ("handlers.issues.on_labeled",),
        None,
    )
    assert (dull.status, dull.last_error) == (DeliveryStatus.IGNORED, "no handler for this event")
    assert (bad.status, bad.done_handlers, bad.last_error) == (
        DeliveryStatus.FAILED,
        ("a", "b"),
        "b: boom",
    )
    assert await store.delivery_counts() == {"done": 1, "ignored": 1, "failed": 1}
    assert await store.claim_deliveries(3, lease_seconds=60) == []


async def test_a_retried_delivery_waits_for_its_delay(store: Store, clock: Clock) -> None:
    assert await store.next_due_in() is None
    await store.add_delivery("d-1", "issues", None, None, b"{}")
    assert await store.next_due_in() == 0.0
    await store.claim_deliveries(1, lease_seconds=60)

    await store.retry_delivery("d-1", ["handlers.one"], "two: timeout", delay=10)

    assert await store.next_due_in() == 10.0
    assert await store.claim_deliveries(1, lease_seconds=60) == []
    clock.now += 10
    (again,) = await store.claim_deliveries(1, lease_seconds=60)
    assert (again.attempts, again.done_handlers, again.last_error) == (
        2,
        ("handlers.one",),
        "two: timeout",
    )


async def test_released_claims_come_back_uncounted_only_on_a_clean_stop(
    url: str, clock: Clock
) -> None:
    first = await open_store(url, clock)
    for name in ("a", "b"):
        await first.add_delivery(name, "issues", None, None, b"{}")
    await first.claim_deliveries(1, lease_seconds=60)

    assert await first.release_claims() == 1  # a clean stop: the attempt does not count
    (claimed,) = await first.claim_deliveries(1, lease_seconds=60)
    assert (claimed.id, claimed.attempts) == ("a", 1)
    await first.close()

    second = await open_store(url, clock)  # the next start, after the first one died
    try:
        assert second.instance_id != first.instance_id
        assert await second.release_claims() == 0  # not its own claims
        assert await second.release_claims(every_instance=True) == 1
        (again,) = await second.claim_deliveries(1, lease_seconds=60)
        assert (again.id, again.attempts) == ("a", 2)  # the crash counted
    finally:
        await second.close()


async def test_redeliveries_are_asked_once_and_the_log_horizon_is_kept(store: Store) -> None:
    await store.add_delivery("in-inbox", "issues", None, None, b"{}")
    assert (await store.has_delivery("in-inbox"), await store.has_delivery("missed")) == (
        True,
        False,
    )
    assert await store.claim_redelivery("missed") is True
    assert await store.claim_redelivery("missed") is False
    assert await store.redelivery_horizon() is None
    await store.set_redelivery_horizon(START - 3600.5)
    await store.set_redelivery_horizon(START - 60.25)
    assert await store.redelivery_horizon() == START - 60.25


# -- runs ------------------------------------------------------------------------------------


async def test_a_run_is_created_with_its_first_prompt(store: Store, clock: Clock) -> None:
    run = make_run(summary={"steps": ["asked"]}, ttl_seconds=3600, default_branch="main")

    outcome, stored = await store.create_run(run, make_prompt(run.id, "label:1"))

    assert outcome is CreateOutcome.CREATED
    assert stored == replace(run, created_at=START, updated_at=START)
    assert await store.get_run(run.id) == stored
    (prompt,) = await store.prompts(run.id)
    assert (prompt.kind, prompt.state, prompt.trigger_key, prompt.instructions) == (
        PromptKind.INITIAL,
        PromptState.QUEUED,
        "label:1",
        "do the work for label:1",
    )


async def test_the_same_trigger_returns_the_run_it_started(store: Store) -> None:
    run = await created(store, make_run(), "label:1")

    outcome, stored = await store.create_run(
        make_run(requester="hubot"), make_prompt("run-7-hubot", "label:1")
    )

    assert (outcome, stored) == (CreateOutcome.SAME_TRIGGER, run)
    assert await store.get_run("run-7-hubot") is None


async def test_one_active_run_per_issue(store: Store) -> None:
    run = await created(store, make_run(), "label:1")

    outcome, stored = await store.create_run(
        make_run(requester="hubot"), make_prompt("run-7-hubot", "comment:9")
    )

    assert (outcome, stored) == (CreateOutcome.ACTIVE_EXISTS, run)
    assert await store.get_run("run-7-hubot") is None
    assert await store.queue_prompt(make_prompt(run.id, "comment:9")) is True  # not taken
    await store.update_run(run.id, state=RunState.ARCHIVED)
    outcome, _ = await store.create_run(
        make_run(requester="hubot"), make_prompt("run-7-hubot", "comment:10")
    )
    assert outcome is CreateOutcome.CREATED


async def test_runs_are_found_by_issue_pull_request_and_state(store: Store, clock: Clock) -> None:
    old = await created(store, make_run(number=7, requester="a"))
    await store.update_run(old.id, state=RunState.FAILED)
    clock.now += 1
    linked = await created(store, make_run(number=7, requester="b"))
    await store.update_run(linked.id, pr_number=12, head_sha="abc123")
    clock.now += 1
    other = await created(store, make_run(number=8, requester="c"))

    active = await store.active_run(186853002, 7)
    assert active is not None and active.id == linked.id
    by_pr = await store.active_run(186853002, 12)
    assert by_pr is not None and by_pr.id == linked.id
    latest = await store.latest_run(186853002, 8)
    assert latest is not None and latest.id == other.id
    assert await store.active_run(186853002, 9) is None
    assert await store.active_run(1, 7) is None
    await store.update_run(linked.id, state=RunState.ARCHIVED)
    assert await store.active_run(186853002, 12) is None
    latest = await store.latest_run(186853002, 12)
    assert latest is not None and latest.id == linked.id
    assert [r.id for r in await store.runs_in([RunState.FAILED, RunState.ARCHIVED])] == [
        old.id,
        linked.id,
    ]
    assert await store.count_runs() == {"failed": 1, "archived": 1, "requested": 1}


async def test_update_run_changes_fields_only_in_the_expected_state(
    store: Store, clock: Clock
) -> None:
    run = await created(store, make_run())
    clock.now += 5

    moved = await store.update_run(
        run.id,
        expect=[RunState.REQUESTED],
        state=RunState.PROVISIONING,
        box_id="box-1",
        summary={"cost": 3},
        comment_id=2**40,
    )
    refused = await store.update_run(run.id, expect=[RunState.REQUESTED], state=RunState.FAILED)

    assert moved == replace(
        run,
        state=RunState.PROVISIONING,
        box_id="box-1",
        summary={"cost": 3},
        comment_id=2**40,
        updated_at=START + 5,
    )
    assert refused is None
    assert await store.get_run(run.id) == moved
    assert await store.update_run("no-such-run", state=RunState.FAILED) is None
    with pytest.raises(ValueError, match="not updatable"):
        await store.update_run(run.id, repo="someone/else")


# -- limits ----------------------------------------------------------------------------------


NO_LIMITS = Limits()


async def reserved(store: Store, run: Run, limits: Limits = NO_LIMITS) -> Run:
    stored = await created(store, run)
    assert await store.reserve(stored.id, limits) is None
    return stored


async def test_paused_refuses_every_run(store: Store) -> None:
    run = await created(store, make_run())
    assert await store.reserve(run.id, Limits(paused=True)) == LimitHit(Limit.PAUSED, 0)
    fetched = await store.get_run(run.id)
    assert fetched is not None and fetched.reserved_at is None


@pytest.mark.parametrize(
    ("limits", "other", "hit"),
    [
        (Limits(active=Bound(Limit.ACTIVE, 1)), {"installation_id": 1, "repo_id": 1}, True),
        (Limits(per_installation=Bound(Limit.PER_INSTALLATION, 1)), {"repo_id": 1}, True),
        (Limits(per_installation=Bound(Limit.PER_INSTALLATION, 1)), {"installation_id": 1}, False),
        (Limits(per_repo=Bound(Limit.REPO_ACTIVE, 1)), {"installation_id": 1}, True),
        (Limits(per_repo=Bound(Limit.PER_REPO, 1)), {"repo_id": 1}, False),
    ],
)
async def test_active_box_limits_count_reserved_active_runs_in_their_scope(
    store: Store, limits: Limits, other: dict[str, int], hit: bool
) -> None:
    await reserved(store, make_run(number=1, **other))
    await created(store, make_run(number=2))  # not reserved: no box yet, does not count
    run = await created(store, make_run(number=3))

    result = await store.reserve(run.id, limits)

    bound = limits.active or limits.per_installation or limits.per_repo
    assert bound is not None
    assert result == (LimitHit(bound.limit, 1) if hit else None)
    fetched = await store.get_run(run.id)
    assert fetched is not None
    assert fetched.reserved_at == (None if hit else START)


async def test_a_run_that_ends_frees_its_place_and_never_counts_itself(store: Store) -> None:
    limits = Limits(active=Bound(Limit.ACTIVE, 1))
    first = await reserved(store, make_run(number=1), limits)
    assert await store.reserve(first.id, limits) is None  # reserving again is harmless
    second = await created(store, make_run(number=2))
    assert await store.reserve(second.id, limits) == LimitHit(Limit.ACTIVE, 1)

    await store.update_run(first.id, state=RunState.ARCHIVED)

    assert await store.reserve(second.id, limits) is None


async def test_runs_per_person_per_day_free_up_a_day_after_the_oldest(
    store: Store, clock: Clock
) -> None:
    limits = Limits(per_user_day=2)
    first = await reserved(store, make_run(number=1), limits)
    await store.update_run(first.id, state=RunState.ARCHIVED, box_id="box-1")  # it got a box
    clock.now += 100
    second = await reserved(store, make_run(number=2), limits)
    await store.update_run(second.id, state=RunState.FAILED)  # ended before a box: free
    clock.now += 100
    await reserved(store, make_run(number=3), limits)
    clock.now += 100
    await reserved(store, make_run(number=4, requester="hubot"), limits)  # someone else
    clock.now += 100
    fifth = await created(store, make_run(number=5))

    assert await store.reserve(fifth.id, limits) == LimitHit(
        Limit.PER_USER_DAY, 2, START + DAY_SECONDS
    )
    clock.now = START + DAY_SECONDS - 1
    assert await store.reserve(fifth.id, limits) == LimitHit(
        Limit.PER_USER_DAY, 2, START + DAY_SECONDS
    )
    clock.now += 1
    assert await store.reserve(fifth.id, limits) is None


async def test_the_daily_limit_that_frees_last_is_the_one_reported(
    store: Store, clock: Clock
) -> None:
    limits = Limits(per_user_day=2, repo_per_user_day=1)
    await reserved(store, make_run(number=1, repo_id=1))  # another repository
    clock.now += 50
    await reserved(store, make_run(number=2))
    clock.now += 50
    third = await created(store, make_run(number=3))

    assert await store.reserve(third.id, limits) == LimitHit(
        Limit.REPO_USER_DAY, 1, START + 50 + DAY_SECONDS
    )
    assert await store.reserve(third.id, Limits(per_user_day=2)) == LimitHit(
        Limit.PER_USER_DAY, 2, START + DAY_SECONDS
    )
    assert await store.reserve(third.id, Limits(repo_per_user_day=2)) is None


async def test_concurrent_reservations_never_pass_the_limit(store: Store) -> None:
    limits = Limits(active=Bound(Limit.ACTIVE, 2))
    runs = [await created(store, make_run(number=n)) for n in range(8)]

    hits = await asyncio.gather(*(store.reserve(run.id, limits) for run in runs))

    assert hits.count(None) == 2
    assert hits.count(LimitHit(Limit.ACTIVE, 2)) == 6


# -- prompts ---------------------------------------------------------------------------------


async def test_prompts_are_queued_once_per_trigger_and_move_through_states(
    store: Store, clock: Clock
) -> None:
    run = await created(store, make_run(), "label:1")
    assert await store.queue_prompt(make_prompt(run.id, "comment:2", PromptKind.FOLLOW_UP))
    assert not await store.queue_prompt(make_prompt(run.id, "comment:2", PromptKind.FOLLOW_UP))
    assert await store.queue_prompt(make_prompt(run.id, None, PromptKind.RERUN))
    assert await store.queue_prompt(
        make_prompt(run.id, None, PromptKind.RERUN)
    )  # no key: no dedupe

    first, follow_up, *_ = await store.prompts(run.id)
    clock.now += 1
    await store.update_prompt(first.seq, PromptState.SENDING, text="the prompt")
    clock.now += 1
    await store.update_prompt(first.seq, PromptState.SENT, box_prompt_id="p-1")
    clock.now += 1
    await store.update_prompt(first.seq, PromptState.FINISHED)

    assert [p.kind for p in await store.prompts(run.id)] == [
        PromptKind.INITIAL,
        PromptKind.FOLLOW_UP,
        PromptKind.RERUN,
        PromptKind.RERUN,
    ]
    (done,) = await store.prompts(run.id, [PromptState.FINISHED])
    assert (done.seq, done.text, done.box_prompt_id, done.sent_at) == (
        first.seq,
        "the prompt",
        "p-1",
        START + 1,
    )
    queued = await store.prompts(run.id, [PromptState.QUEUED, PromptState.SENDING])
    assert [p.seq for p in queued] == [p.seq for p in (await store.prompts(run.id))[1:]]
    assert follow_up.sent_at is None


# -- notices, pending stops, tracking comments -------------------------------------------------


async def test_a_notice_is_claimed_once_per_period(store: Store, clock: Clock) -> None:
    assert await store.claim_notice("denied:o/r#1:hubot", every=3600) is True
    clock.now += 3599
    assert await store.claim_notice("denied:o/r#1:hubot", every=3600) is False
    assert await store.claim_notice("denied:o/r#2:hubot", every=3600) is True
    clock.now += 2
    assert await store.claim_notice("denied:o/r#1:hubot", every=3600) is True


async def test_pending_stops_are_kept_until_cleared(store: Store, clock: Clock) -> None:
    one = await created(store, make_run(number=1))
    two = await created(store, make_run(number=2))

    assert await store.add_pending_stop(one.id, "box-1", delete=False) == PendingStop(
        one.id, "box-1", False, 0, START
    )
    clock.now += 1
    await store.add_pending_stop(two.id, "box-2", delete=True)
    assert (await store.add_pending_stop(two.id, "box-2", delete=False)).delete is True  # kept
    await store.stop_failed(one.id, "503 from Box", retry_at=START + 60)
    await store.stop_failed(one.id, "503 from Box", retry_at=START + 120)

    assert await store.pending_stops() == [
        PendingStop(two.id, "box-2", True, 0, START + 1),
        PendingStop(one.id, "box-1", False, 2, START + 120),
    ]
    upgraded = await store.add_pending_stop(one.id, "box-1", delete=True)
    assert upgraded == PendingStop(one.id, "box-1", True, 2, START + 1)
    await store.clear_pending_stop(one.id)
    assert await store.pending_stop(one.id) is None
    assert await store.pending_stop(two.id) == PendingStop(two.id, "box-2", True, 0, START + 1)


async def test_shown_hashes_are_remembered_per_comment(store: Store) -> None:
    assert await store.shown_hash(2**40) is None
    await store.set_shown_hash(2**40, "h1")
    await store.set_shown_hash(2**40, "h2")
    await store.set_shown_hash(5, "h3")
    assert (await store.shown_hash(2**40), await store.shown_hash(5)) == ("h2", "h3")


# -- CI fixes --------------------------------------------------------------------------------


async def test_the_active_linked_run_is_found_by_head_commit(store: Store, clock: Clock) -> None:
    run = await created(store, make_run())
    await store.update_run(run.id, head_sha="aaa")
    assert await store.linked_run_at(186853002, "aaa") is None  # no pull request yet
    await store.update_run(run.id, pr_number=12)

    found = await store.linked_run_at(186853002, "aaa")
    assert found is not None and found.id == run.id
    assert await store.linked_run_at(186853002, "bbb") is None
    await store.update_run(run.id, state=RunState.ARCHIVED)
    assert await store.linked_run_at(186853002, "aaa") is None


async def test_ci_fixes_count_one_attempt_per_commit_within_the_limit(store: Store) -> None:
    run = await created(store, make_run())

    def fix(sha: str) -> QueuedPrompt:
        return make_prompt(run.id, f"ci:{sha}", PromptKind.CI_FIX)

    assert await store.claim_ci_fix(fix("a"), 186853002, 12, "a", 2) == CIFixClaim(
        CIFixOutcome.QUEUED, 1
    )
    assert await store.claim_ci_fix(fix("a"), 186853002, 12, "a", 2) == CIFixClaim(
        CIFixOutcome.SEEN, 1
    )
    assert await store.claim_ci_fix(fix("b"), 186853002, 12, "b", 2) == CIFixClaim(
        CIFixOutcome.QUEUED, 2
    )
    assert await store.claim_ci_fix(fix("c"), 186853002, 12, "c", 2) == CIFixClaim(
        CIFixOutcome.LIMIT_REACHED, 2
    )
    assert await store.claim_ci_fix(fix("c"), 186853002, 12, "c", 2) == CIFixClaim(
        CIFixOutcome.SEEN, 0
    )
    assert await store.claim_ci_fix(fix("x"), 186853002, 13, "x", 2) == CIFixClaim(
        CIFixOutcome.QUEUED, 1
    )

    assert await store.ci_fix_attempts(186853002, 12) == {"a": 1, "b": 2, "c": 0}
    ci = await store.prompts(run.id)
    assert [p.trigger_key for p in ci] == ["t-run-7-octocat", "ci:a", "ci:b", "ci:x"]


# -- the backend underneath ------------------------------------------------------------------


async def test_a_transaction_that_raises_leaves_nothing(store: Store) -> None:
    assert isinstance(store, SQLStore)
    backend = store._backend
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with backend.transaction() as tx:
            await tx.fetch(
                "INSERT INTO notices (key, sent_at) VALUES (?, ?)", ("rolled-back", START)
            )
            raise RuntimeError("changed my mind")
    assert await store.claim_notice("rolled-back", every=3600) is True


async def test_a_lock_is_held_by_one_holder_at_a_time(store: Store) -> None:
    order: list[str] = []

    async def hold(name: str) -> None:
        async with store.lock("box-account"):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


async def test_migrating_again_changes_nothing(store: Store) -> None:
    await store.add_delivery("kept", "issues", None, None, b"{}")
    version = await store.migrate()
    assert version == await store.migrate()
    assert await store.get_delivery("kept") is not None


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get_run("any")


# -- several instances on one database ---------------------------------------------------------


async def test_instances_claiming_together_each_get_different_deliveries(
    url: str, clock: Clock
) -> None:
    stores = [await open_store(url, clock) for _ in range(3)]
    try:
        await asyncio.gather(
            *(stores[0].add_delivery(f"d-{n}", "issues", None, None, b"{}") for n in range(60))
        )

        async def drain(store: Store) -> list[str]:
            taken: list[str] = []
            while batch := await store.claim_deliveries(4, lease_seconds=60):
                taken += [d.id for d in batch]
                await asyncio.sleep(0)
            return taken

        claims = await asyncio.gather(*(drain(store) for store in stores))

        every = [d for taken in claims for d in taken]
        assert sorted(every) == sorted(f"d-{n}" for n in range(60))  # each claimed once
        assert len({s.instance_id for s in stores}) == 3
    finally:
        for store in stores:
            await store.close()


async def test_a_stored_delivery_calls_the_listeners_back(store: Store) -> None:
    woken = asyncio.Event()
    await store.listen_deliveries(woken.set)

    await store.add_delivery("d-1", "issues", None, None, b"{}")
    async with asyncio.timeout(5):
        await woken.wait()
    woken.clear()
    await store.add_delivery("d-1", "issues", None, None, b"{}")  # a duplicate: nothing new
    await asyncio.sleep(0.1)
    assert not woken.is_set()


@pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)
async def test_a_delivery_stored_by_one_instance_wakes_another(tmp_path: Path) -> None:
    async with new_database("postgresql", tmp_path) as url:
        receiver, idle = await open_store(url), await open_store(url)
        try:
            woken = asyncio.Event()
            await idle.listen_deliveries(woken.set)
            await receiver.add_delivery("d-1", "issues", None, None, b"{}")
            async with asyncio.timeout(5):
                await woken.wait()
            (claimed,) = await idle.claim_deliveries(1, lease_seconds=60)
            assert claimed.id == "d-1"
        finally:
            await receiver.close()
            await idle.close()


@pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)
async def test_a_lost_notification_connection_is_opened_again(tmp_path: Path) -> None:
    async with new_database("postgresql", tmp_path) as url:
        receiver, idle = await open_store(url), await open_store(url)
        assert isinstance(idle, SQLStore) and isinstance(idle._backend, PostgresBackend)
        idle._backend.relisten_seconds = 0.05
        try:
            woken = asyncio.Event()
            await idle.listen_deliveries(woken.set)
            server = await asyncpg.connect(url)
            try:
                await server.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            finally:
                await server.close()
            async with asyncio.timeout(5):
                for n in itertools.count():
                    await receiver.add_delivery(f"d-{n}", "issues", None, None, b"{}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), 0.1)
                    if woken.is_set():
                        break
        finally:
            await receiver.close()
            await idle.close()


@pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)
async def test_instances_starting_together_migrate_once(tmp_path: Path) -> None:
    async with new_database("postgresql", tmp_path) as url:
        stores = await asyncio.gather(*(open_store(url) for _ in range(4)))
        for store in stores:
            await store.close()
        server = await asyncpg.connect(url)
        try:
            rows = await server.fetch("SELECT version FROM schema_version")
        finally:
            await server.close()
    assert sorted(row["version"] for row in rows) == list(range(1, len(POSTGRES_MIGRATIONS) + 1))


# -- a bounded inbox ---------------------------------------------------------------------------


async def test_under_constant_traffic_the_inbox_stops_growing(store: Store, clock: Clock) -> None:
    retention = 1 * DAY_SECONDS
    sizes: dict[int, int] = {}
    for hour in range(10 * 24):
        names = [f"h{hour}-done", f"h{hour}-ignored"] + ([f"h{hour}-failed"] * (hour % 12 == 0))
        await asyncio.gather(
            *(store.add_delivery(name, "issues", None, None, PAYLOAD) for name in names),
            store.claim_redelivery(f"asked-{hour}"),
        )
        await asyncio.gather(
            store.finish_delivery(names[0], DeliveryStatus.DONE, ["handlers.one"]),
            store.finish_delivery(names[1], DeliveryStatus.IGNORED, error="no handler"),
            *(store.finish_delivery(n, DeliveryStatus.FAILED, [], "boom") for n in names[2:]),
        )
        clock.now += 3600
        await store.prune_inbox(retention)
        if hour % 24 == 23:
            counts = await store.delivery_counts()
            sizes[hour // 24 + 1] = counts["done"] + counts["ignored"]

    # Ids are kept 4 days (GitHub redelivers 3 days back): 4 × 24 hours × 2 deliveries.
    assert [sizes[day] for day in range(5, 11)] == [4 * 24 * 2] * 6
    assert sizes[3] < sizes[4] <= sizes[5]
    assert (await store.delivery_counts())["failed"] == 20  # failed ones are all kept
    assert await store.add_delivery("h150-done", "issues", None, None, b"{}") is False
    kept_old = await store.get_delivery("h150-done")  # 90 hours old: payload gone, id kept
    recent = await store.get_delivery("h230-done")
    failed = await store.get_delivery("h0-failed")
    assert kept_old is not None and recent is not None and failed is not None
    assert (kept_old.payload, recent.payload, failed.payload) == (b"", PAYLOAD, PAYLOAD)
    assert await store.get_delivery("h140-done") is None  # 100 hours old: forgotten
    assert await store.claim_redelivery("asked-150") is False  # asked 90 hours ago: remembered
    assert await store.claim_redelivery("asked-140") is True  # 100 hours ago: forgotten


async def test_pending_and_processing_deliveries_are_never_pruned(
    store: Store, clock: Clock
) -> None:
    await store.add_delivery("waiting", "issues", None, None, PAYLOAD)
    await store.add_delivery("working", "issues", None, None, PAYLOAD)
    await store.claim_deliveries(1, lease_seconds=60)
    clock.now += 30 * DAY_SECONDS

    assert await store.prune_inbox(DAY_SECONDS) == Pruned(payloads=0, deliveries=0, redeliveries=0)

    for name in ("waiting", "working"):
        kept = await store.get_delivery(name)
        assert kept is not None and kept.payload == PAYLOAD


async def test_the_inbox_is_pruned_at_start_and_then_periodically(
    store: Store, clock: Clock
) -> None:
    await store.add_delivery("old-1", "issues", None, None, PAYLOAD)
    await store.finish_delivery("old-1", DeliveryStatus.DONE)
    clock.now += 2 * DAY_SECONDS
    pruning = asyncio.create_task(prune_periodically(store, retention_days=1, every=0.05))
    try:
        await _until_payload_gone(store, "old-1")
        await store.add_delivery("old-2", "issues", None, None, PAYLOAD)
        await store.finish_delivery("old-2", DeliveryStatus.IGNORED)
        clock.now += 2 * DAY_SECONDS
        await _until_payload_gone(store, "old-2")
    finally:
        pruning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pruning


async def _until_payload_gone(store: Store, delivery_id: str) -> None:
    async with asyncio.timeout(5):
        while (row := await store.get_delivery(delivery_id)) is None or row.payload:
            await asyncio.sleep(0.01)


# -- leases: one instance drives each run --------------------------------------------------


def sibling(store: Store) -> Store:
    """Another instance on the same database (its own instance id)."""
    assert isinstance(store, SQLStore)
    return SQLStore(store._backend, store.clock)


async def test_a_lease_is_held_by_one_instance_until_it_expires(store: Store, clock: Clock) -> None:
    other = sibling(store)
    run = await created(store, make_run(1))

    assert await store.take_lease(run.id, 30) is LeaseTaken.FREE
    assert await other.take_lease(run.id, 30) is None
    assert await store.take_lease(run.id, 30) is LeaseTaken.OURS
    clock.now += 29
    assert await other.take_lease(run.id, 30) is None
    clock.now += 2  # 31 s after the last take: expired
    assert await other.take_lease(run.id, 30) is LeaseTaken.EXPIRED
    assert await store.renew_leases([run.id], 30) == set()
    assert await other.renew_leases([run.id], 30) == {run.id}
    assert await store.take_lease("no-such-run", 30) is None


async def test_a_given_up_lease_is_free_at_once_and_only_its_holder_can_give_it_up(
    store: Store,
) -> None:
    other = sibling(store)
    run = await created(store, make_run(2))
    await store.take_lease(run.id, 30)

    await other.release_lease(run.id)
    assert await other.take_lease(run.id, 30) is None
    await store.release_lease(run.id)
    assert await other.take_lease(run.id, 30) is LeaseTaken.FREE
    assert await other.release_leases() == 1
    assert await other.release_leases() == 0


async def test_runs_to_take_over_are_those_with_work_and_no_live_lease(
    store: Store, clock: Clock
) -> None:
    other = sibling(store)
    working = await created(store, make_run(3, state=RunState.WORKING))
    idle = await created(store, make_run(4, state=RunState.IDLE))
    waiting = await created(store, make_run(5, state=RunState.IDLE))
    done = await created(store, make_run(6, state=RunState.ARCHIVED))
    for run in (idle, done):
        (prompt,) = await store.prompts(run.id)
        await store.update_prompt(prompt.seq, PromptState.FINISHED)
    await store.take_lease(working.id, 30)

    assert await other.unleased_runs() == [waiting.id]
    clock.now += 31
    assert await other.unleased_runs() == [working.id, waiting.id]


# -- box reports: setup and spend ---------------------------------------------------------------


async def test_a_box_report_is_kept_replaced_and_read_back_whole(store: Store) -> None:
    run = await created(store, make_run(box_id="bx_23456789"))
    first = BoxReport(run.id, "bx_23456789", 4242, 186853002, setup_status="running")
    later = replace(
        first,
        setup_status="failed",
        setup_error="exit code 1",
        seconds=90.5,
        dollars=None,
        dollars_per_second=0.0005,
        billed=True,
        read_at=START + 90,
    )

    await store.save_box_report(first)
    assert await store.box_report(run.id) == first
    await store.save_box_report(later)

    assert await store.box_report(run.id) == later
    assert await store.box_report("run-unknown") is None


async def test_dollars_since_count_todays_readings_and_running_boxes(store: Store) -> None:
    runs = [
        await created(store, make_run(number, state=state))
        for number, state in ((1, RunState.WORKING), (2, RunState.ARCHIVED), (3, RunState.IDLE))
    ]
    other = await created(store, make_run(4, repo_id=999, repo="Codertocat/other"))
    readings = [
        (runs[0], 1.25, False, START - DAY_SECONDS),  # running, read yesterday: still counts
        (runs[1], 2.0, True, START - 60),  # stopped today
        (runs[2], 4.0, True, START - DAY_SECONDS),  # stopped yesterday: not today's
        (other, 0.5, False, START),
    ]
    for run, dollars, final, read_at in readings:
        report = BoxReport(run.id, "bx_x", 4242, run.repo_id, dollars=dollars, final=final)
        await store.save_box_report(replace(report, read_at=read_at))
    elsewhere = await created(store, make_run(5, installation_id=7, repo_id=1))
    await store.save_box_report(BoxReport(elsewhere.id, "bx_y", 7, 1, dollars=9.0, read_at=START))

    since = START - 3600
    assert await store.dollars_since(since, 4242) == 3.75
    assert await store.dollars_since(since, 4242, 186853002) == 3.25
    assert await store.dollars_since(since, 1) == 0.0
