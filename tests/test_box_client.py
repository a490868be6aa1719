"""The Box API client against the simulator: every call, error, retry rule and the repo lock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from datetime import UTC, datetime

import aiohttp
import box_fixtures
import pytest
from box_fixtures import (
    API_KEY,
    WAIT_SECONDS,
    FakeTime,
    finished_run,
    make_client,
    ready_box,
    wait_run,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.box.client import DEFAULT_RETRY_BUDGET_SECONDS, DEFAULT_TIMEOUT, KEEP, BoxClient
from bot.box.errors import (
    BoxAPIError,
    BoxAuthError,
    BoxBillingError,
    BoxConflictError,
    BoxNotFoundError,
    BoxNotSupportedError,
    BoxPromptUnknownError,
    BoxRateLimitedError,
    BoxRepoNotAvailableError,
    BoxServerError,
    BoxUnavailableError,
    parse_retry_after,
)
from bot.box.models import (
    TERMINAL_PROMPT_STATUSES,
    BoxEvent,
    BoxSetup,
    GitCheckpointEvent,
    PromptDelivery,
    PromptEvent,
    ResponseEvent,
    UnknownEvent,
    event_cursor,
    parse_event,
)
from bot.redact import redact, strip_token_query
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Emit, Say, success_script

# The shared fixtures, used here by name.
sim, http, fake_time, client = (
    box_fixtures.sim,
    box_fixtures.http,
    box_fixtures.fake_time,
    box_fixtures.client,
)

BOX_ID = re.compile(r"^bx_[23456789abcdefghjkmnpqrstuvwxyz]{8}$")


# -- account and repositories ------------------------------------------------------------


async def test_me_and_limits(sim: BoxSimulator, client: BoxClient) -> None:
    sim.max_active_boxes = 3
    user = await client.me()
    limits = await client.limits()
    assert user.login == "box-bot-dev"
    assert (limits.can_start, limits.active_boxes, limits.max_active_boxes) == (True, 0, 3)
    assert limits.raw["activeStates"] == ["provisioned", "cloning", "ready", "idle", "running"]


async def test_list_repos_filters_and_pages(sim: BoxSimulator, client: BoxClient) -> None:
    for name in ("acme/web", "acme/api", "acme/docs", "other/website"):
        sim.add_repo(name)
    first = await client.list_repos(q="WEB", limit=1)
    second = await client.list_repos(q="WEB", limit=1, cursor=first.next_cursor)
    assert [r.full_name for r in first.repositories + second.repositories] == [
        "acme/web",
        "other/website",
    ]
    assert first.has_more and not second.has_more
    assert sim.requests[-1].query == {"q": "WEB", "limit": "1", "cursor": first.next_cursor}


async def test_list_repos_sorts_and_asks_for_a_sync(sim: BoxSimulator, client: BoxClient) -> None:
    for name in ("acme/api", "acme/web", "acme/docs"):
        sim.add_repo(name)
    page = await client.list_repos(sort="desc", sync=True)
    assert [r.full_name for r in page.repositories] == ["acme/web", "acme/docs", "acme/api"]
    assert sim.requests[-1].query == {"sort": "desc", "sync": "true"}


async def test_select_repo_is_idempotent_and_updates_base_branch(
    sim: BoxSimulator, client: BoxClient
) -> None:
    repo_id = sim.add_repo("acme/web")
    await client.select_repo(repo_id)
    selection = await client.select_repo(repo_id, "dev")
    assert [(s.full_name, s.base_branch) for s in selection.selected] == [("acme/web", "dev")]
    assert sim.requests[-1].json == {"repositoryId": repo_id, "baseBranch": "dev"}


# -- boxes -------------------------------------------------------------------------------


async def test_create_box_sends_ttl_and_idempotency_key(
    sim: BoxSimulator, client: BoxClient
) -> None:
    box = await client.create_box(ttl_seconds=600, idempotency_key="run-1")
    request = sim.requests[-1]
    assert BOX_ID.match(box.id) and box.state == "provisioning"
    assert request.json == {"ttlSeconds": 600}
    assert request.headers["Idempotency-Key"] == "run-1"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_get_and_list_boxes_with_state_filter_and_paging(
    sim: BoxSimulator, client: BoxClient
) -> None:
    ready = await ready_box(sim, client)
    starting = await client.create_box()
    assert (await client.get_box(ready.id)).state == "ready"
    only_ready = await client.list_boxes(state=["ready", "idle"])
    first = await client.list_boxes(limit=1)
    second = await client.list_boxes(limit=1, cursor=first.next_cursor)
    assert [b.id for b in only_ready.boxes] == [ready.id]
    assert [b.id for b in first.boxes + second.boxes] == [starting.id, ready.id]
    assert sim.requests_to("GET", "^/boxes$")[0].query == {"state": "ready,idle"}


async def test_update_box_sends_only_given_fields(sim: BoxSimulator, client: BoxClient) -> None:
    box = await client.create_box()
    renamed = await client.update_box(box.id, name="acme/web#12")
    forever = await client.update_box(box.id, ttl_seconds=None)
    assert [r.json for r in sim.requests_to("PATCH", "")] == [
        {"name": "acme/web#12"},
        {"ttlSeconds": None},
    ]
    assert renamed.name == "acme/web#12" and forever.archive_after is None
    with pytest.raises(BoxAPIError) as caught:
        await client.update_box(box.id, name="", ttl_seconds=KEEP)
    assert (caught.value.status, caught.value.code) == (400, "invalid_name")


@pytest.mark.parametrize(("mode", "status"), [("operation", "completed"), ("deleted", "deleted")])
async def test_delete_box_confirms_and_accepts_200_and_202(
    sim: BoxSimulator, client: BoxClient, mode: str, status: str
) -> None:
    sim.delete_mode = mode  # type: ignore[assignment]
    box = await client.create_box()
    deletion = await client.delete_box(box.id)
    assert sim.requests[-1].headers["X-Ascii-Confirm-Delete"] == box.id
    assert (deletion.box_id, deletion.status) == (box.id, status)
    assert (deletion.operation_id or "bdop_").startswith("bdop_")
    with pytest.raises(BoxNotFoundError):
        await client.get_box(box.id)


async def test_stop_resume_and_fork(sim: BoxSimulator, client: BoxClient) -> None:
    box = await ready_box(sim, client)
    stopping = await client.stop_box(box.id)
    async with asyncio.timeout(5):
        await sim.wait_for_state(box.id, "archived")
    fork = await client.fork_box(box.id, "fork-1")
    resumed = await client.resume_box(box.id, ttl_seconds=120)
    assert (stopping.type, stopping.status) == ("box.stopping", "archiving")
    assert BOX_ID.match(fork.id) and fork.id != box.id
    assert sim.selected_at_create(fork.id) == sim.selected_at_create(box.id)
    assert sim.requests_to("POST", "/fork$")[0].headers["Idempotency-Key"] == "fork-1"
    assert resumed.box is not None and resumed.box.state == "provisioning"
    assert sim.requests_to("POST", "/resume$")[0].json == {"ttlSeconds": 120}


async def test_start_box_selects_repo_and_caches_its_database_id(
    sim: BoxSimulator, client: BoxClient
) -> None:
    repo_id = sim.add_repo("Acme/Web")
    box, selected = await client.start_box("acme/web", idempotency_key="run-1", base_branch="dev")
    again, _ = await client.start_box("acme/web", idempotency_key="run-2")
    assert (selected.database_id, selected.full_name, selected.base_branch) == (
        repo_id,
        "Acme/Web",
        "dev",
    )
    assert sim.selected_at_create(box.id) == sim.selected_at_create(again.id) == ["Acme/Web"]
    assert len(sim.requests_to("GET", "^/repos$")) == 1


async def test_a_refused_cached_repo_id_is_looked_up_again(
    sim: BoxSimulator, client: BoxClient
) -> None:
    old = sim.add_repo("acme/web", github_id=111)
    await client.start_box("acme/web")
    del sim.repos[old]  # the repository was reinstalled and got a new id
    sim.selected.clear()
    new = sim.add_repo("acme/web", github_id=222)
    started = await client.start_box("acme/web")
    assert started.repo.database_id == new
    assert [r.json["repositoryId"] for r in sim.requests_to("POST", "^/repos$")] == [old, old, new]
    assert len(sim.requests_to("GET", "^/repos$")) == 2
    assert sim.selected_at_create(started.box.id) == ["acme/web"]


async def test_a_refused_fresh_repo_id_is_an_error_and_not_cached(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.add_repo("acme/web")
    sim.inject_fault("POST", "^/api/box/v1/repos$", 400)
    with pytest.raises(BoxAPIError) as caught:
        await client.start_box("acme/web")
    await client.start_box("acme/web")
    assert caught.value.status == 400
    assert len(sim.requests_to("GET", "^/repos$")) == 2 and len(sim.boxes) == 1


async def test_start_box_for_unknown_repo(sim: BoxSimulator, client: BoxClient) -> None:
    sim.add_repo("acme/website")
    with pytest.raises(BoxRepoNotAvailableError):
        await client.start_box("acme/web")
    assert sim.requests_to("POST", "^/boxes$") == []


@pytest.mark.parametrize("replaces", [False, True])
async def test_concurrent_start_box_each_box_gets_its_own_repo(
    sim: BoxSimulator, client: BoxClient, replaces: bool
) -> None:
    sim.selection_replaces = replaces
    sim.add_repo("acme/web")
    sim.add_repo("acme/api")
    sim.inject_fault("POST", "/boxes$", None, times=2, delay=0.05)
    web, api = await asyncio.gather(
        client.start_box("acme/web", idempotency_key="a"),
        client.start_box("acme/api", idempotency_key="b"),
    )
    first, second = (web, api) if next(iter(sim.boxes)) == web.box.id else (api, web)
    own = [first.repo.full_name, second.repo.full_name]
    # Selection adds, so the second box also has the first repo selected (unless it replaces).
    expected = [(first, own[:1]), (second, own[1:] if replaces else own)]
    assert (web.repo.full_name, api.repo.full_name) == ("acme/web", "acme/api")
    for started, names in expected:
        assert sim.selected_at_create(started.box.id) == names
        assert [s.full_name for s in started.selected] == names


async def test_without_the_account_lock_the_race_picks_the_wrong_repo(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    unlocked = make_client(sim, http, fake_time, account_lock=contextlib.nullcontext())
    sim.add_repo("acme/web")
    sim.add_repo("acme/api")
    sim.inject_fault("POST", "/boxes$", None, times=2, delay=0.05)
    results = await asyncio.gather(unlocked.start_box("acme/web"), unlocked.start_box("acme/api"))
    selections = [sim.selected_at_create(started.box.id) for started in results]
    assert selections == [["acme/web", "acme/api"]] * 2  # both created after both selections


# -- agent work --------------------------------------------------------------------------


async def test_prompt_sends_body_and_returns_the_run(sim: BoxSimulator, client: BoxClient) -> None:
    box = await ready_box(sim, client)
    result = await client.prompt(box.id, "Fix it", "claude-code", "opus", "high")
    assert result.delivery is PromptDelivery.SENT and result.attempts == 1
    assert (result.run.box_id, result.run.status, result.run.done) == (box.id, "queued", False)
    assert sim.requests_to("POST", "/prompt$")[0].json == {
        "provider": "claude-code",
        "prompt": "Fix it",
        "model": "opus",
        "reasoningEffort": "high",
    }
    run = await finished_run(sim, client, box.id, "Fix it again")
    assert run.status == "finished" and run.done and run.terminal


async def test_events_of_a_successful_run_are_typed(sim: BoxSimulator, client: BoxClient) -> None:
    sim.add_repo("acme/web")
    box, _ = await client.start_box("acme/web")
    async with asyncio.timeout(5):
        await sim.wait_for_state(box.id, "ready")
    run = await finished_run(sim, client, box.id, "Fix #12 on box/issue-12, then print Preview")
    events = [e async for e in client.iter_events(box.id)]
    prompt = events[0]
    partials = [e for e in events if isinstance(e, ResponseEvent) and e.is_streaming]
    tools = [t for e in events if isinstance(e, ResponseEvent) for t in e.tools]
    checkpoint = next(e for e in events if isinstance(e, GitCheckpointEvent))
    final = events[-1]
    assert isinstance(prompt, PromptEvent) and prompt.status == "finished"
    assert prompt.id == run.prompt_id and {e.task_id for e in events} == {run.prompt_id}
    assert len(partials) == 2
    assert [(t.name, t.input["command"], t.exit_code) for t in tools][:2] == [
        ("Bash", "git checkout -b box/issue-12", 0),
        ("Bash", "pytest -q", 0),
    ]
    assert checkpoint.branch == "box/issue-12" and checkpoint.pushed
    assert checkpoint.commit_url == f"https://github.com/acme/web/commit/{checkpoint.commit_sha}"
    assert isinstance(final, ResponseEvent) and not final.is_streaming
    assert re.search(r"Preview: https://[a-z0-9-]+-3000\.on\.ascii\.dev$", final.content)


async def test_failed_run_and_unknown_events(sim: BoxSimulator, client: BoxClient) -> None:
    sim.scripts["odd"] = [Emit("usage_limit", {"resetAt": 5}), Say("ok")]
    sim.script_rules.update({"[odd]": "odd", "[failure]": "failure"})
    box = await ready_box(sim, client)
    failed = await finished_run(sim, client, box.id, "[failure] fix the tests")
    await finished_run(sim, client, box.id, "[odd] count to three")
    page = await client.events(box.id, types=["response", "usage_limit"], sort="asc")
    unknown = [e for e in page.events if isinstance(e, UnknownEvent)]
    tool = next(t for e in page.events if isinstance(e, ResponseEvent) for t in e.tools)
    assert failed.status == "failed" and failed.terminal
    assert (tool.exit_code, tool.is_error) == (1, True)
    assert [(e.type, e.data) for e in unknown] == [("usage_limit", {"resetAt": 5})]
    assert sim.requests[-1].query == {"type": "response,usage_limit", "sort": "asc"}


async def test_events_page_with_limit_sort_and_cursor(sim: BoxSimulator, client: BoxClient) -> None:
    box = await ready_box(sim, client)
    await finished_run(sim, client, box.id, "hello")
    newest = await client.events(box.id, limit=2)
    older = await client.events(box.id, limit=200, cursor=newest.next_cursor)
    everything = await client.events(box.id, sort="asc")
    assert newest.has_more and not older.has_more and older.next_cursor is None
    assert [e.id for e in newest.events + older.events] == [e.id for e in everything.events][::-1]


async def test_iter_events_resumes_after_the_tail_without_restarting(
    sim: BoxSimulator, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    await finished_run(sim, client, box.id, "first")
    seen = [e async for e in client.iter_events(box.id, page_size=3)]
    cursor = event_cursor(seen[-1])
    nothing_new = [e async for e in client.iter_events(box.id, cursor)]
    second = await finished_run(sim, client, box.id, "second")
    new = [e async for e in client.iter_events(box.id, cursor, page_size=4)]
    assert nothing_new == []
    assert new[0].id == second.prompt_id and {e.task_id for e in new} == {second.prompt_id}
    assert {e.id for e in new}.isdisjoint({e.id for e in seen})


@pytest.fixture
async def busy_box(sim: BoxSimulator, client: BoxClient) -> str:
    sim.scripts["busy"] = success_script(extra_commands=30)
    sim.default_script = "busy"
    box = await ready_box(sim, client)
    await finished_run(sim, client, box.id, "lots of tool calls")
    return box.id


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    page_size=st.one_of(st.integers(1, 12), st.integers(13, 200)),
    start=st.integers(-1, 40),
    types=st.sampled_from([None, ["response"], ["prompt", "git_checkpoint"]]),
    page_info=st.booleans(),
)
async def test_paging_yields_every_event_once_in_order(
    sim: BoxSimulator,
    client: BoxClient,
    busy_box: str,
    page_size: int,
    start: int,
    types: list[str] | None,
    page_info: bool,
) -> None:
    sim.page_info = page_info
    everything = sim.boxes[busy_box].events
    start = min(start, len(everything) - 1)
    cursor = None if start < 0 else event_cursor(parse_event(everything[start]))
    expected = [e["id"] for e in everything[start + 1 :] if types is None or e["type"] in types]
    seen = [
        e.id async for e in client.iter_events(busy_box, cursor, page_size=page_size, types=types)
    ]
    assert seen == expected


async def test_pages_without_page_info_go_on_while_full(
    sim: BoxSimulator, client: BoxClient, busy_box: str
) -> None:
    sim.page_info = False
    everything = sim.boxes[busy_box].events
    first = await client.events(busy_box, limit=5, sort="asc")
    rest = await client.events(busy_box, limit=200, sort="asc", cursor=first.next_cursor)
    assert first.has_more and first.next_cursor == event_cursor(first.events[-1])
    assert not rest.has_more and rest.next_cursor is None
    assert [e.id for e in first.events + rest.events] == [e["id"] for e in everything]


async def test_resolving_a_repo_asks_for_full_pages_without_page_info(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.page_info = False
    for n in range(3):
        sim.add_repo(f"acme/web-{n}")
    sim.add_repo("acme/web")
    repo = await client.resolve_repo("acme/web")
    assert repo.full_name == "acme/web"
    assert sim.requests_to("GET", "^/repos$")[0].query == {"q": "acme/web", "limit": "200"}


async def test_a_full_repo_page_without_page_info_is_not_taken_as_the_end(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.page_info = False
    for n in range(200):
        sim.add_repo(f"acme/web-{n:03}")
    with pytest.raises(BoxAPIError) as caught:
        await client.resolve_repo("acme/web")
    assert caught.value.code == "repo_list_incomplete"
    assert not isinstance(caught.value, BoxRepoNotAvailableError)


async def test_interrupt_stops_a_long_run(sim: BoxSimulator, client: BoxClient) -> None:
    sim.default_script = "interrupt"
    box = await ready_box(sim, client)
    result = await client.prompt(box.id, "long job", "codex")
    async with asyncio.timeout(5):
        await sim.wait_for_state(box.id, "running")
    action = await client.interrupt(box.id)
    run = await client.prompt_run(box.id, result.run.prompt_id)
    assert (action.type, action.status) == ("box.interrupted", "interrupted")
    assert run.status == "interrupted" and run.status in TERMINAL_PROMPT_STATUSES
    assert (await client.get_box(box.id)).state == "idle"


async def test_desktop_while_starting_then_ready(sim: BoxSimulator, client: BoxClient) -> None:
    starting = await client.create_box()
    early = await client.desktop(starting.id)
    box = await ready_box(sim, client)
    stream = await client.desktop(box.id)
    vnc = await client.desktop(box.id, vnc=True)
    assert early.provisioning and early.url is None
    assert stream.url is not None and "token=" in stream.url and not stream.provisioning
    assert vnc.mode == "vnc" and sim.requests[-1].query == {"vnc": "1"}


async def test_host_returns_url_and_is_idempotent(sim: BoxSimulator, client: BoxClient) -> None:
    box = await ready_box(sim, client)
    private = await client.host(box.id, 3000)
    again = await client.host(box.id, 3000)
    public = await client.host(box.id, 8080, public=True)
    assert private.url == again.url and "?_token=" in private.url and private.is_protected
    assert public.url.endswith("-8080.on.ascii.dev") and public.access == "public"
    assert sim.requests[-1].json == {"port": 8080, "public": True}


async def test_host_missing_endpoint_is_not_supported(sim: BoxSimulator, client: BoxClient) -> None:
    box = await client.create_box()
    sim.host_supported = False
    with pytest.raises(BoxNotSupportedError, match="not supported by this Box API"):
        await client.host(box.id, 3000)
    with pytest.raises(BoxNotFoundError) as caught:
        await client.host("bx_23456789", 3000)
    assert not isinstance(caught.value, BoxNotSupportedError)


# -- errors ------------------------------------------------------------------------------


async def test_auth_error_carries_the_envelope(
    sim: BoxSimulator, http: aiohttp.ClientSession
) -> None:
    wrong = BoxClient(http, sim.base_url, "box_live_wrongwrongwrong")
    with pytest.raises(BoxAuthError) as caught:
        await wrong.me()
    error = caught.value
    assert (error.status, error.code) == (401, "unauthorized")
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert error.message == "Missing or invalid API key."
    assert len(sim.requests) == 1


async def test_forbidden_is_an_auth_error(sim: BoxSimulator, client: BoxClient) -> None:
    sim.inject_fault("GET", "/me$", 403)
    with pytest.raises(BoxAuthError):
        await client.me()


async def test_no_credit_is_a_billing_error(sim: BoxSimulator, client: BoxClient) -> None:
    sim.credit = False
    with pytest.raises(BoxBillingError) as caught:
        await client.create_box(idempotency_key="k")
    assert caught.value.status == 402 and len(sim.requests) == 1


async def test_provider_not_configured_exposes_setup_url(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.unconfigured_providers = {"codex"}
    box = await ready_box(sim, client)
    with pytest.raises(BoxConflictError) as caught:
        await client.prompt(box.id, "hi", "codex")
    assert caught.value.code == "provider_not_configured"
    assert caught.value.details == {
        "provider": "codex",
        "setupUrl": "https://box.ascii.dev/dashboard?tab=agents",
    }
    assert len(sim.requests_to("POST", "/prompt$")) == 1


async def test_prompt_to_a_box_that_is_not_ready(sim: BoxSimulator, client: BoxClient) -> None:
    box = await client.create_box()
    with pytest.raises(BoxConflictError) as caught:
        await client.prompt(box.id, "hi", "codex")
    assert (caught.value.status, caught.value.code) == (409, "box_starting")


async def test_unknown_box_is_not_found(client: BoxClient) -> None:
    with pytest.raises(BoxNotFoundError) as caught:
        await client.get_box("bx_23456789")
    assert caught.value.code == "box_not_found"


@pytest.mark.parametrize(
    ("body", "content_type", "code", "message"),
    [
        (
            "<html><body>502 Bad Gateway</body></html>",
            "text/html",
            None,
            "<html><body>502 Bad Gateway</body></html>",
        ),
        (
            json.dumps({"error": "upstream_down", "message": "Try later", "retryable": True}),
            "application/json",
            "upstream_down",
            "Try later",
        ),
        ("", "text/plain", None, "Bad Gateway"),
    ],
)
async def test_non_envelope_error_bodies(
    sim: BoxSimulator,
    client: BoxClient,
    body: str,
    content_type: str,
    code: str | None,
    message: str,
) -> None:
    sim.inject_fault("POST", "/interrupt$", 502, body=body, content_type=content_type)
    with pytest.raises(BoxServerError) as caught:
        await client.interrupt("bx_23456789")
    assert (caught.value.status, caught.value.code, caught.value.message) == (502, code, message)
    assert caught.value.request_id is not None


async def test_a_redirect_is_an_error_and_is_not_followed(
    sim: BoxSimulator, client: BoxClient
) -> None:
    ok = json.dumps({"ok": True, "type": "user.info", "user": {"login": "elsewhere"}})
    sim.inject_fault(
        "GET",
        "/me$",
        307,
        body=ok,
        content_type="application/json",
        headers={"Location": sim.base_url + "/limits"},
    )
    with pytest.raises(BoxAPIError) as caught:
        await client.me()
    assert caught.value.status == 307 and type(caught.value) is BoxAPIError
    assert caught.value.message.startswith("unexpected redirect (HTTP 307) to http://")
    assert [r.route for r in sim.requests] == ["/me"]


async def test_a_2xx_answer_with_ok_false_is_an_error(sim: BoxSimulator, client: BoxClient) -> None:
    envelope = {
        "ok": False,
        "type": "box.error",
        "status": 409,
        "code": "box_not_running",
        "message": "The box is archived.",
        "error": {"code": "box_not_running", "message": "The box is archived.", "status": 409},
        "requestId": "req_0123",
    }
    sim.inject_fault("GET", "/me$", 200, body=json.dumps(envelope), content_type="application/json")
    with pytest.raises(BoxConflictError) as caught:
        await client.me()
    assert (caught.value.status, caught.value.code, caught.value.request_id) == (
        409,
        "box_not_running",
        "req_0123",
    )


async def test_bad_request_is_a_plain_api_error(client: BoxClient) -> None:
    with pytest.raises(BoxAPIError) as caught:
        await client.create_box(ttl_seconds=0)
    assert type(caught.value) is BoxAPIError
    assert (caught.value.status, caught.value.code) == (400, "invalid_ttl")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 5, 31, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5 and parse_retry_after("-1") is None
    assert parse_retry_after("Sun, 31 May 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- retries -----------------------------------------------------------------------------


async def test_get_is_retried_with_jittered_backoff(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime
) -> None:
    sim.inject_fault("GET", "/limits$", 500, times=2)
    await client.limits()
    assert len(sim.requests_to("GET", "/limits$")) == 3
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.5 and 0 <= fake_time.sleeps[1] <= 1.0


async def test_backoff_delays_spread_over_the_whole_range(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    jittered = make_client(sim, http, fake_time, rng=random.Random(5), max_retries=1)
    for _ in range(12):
        sim.inject_fault("GET", "/limits$", 500)
        await jittered.limits()
    delays = fake_time.sleeps
    # Full jitter: each first wait is drawn anew from [0, 0.5 s], not fixed, not only its top.
    assert len(delays) == 12 and len(set(delays)) == 12
    assert all(0 <= d <= 0.5 for d in delays)
    assert min(delays) < 0.125 and max(delays) > 0.375


async def test_a_fractional_retry_after_is_honoured(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime
) -> None:
    sim.inject_fault("GET", "/me$", 503, retry_after=1.5)
    await client.me()
    assert fake_time.sleeps == [1.5]


@pytest.mark.parametrize("fault", ["drop", 503, 429])
async def test_safe_calls_are_retried(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime, fault: int | str
) -> None:
    repo_id = sim.add_repo("acme/web")
    box = await ready_box(sim, client)
    routes = [
        ("GET", "/me$"),
        ("POST", "/repos$"),
        ("POST", "/stop$"),
        ("GET", "/events$"),
        ("DELETE", "/boxes/[^/]+$"),
    ]
    for method, path in routes:
        sim.inject_fault(method, path, fault)  # type: ignore[arg-type]
    await client.me()
    await client.select_repo(repo_id)
    await client.stop_box(box.id)
    await client.events(box.id)
    deletion = await client.delete_box(box.id)
    assert [len(sim.requests_to(m, p)) for m, p in routes] == [2] * 5
    assert len(fake_time.sleeps) == 5  # each repeat was the client's own, after its backoff
    assert not deletion.already_deleted and sim.boxes[box.id].deleted


async def test_timeouts_are_retried_for_gets(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    quick = make_client(sim, http, fake_time, timeout=aiohttp.ClientTimeout(total=0.2))
    sim.inject_fault("GET", "/me$", None, delay=0.5)
    assert (await quick.me()).login == "box-bot-dev"
    assert len(sim.requests_to("GET", "/me$")) == 2


async def test_default_timeouts_are_explicit_and_leave_room_for_retries(
    sim: BoxSimulator, http: aiohttp.ClientSession
) -> None:
    timeout = BoxClient(http, sim.base_url, API_KEY).timeout
    assert (timeout.total, timeout.connect, timeout.sock_connect) == (15, 5, 5)
    assert 3 * timeout.total <= DEFAULT_RETRY_BUDGET_SECONDS


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", "/me$", lambda c, b, r: c.me()),
        ("POST", "/repos$", lambda c, b, r: c.select_repo(r)),
        ("POST", "/stop$", lambda c, b, r: c.stop_box(b)),
    ],
)
async def test_a_timed_out_safe_call_is_retried_with_the_default_time_bounds(
    sim: BoxSimulator,
    http: aiohttp.ClientSession,
    client: BoxClient,
    method: str,
    path: str,
    call: object,
) -> None:
    # Real clock and sleep; the defaults scaled down so one attempt may take 0.25 s.
    scale = 0.25 / (DEFAULT_TIMEOUT.total or 1)
    real = BoxClient(
        http,
        sim.base_url,
        API_KEY,
        timeout=aiohttp.ClientTimeout(total=0.25, connect=(DEFAULT_TIMEOUT.connect or 1) * scale),
        retry_budget_seconds=DEFAULT_RETRY_BUDGET_SECONDS * scale,
        rng=random.Random(3),
    )
    repo_id = sim.add_repo("acme/web")
    box = await client.create_box()
    sim.inject_fault(method, path, None, delay=0.6)
    await call(real, box.id, repo_id)  # type: ignore[operator]
    assert len(sim.requests_to(method, path)) == 2


async def test_the_retry_budget_bounds_each_attempt(
    sim: BoxSimulator, http: aiohttp.ClientSession
) -> None:
    bounded = BoxClient(
        http,
        sim.base_url,
        API_KEY,
        timeout=aiohttp.ClientTimeout(total=30),
        retry_budget_seconds=0.3,
    )
    sim.inject_fault("GET", "/me$", None, delay=0.9)
    with pytest.raises(BoxUnavailableError) as caught:
        await bounded.me()
    assert caught.value.code == "timeout" and len(sim.requests_to("GET", "/me$")) == 1


async def test_retry_after_is_honoured(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime
) -> None:
    sim.inject_fault("GET", "/me$", 429, retry_after=3)
    await client.me()
    assert fake_time.sleeps == [3.0]


@pytest.mark.parametrize(("fault", "error"), [(500, BoxServerError), ("drop", BoxUnavailableError)])
async def test_retries_are_bounded_in_count(
    sim: BoxSimulator,
    http: aiohttp.ClientSession,
    fake_time: FakeTime,
    fault: int | str,
    error: type[BoxAPIError],
) -> None:
    bounded = make_client(sim, http, fake_time, max_retries=2)
    sim.inject_fault("GET", "/me$", fault, times=10)  # type: ignore[arg-type]
    with pytest.raises(error):
        await bounded.me()
    assert len(sim.requests_to("GET", "/me$")) == 3 and len(fake_time.sleeps) == 2


async def test_retries_are_bounded_in_time(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    bounded = make_client(sim, http, fake_time, retry_budget_seconds=30)
    sim.inject_fault("GET", "/me$", 503, times=5, retry_after=20)
    with pytest.raises(BoxServerError) as caught:
        await bounded.me()
    assert caught.value.retry_after == 20.0
    assert fake_time.sleeps == [20.0] and len(sim.requests_to("GET", "/me$")) == 2


async def test_connection_errors_become_unavailable_after_retries(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime
) -> None:
    box = await client.create_box()
    sim.inject_fault("POST", "/stop$", "drop", times=10)
    with pytest.raises(BoxUnavailableError) as caught:
        await client.stop_box(box.id)
    assert caught.value.status is None and caught.value.code == "connection_error"
    assert len(sim.requests_to("POST", "/stop$")) == 5 and len(fake_time.sleeps) == 4


async def test_creation_rate_limit_beyond_the_budget_is_not_waited_for(
    sim: BoxSimulator, client: BoxClient, fake_time: FakeTime
) -> None:
    sim.creation_rate_per_minute = 1
    await client.create_box(idempotency_key="one")
    with pytest.raises(BoxRateLimitedError) as caught:
        await client.create_box(idempotency_key="two")
    assert caught.value.retry_after is not None and 55 <= caught.value.retry_after <= 60
    assert fake_time.sleeps == [] and len(sim.requests_to("POST", "^/boxes$")) == 2


@pytest.mark.parametrize("fault", [500, "drop"])
@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("PATCH", "/boxes/[^/]+$", lambda c, b: c.update_box(b, name="x")),
        ("POST", "/resume$", lambda c, b: c.resume_box(b)),
        ("POST", "/interrupt$", lambda c, b: c.interrupt(b)),
        ("POST", "/desktop$", lambda c, b: c.desktop(b)),
        ("POST", "/host$", lambda c, b: c.host(b, 3000)),
        ("POST", "/fork$", lambda c, b: c.fork_box(b)),
        ("POST", "^/api/box/v1/boxes$", lambda c, b: c.create_box()),
    ],
)
async def test_unsafe_calls_are_not_retried(
    sim: BoxSimulator, client: BoxClient, method: str, path: str, call: object, fault: int | str
) -> None:
    box = await client.create_box()
    sim.inject_fault(method, path, fault, times=5)  # type: ignore[arg-type]
    before = len(sim.requests)
    with pytest.raises((BoxServerError, BoxUnavailableError)):
        await call(client, box.id)  # type: ignore[operator]
    assert len(sim.requests) - before == 1


@pytest.mark.parametrize("fault", [500, "drop"])
async def test_a_repeated_delete_that_finds_the_box_gone_says_it_was_deleted(
    sim: BoxSimulator, client: BoxClient, fault: int | str
) -> None:
    box = await client.create_box()
    sim.inject_fault("DELETE", "/boxes/[^/]+$", fault, after=True)  # type: ignore[arg-type]
    deletion = await client.delete_box(box.id)
    assert (deletion.box_id, deletion.status, deletion.already_deleted) == (
        box.id,
        "deleted",
        True,
    )
    assert len(sim.requests_to("DELETE", "")) == 2 and sim.boxes[box.id].deleted


async def test_deleting_an_unknown_box_is_still_not_found(client: BoxClient) -> None:
    with pytest.raises(BoxNotFoundError):
        await client.delete_box("bx_23456789")


async def test_create_replays_with_the_same_key_after_a_lost_answer(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.inject_fault("POST", "/boxes$", "drop", after=True)
    box = await client.create_box(idempotency_key="run-7")
    creates = sim.requests_to("POST", "^/boxes$")
    assert [r.headers["Idempotency-Key"] for r in creates] == ["run-7", "run-7"]
    assert list(sim.boxes) == [box.id]


async def test_fork_replays_with_the_same_key_after_a_server_error(
    sim: BoxSimulator, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    await client.stop_box(box.id)
    async with asyncio.timeout(5):
        await sim.wait_for_state(box.id, "archived")
    sim.inject_fault("POST", "/fork$", 500, after=True)
    fork = await client.fork_box(box.id, "fork-9")
    assert len(sim.requests_to("POST", "/fork$")) == 2
    assert set(sim.boxes) == {box.id, fork.id}


async def test_create_retries_while_the_same_key_is_in_progress(
    sim: BoxSimulator, client: BoxClient
) -> None:
    in_progress = {
        "ok": False,
        "type": "box.error",
        "status": 409,
        "code": "idempotency_in_progress",
        "message": "Still running.",
        "error": {"code": "idempotency_in_progress", "message": "Still running.", "status": 409},
        "requestId": "req_1",
    }
    sim.inject_fault(
        "POST", "/boxes$", 409, body=json.dumps(in_progress), content_type="application/json"
    )
    await client.create_box(idempotency_key="k")
    assert len(sim.requests_to("POST", "^/boxes$")) == 2


async def test_reused_idempotency_key_is_a_conflict(sim: BoxSimulator, client: BoxClient) -> None:
    await client.create_box(ttl_seconds=60, idempotency_key="k")
    with pytest.raises(BoxConflictError) as caught:
        await client.create_box(ttl_seconds=120, idempotency_key="k")
    assert caught.value.code == "idempotency_key_reused"
    assert len(sim.requests_to("POST", "^/boxes$")) == 2


# -- prompt: never sent twice ------------------------------------------------------------


@pytest.mark.parametrize("fault", [500, "drop"])
async def test_prompt_received_despite_an_error_is_not_sent_again(
    sim: BoxSimulator, client: BoxClient, fault: int | str
) -> None:
    box = await ready_box(sim, client)
    sim.inject_fault("POST", "/prompt$", fault, after=True)  # type: ignore[arg-type]
    result = await client.prompt(box.id, "Fix the bug", "codex")
    assert result.delivery is PromptDelivery.FOUND and result.attempts == 1
    assert len(sim.requests_to("POST", "/prompt$")) == 1
    assert list(sim.boxes[box.id].runs) == [result.run.prompt_id]


async def test_prompt_that_timed_out_after_arriving_is_not_sent_again(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    quick = make_client(sim, http, fake_time, timeout=aiohttp.ClientTimeout(total=0.2))
    box = await ready_box(sim, quick)
    sim.inject_fault("POST", "/prompt$", None, delay=0.5, after=True)
    result = await quick.prompt(box.id, "Fix the bug", "codex")
    assert result.delivery is PromptDelivery.FOUND
    assert len(sim.requests_to("POST", "/prompt$")) == 1


async def test_prompt_that_never_arrived_is_sent_again(
    sim: BoxSimulator, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    await finished_run(sim, client, box.id, "Fix the bug")
    sim.inject_fault("POST", "/prompt$", 503)
    result = await client.prompt(box.id, "Fix the bug", "codex")
    assert result.delivery is PromptDelivery.SENT and result.attempts == 2
    assert len(sim.requests_to("POST", "/prompt$")) == 3
    assert len(sim.boxes[box.id].runs) == 2
    await wait_run(sim, box.id, result.run.prompt_id)


async def test_prompt_is_not_resent_when_the_check_fails(
    sim: BoxSimulator, client: BoxClient
) -> None:
    async def break_events(box_id: str, event: dict[str, object]) -> None:
        sim.inject_fault("GET", "/events$", 500, times=20)

    box = await ready_box(sim, client)
    sim.on_agent_event = break_events
    sim.inject_fault("POST", "/prompt$", 500, after=True)
    with pytest.raises(BoxPromptUnknownError, match="unknown whether the prompt arrived") as caught:
        await client.prompt(box.id, "Fix", "codex")
    assert (caught.value.status, caught.value.code) == (500, "prompt_delivery_unknown")
    assert len(sim.requests_to("POST", "/prompt$")) == 1
    assert len(sim.requests_to("GET", "/events$")) == 1 + 5


def real_clock_client(
    sim: BoxSimulator, http: aiohttp.ClientSession, total: float, budget: float
) -> BoxClient:
    """A client on the real clock whose attempts time out after *total* seconds."""
    return BoxClient(
        http,
        sim.base_url,
        API_KEY,
        timeout=aiohttp.ClientTimeout(total=total),
        retry_budget_seconds=budget,
        rng=random.Random(3),
    )


async def test_a_timed_out_prompt_is_looked_for_even_with_no_budget_left(
    sim: BoxSimulator, http: aiohttp.ClientSession, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    spent = real_clock_client(sim, http, total=0.2, budget=0.2)
    sim.inject_fault("POST", "/prompt$", None, delay=0.5, after=True)
    result = await spent.prompt(box.id, "Fix the bug", "codex")
    assert result.delivery is PromptDelivery.FOUND and result.attempts == 1
    assert result.run.prompt_id == next(iter(sim.boxes[box.id].runs))
    assert len(sim.requests_to("POST", "/prompt$")) == 1


async def test_a_timed_out_prompt_that_never_arrived_is_sent_once_more(
    sim: BoxSimulator, http: aiohttp.ClientSession, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    real = real_clock_client(sim, http, total=0.2, budget=5)
    sim.inject_fault("POST", "/prompt$", "drop", delay=0.5)  # lost before it took effect
    result = await real.prompt(box.id, "Fix the bug", "codex")
    assert result.delivery is PromptDelivery.SENT and result.attempts == 2
    assert list(sim.boxes[box.id].runs) == [result.run.prompt_id]
    assert len(sim.requests_to("POST", "/prompt$")) == 2


async def test_a_prompt_is_sent_again_at_most_once(
    sim: BoxSimulator, http: aiohttp.ClientSession, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    real = real_clock_client(sim, http, total=2, budget=5)
    sim.inject_fault("POST", "/prompt$", 503, times=5)
    with pytest.raises(BoxServerError):
        await real.prompt(box.id, "Fix the bug", "codex")
    assert len(sim.requests_to("POST", "/prompt$")) == 2
    assert sim.boxes[box.id].runs == {}


async def test_find_prompt_takes_the_newest_match_after_a_bound(
    sim: BoxSimulator, client: BoxClient
) -> None:
    box = await ready_box(sim, client)
    old = await finished_run(sim, client, box.id, "Fix the bug")
    after_old = event_cursor(parse_event(sim.boxes[box.id].events[-1]))
    nothing_new = await client.find_prompt(box.id, "Fix the bug", after_old)
    between = datetime.now(UTC)
    new = await finished_run(sim, client, box.id, "Fix the bug")
    newest = await client.find_prompt(box.id, "Fix the bug")
    by_cursor = await client.find_prompt(box.id, "Fix the bug", after_old)
    by_time = await client.find_prompt(box.id, "Fix the bug", since=between)
    assert nothing_new is None and old.prompt_id != new.prompt_id
    assert newest is not None and by_cursor is not None and by_time is not None
    assert newest.prompt_id == by_cursor.prompt_id == by_time.prompt_id == new.prompt_id
    assert await client.find_prompt(box.id, "Fix the bug", since=datetime.now(UTC)) is None


# -- logging -----------------------------------------------------------------------------


async def test_sunset_header_is_logged_once(
    sim: BoxSimulator, client: BoxClient, caplog: pytest.LogCaptureFixture
) -> None:
    sim.sunset = "Sat, 01 Jan 2028 00:00:00 GMT"
    await client.me()
    await client.limits()
    warnings = [r for r in caplog.records if "Sunset" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "Sat, 01 Jan 2028 00:00:00 GMT" in warnings[0].getMessage()


async def test_logs_have_method_path_status_and_request_id(
    sim: BoxSimulator, client: BoxClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.box.client")
    await client.me()
    read = next(r for r in caplog.records if r.getMessage().startswith("Box API GET /me"))
    assert re.fullmatch(
        r"Box API GET /me -> 200 in \d+ ms requestId=req_[0-9a-f]{16}", read.getMessage()
    )
    assert read.levelno == logging.DEBUG  # polls would drown the log at INFO
    await client.select_repo(sim.add_repo("acme/logs"))
    write = next(r for r in caplog.records if r.getMessage().startswith("Box API POST /repos"))
    assert re.fullmatch(
        r"Box API POST /repos -> 200 in \d+ ms requestId=req_[0-9a-f]{16}", write.getMessage()
    )
    assert write.levelno == logging.INFO


async def test_logs_never_contain_secrets(
    sim: BoxSimulator, client: BoxClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.box.client")
    box = await ready_box(sim, client)
    secrets_seen = [
        (await client.desktop(box.id)).url,
        (await client.desktop(box.id, vnc=True)).url,
        (await client.host(box.id, 3000)).url,
        (await client.get_box(box.id)).desktop_url,
    ]
    leaky = "upstream https://x-desktop.on.ascii.dev/vnc.html?token=tok_LEAK123456 failed"
    sim.inject_fault("GET", "/events$", 502, body=leaky, times=10)
    with pytest.raises(BoxServerError) as caught:
        await client.events(box.id, limit=1)
    logged = "\n".join(r.getMessage() for r in caplog.records) + str(caught.value)
    values = [url.split("token=")[1] for url in secrets_seen if url]
    assert len(values) == 4 and "[redacted]" in logged and box.id in logged
    assert "desktop.on.ascii.dev" not in logged  # whole desktop URLs are masked
    for secret in [API_KEY, "tok_LEAK123456", *values]:
        assert secret not in logged
    assert "Bearer" not in logged


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "https://frazil-pneuma-rallye-desktop.on.ascii.dev/stream.html?token=Zx9_k2-Lq",
            "Zx9_k2-Lq",
        ),
        ("https://d.on.ascii.dev/vnc.html?autoconnect=1&token=abcDEF123&theme=dark", "abcDEF123"),
        (
            "Preview at https://frazil-pneuma-rallye-3000.on.ascii.dev?_token=s3cr3t-t0k",
            "s3cr3t-t0k",
        ),
        (f"Authorization: Bearer {API_KEY}", API_KEY),
        ("BOX_API_KEY=box_abcdefghij0123456789 was refused", "box_abcdefghij0123456789"),
        ("key box_live_Q2hhbmdlTWU9 rejected", "Q2hhbmdlTWU9"),
        (
            "https://frazil-pneuma-rallye-desktop.on.ascii.dev/t/Zk3v9QpL2mXc/vnc.html",
            "Zk3v9QpL2mXc",
        ),
        ("wss://quokka-desktop.on.ascii.dev/websockify/AbCdEf123456", "AbCdEf123456"),
        ("https://203.0.113.7:6080/s/9f8e7d6c5b4a/vnc_lite.html", "9f8e7d6c5b4a"),
        ("https://box.example/vnc.html?autoconnect=1&vnc_token=abc123XYZ", "abc123XYZ"),
        ("https://lumen-prism-talus-8080.on.ascii.dev/?preview_token=pv_77Hq", "pv_77Hq"),
        ('{"ok": true, "desktopUrl": "https://d.example/anything/else/here"}', "anything/else"),
        ('{"vncUrl":"https:\\/\\/d.example\\/s\\/k3yk3y"}', "k3yk3y"),
        ('{"secret": "whatever-it-is", "name": "x"}', "whatever-it-is"),
    ],
)
def test_redact_removes_tokens_from_real_looking_urls(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned and "[redacted]" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "409 box_not_archived: The box is running, not archived.",
        "409 box_starting; 502 box_direct_failed",
        "Preview: https://frazil-pneuma-rallye-3000.on.ascii.dev",
        "https://github.com/acme/web/commit/0123456789abcdef0123456789abcdef01234567",
        '{"desktopAvailable": true, "state": "ready"}',
    ],
)
def test_redact_leaves_what_is_not_secret(text: str) -> None:
    assert redact(text) == text


def test_strip_token_query_drops_every_token_parameter() -> None:
    url = "https://talus-3000.on.ascii.dev/app?_token=a1&page=2&vnc_token=b2"
    assert strip_token_query(url) == "https://talus-3000.on.ascii.dev/app?page=2"


def test_parse_event_keeps_unknown_fields_and_reads_exit_codes() -> None:
    raw = {
        "id": "r1",
        "type": "response",
        "timestamp": 5,
        "taskId": "p",
        "extra": 1,
        "data": {
            "content": "",
            "tools": [
                {
                    "use": {
                        "id": "c",
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {"command": "ls"},
                    },
                    "result": {
                        "type": "tool_result",
                        "tool_use_id": "c",
                        "is_error": True,
                        "content": [{"type": "text", "text": "boom\nExit code: 2"}],
                    },
                }
            ],
        },
    }
    event: BoxEvent = parse_event(raw)
    assert isinstance(event, ResponseEvent) and event.raw["extra"] == 1
    assert event.tools[0].exit_code == 2 and event.tools[0].result_content == "boom\nExit code: 2"
    assert event_cursor(event) == "NTpyMQ"
    assert isinstance(parse_event({"type": "git_checkpoint", "data": {}}), UnknownEvent)


async def test_start_box_sends_the_setup_machine_environment_and_env(
    sim: BoxSimulator, client: BoxClient
) -> None:
    sim.add_repo("Acme/Web")
    sim.environments.add("web")
    setup = BoxSetup(script="npm ci\n", machine="large", environment="web", env={"CI": "1"})

    box, _ = await client.start_box("acme/web", idempotency_key="run-1", setup=setup)

    (create,) = sim.requests_to("POST", "^/boxes$")
    assert create.json == {
        "ttlSeconds": 3600,
        "setupScript": "npm ci\n",
        "type": "large",
        "environment": "web",
        "env": {"CI": "1"},
    }
    assert (box.type, box.billing_multiplier, box.environment) == ("large", 2.0, "web")
    assert box.setup_status == "pending"


async def test_a_refused_setup_field_is_an_error_with_its_code(
    sim: BoxSimulator, client: BoxClient
) -> None:
    with pytest.raises(BoxAPIError) as caught:
        await client.create_box(setup=BoxSetup(environment="nope"))
    assert (caught.value.status, caught.value.code) == (400, "unknown_environment")


async def test_usage_reads_billed_time_and_dollars(sim: BoxSimulator, client: BoxClient) -> None:
    now = [50.0]
    sim.clock = lambda: now[0]
    sim.seconds_per_dollar = 720.0
    box = await client.create_box(setup=BoxSetup(machine="small"))
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box.id, "ready")
    now[0] += 360.0

    usage = await client.usage(box.id)

    assert (usage.box_id, usage.seconds, usage.dollars, usage.running) == (
        box.id,
        360.0,
        0.25,
        True,
    )
    assert (usage.billing_multiplier, usage.seconds_per_dollar) == (0.5, 720.0)
    assert usage.dollars_per_second == 0.5 / 720.0


async def test_usage_on_an_older_box_is_not_supported(sim: BoxSimulator, client: BoxClient) -> None:
    sim.usage_supported = False
    box = await client.create_box()
    with pytest.raises(BoxNotSupportedError):
        await client.usage(box.id)
    assert len(sim.requests_to("GET", "/usage$")) == 1
