"""The Box simulator over raw HTTP: envelopes, paging, state machine, limits, faults, agent."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import box_fixtures
import pytest
from box_fixtures import API_KEY, WAIT_SECONDS

from bot.sim.box import BoxSimulator, BoxTimings
from bot.sim.box_agent import Checkpoint, RunCommand, Say, Wait, success_script

sim, http = box_fixtures.sim, box_fixtures.http  # the shared fixtures, used here by name

BOX_ID = re.compile(r"^bx_[23456789abcdefghjkmnpqrstuvwxyz]{8}$")
ERROR_FIELDS = {"ok", "type", "status", "code", "message", "error", "requestId"}


class Api:
    """Raw calls to the simulator, returning status, JSON body and headers."""

    def __init__(self, http: aiohttp.ClientSession, sim: BoxSimulator) -> None:
        self.http, self.sim = http, sim

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        key: str = API_KEY,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        auth = {"Authorization": f"Bearer {key}", **(headers or {})}
        async with self.http.request(
            method, self.sim.base_url + path, headers=auth, **kwargs
        ) as response:
            return response.status, await response.json(), response.headers.copy()

    async def box(self, *, ready: bool = True, **body: Any) -> str:
        status, data, _ = await self("POST", "/boxes", json=body)
        assert status == 202, data
        if ready:
            async with asyncio.timeout(WAIT_SECONDS):
                await self.sim.wait_for_state(data["box"]["id"], "ready")
        return str(data["box"]["id"])

    async def run(self, box_id: str, prompt: str = "Do it", provider: str = "codex") -> str:
        status, data, _ = await self(
            "POST", f"/boxes/{box_id}/prompt", json={"provider": provider, "prompt": prompt}
        )
        assert status == 202, data
        async with asyncio.timeout(WAIT_SECONDS):
            await self.sim.wait_for_run(box_id, data["promptId"])
        return str(data["promptId"])


@pytest.fixture
def api(http: aiohttp.ClientSession, sim: BoxSimulator) -> Api:
    return Api(http, sim)


def cursor_of(event: dict[str, Any]) -> str:
    raw = f"{event['timestamp']}:{event['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- envelopes and auth ------------------------------------------------------------------


async def test_wrong_key_gets_a_401_envelope(api: Api) -> None:
    status, body, headers = await api("GET", "/boxes", key="box_live_nope")
    assert status == 401 and set(body) == ERROR_FIELDS
    assert (body["ok"], body["type"], body["status"], body["code"]) == (
        False,
        "box.error",
        401,
        "unauthorized",
    )
    assert body["error"] == {"code": "unauthorized", "message": body["message"], "status": 401}
    assert body["requestId"] == headers["X-Request-Id"] and body["requestId"].startswith("req_")


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/me", "user.info"),
        ("GET", "/limits", "limits.info"),
        ("GET", "/repos", "repos.list"),
        ("GET", "/boxes", "box.list"),
    ],
)
async def test_account_endpoints_answer_documented_types(
    api: Api, method: str, path: str, kind: str
) -> None:
    status, body, _ = await api(method, path)
    assert (status, body["ok"], body["type"]) == (200, True, kind)


async def test_requests_are_recorded(api: Api, sim: BoxSimulator) -> None:
    await api("POST", "/boxes?org=acme", json={"ttlSeconds": 60}, headers={"Idempotency-Key": "k1"})
    recorded = sim.requests[-1]
    assert (recorded.method, recorded.path, recorded.route) == (
        "POST",
        "/api/box/v1/boxes",
        "/boxes",
    )
    assert recorded.query == {"org": "acme"} and recorded.json == {"ttlSeconds": 60}
    assert recorded.headers["Idempotency-Key"] == "k1"


async def test_sunset_header_when_configured(api: Api, sim: BoxSimulator) -> None:
    _, _, before = await api("GET", "/me")
    sim.sunset = "Sat, 01 Jan 2028 00:00:00 GMT"
    _, _, after = await api("GET", "/me")
    assert "Sunset" not in before and after["Sunset"] == "Sat, 01 Jan 2028 00:00:00 GMT"


# -- boxes and the state machine ---------------------------------------------------------


async def test_create_box_then_provisioning_cloning_ready(api: Api, sim: BoxSimulator) -> None:
    sim.timings = BoxTimings(provisioning=0.02, cloning=0.02)
    states: list[str] = []
    status, body, _ = await api("POST", "/boxes", json={})
    box_id = body["box"]["id"]
    async with asyncio.timeout(WAIT_SECONDS):
        for state in ("cloning", "ready"):
            states.append((await sim.wait_for_state(box_id, state)).state)
    assert status == 202 and BOX_ID.match(box_id)
    assert (body["type"], body["status"], body["ttlSeconds"]) == (
        "box.created",
        "provisioning",
        3600,
    )
    assert body["box"]["state"] == "provisioning" and states == ["cloning", "ready"]
    _, info, _ = await api("GET", f"/boxes/{box_id}")
    assert info["type"] == "box.info" and info["box"]["desktopAvailable"] is True


@pytest.mark.parametrize("ttl", [0, 2_592_001, "1h", True])
async def test_invalid_ttl_is_rejected(api: Api, sim: BoxSimulator, ttl: object) -> None:
    status, body, _ = await api("POST", "/boxes", json={"ttlSeconds": ttl})
    assert (status, body["code"]) == (400, "invalid_ttl") and sim.boxes == {}


async def test_ttl_expiry_archives_the_box(api: Api, sim: BoxSimulator) -> None:
    sim.timings.ttl_scale = 0.001
    box_id = await api.box(ttlSeconds=50)
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "archived")
    assert sim.boxes[box_id].snapshot_available


async def test_update_box_name_and_ttl(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box(ready=False)
    status, body, _ = await api(
        "PATCH", f"/boxes/{box_id}", json={"name": "x" * 130, "ttlSeconds": None}
    )
    assert status == 200 and body["type"] == "box.info"
    assert body["box"]["name"] == "x" * 120 and body["box"]["archiveAfter"] is None
    status, body, _ = await api("PATCH", f"/boxes/{box_id}", json={"name": ""})
    assert (status, body["code"]) == (400, "invalid_name")


async def test_a_new_ttl_on_an_archived_box_waits_for_its_resume(
    api: Api, sim: BoxSimulator
) -> None:
    box_id = await api.box()
    await api("POST", f"/boxes/{box_id}/stop")
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "archived")
    status, body, _ = await api("PATCH", f"/boxes/{box_id}", json={"ttlSeconds": 50})
    assert status == 200 and body["box"]["state"] == "archived"
    assert body["box"]["archiveAfter"] is None and sim.boxes[box_id].ttl_task is None
    sim.timings.ttl_scale = 0.001
    _, resumed, _ = await api("POST", f"/boxes/{box_id}/resume")
    assert resumed["box"]["archiveAfter"] is not None
    async with asyncio.timeout(WAIT_SECONDS):  # the new TTL counts from the resume
        await sim.wait_for_state(box_id, "ready")
        await sim.wait_for_state(box_id, "archived")


async def test_stop_archives_then_resume_and_fork(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box()
    status, stop, _ = await api("POST", f"/boxes/{box_id}/stop")
    again_status, again, _ = await api("POST", f"/boxes/{box_id}/stop")
    assert (status, stop["type"], stop["status"], stop["box"]["state"]) == (
        202,
        "box.stopping",
        "archiving",
        "archiving",
    )
    assert again_status == 202 and again["status"] in ("archiving", "archived")
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "archived")
    status, fork, _ = await api("POST", f"/boxes/{box_id}/fork")
    assert (status, fork["type"], fork["status"]) == (202, "box.forking", "forking")
    assert fork["id"] == fork["box"]["id"] != box_id and BOX_ID.match(fork["id"])
    status, resume, _ = await api("POST", f"/boxes/{box_id}/resume")
    assert (status, resume["status"]) == (202, "provisioning")
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "ready")


async def test_resume_and_fork_need_an_archived_snapshot(api: Api) -> None:
    box_id = await api.box()
    resume_status, resume, _ = await api("POST", f"/boxes/{box_id}/resume")
    fork_status, fork, _ = await api("POST", f"/boxes/{box_id}/fork")
    assert (resume_status, resume["code"]) == (409, "box_not_archived")
    assert (fork_status, fork["code"]) == (409, "no_snapshot")


async def test_delete_needs_the_confirmation_header(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box(ready=False)
    status, body, _ = await api("DELETE", f"/boxes/{box_id}")
    assert (status, body["code"]) == (409, "confirmation_required")
    assert not sim.boxes[box_id].deleted
    status, body, _ = await api(
        "DELETE", f"/boxes/{box_id}", headers={"X-Ascii-Confirm-Delete": box_id}
    )
    assert (status, body["type"], body["operation"]["targetId"]) == (
        202,
        "deletion.operation",
        box_id,
    )
    assert re.fullmatch(r"bdop_[0-9a-f]{32}", body["operation"]["id"])
    status, body, _ = await api("GET", f"/boxes/{box_id}")
    assert (status, body["code"]) == (404, "box_not_found")


# -- paging ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("limit=x", "invalid_limit"),
        ("sort=up", "invalid_sort"),
        ("cursor=%%%", "invalid_cursor"),
    ],
)
async def test_bad_paging_parameters(api: Api, query: str, code: str) -> None:
    box_id = await api.box(ready=False)
    status, body, _ = await api("GET", f"/boxes/{box_id}/events?{query}")
    assert (status, body["code"]) == (400, code)


async def test_event_paging_accepts_server_and_client_cursors(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box()
    await api.run(box_id)
    _, everything, _ = await api("GET", f"/boxes/{box_id}/events?sort=asc&limit=200")
    events = everything["events"]
    _, first, _ = await api("GET", f"/boxes/{box_id}/events?sort=asc&limit=3")
    server_cursor = first["pageInfo"]["nextCursor"]
    _, by_server, _ = await api(
        "GET", f"/boxes/{box_id}/events", params={"sort": "asc", "cursor": server_cursor}
    )
    _, by_client, _ = await api(
        "GET", f"/boxes/{box_id}/events", params={"sort": "asc", "cursor": cursor_of(events[2])}
    )
    assert first["pageInfo"] == {"nextCursor": server_cursor, "hasMore": True, "limit": 3}
    assert server_cursor == cursor_of(events[2])
    assert by_server["events"] == by_client["events"] == events[3:]
    assert by_server["pageInfo"] == {"nextCursor": None, "hasMore": False, "limit": 100}
    assert everything["id"] == box_id and everything["type"] == "events.list"


async def test_events_default_to_newest_first_and_filter_by_type(api: Api) -> None:
    box_id = await api.box()
    await api.run(box_id)
    _, newest, _ = await api("GET", f"/boxes/{box_id}/events")
    _, only, _ = await api("GET", f"/boxes/{box_id}/events?type=prompt,git_checkpoint&sort=asc")
    stamps = [e["timestamp"] for e in newest["events"]]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == len(stamps)
    assert [e["type"] for e in only["events"]] == ["prompt", "git_checkpoint"]


async def test_page_info_can_be_left_out(api: Api, sim: BoxSimulator) -> None:
    sim.page_info = False
    box_id = await api.box()
    await api.run(box_id)
    answers = [
        await api("GET", f"/boxes/{box_id}/events?limit=2"),
        await api("GET", "/boxes"),
        await api("GET", "/repos"),
    ]
    assert [(status, "pageInfo" in body) for status, body, _ in answers] == [(200, False)] * 3
    assert len(answers[0][1]["events"]) == 2


async def test_boxes_list_pages_and_filters_by_state(api: Api) -> None:
    ready = await api.box()
    starting = await api.box(ready=False)
    _, page, _ = await api("GET", "/boxes?limit=1")
    _, rest, _ = await api(
        "GET", "/boxes", params={"limit": "1", "cursor": page["pageInfo"]["nextCursor"]}
    )
    _, filtered, _ = await api("GET", "/boxes?state=ready,idle")
    assert [b["id"] for b in page["boxes"] + rest["boxes"]] == [starting, ready]
    assert [b["id"] for b in filtered["boxes"]] == [ready]


# -- repositories ------------------------------------------------------------------------


async def test_repo_selection_is_account_wide_and_remembered_per_box(
    api: Api, sim: BoxSimulator
) -> None:
    web = sim.add_repo("acme/web", github_id=123456)
    api_repo = sim.add_repo("acme/api")
    await api("POST", "/repos", json={"repositoryId": web})
    first = await api.box(ready=False)
    status, body, _ = await api(
        "POST", "/repos", json={"repositoryId": api_repo, "baseBranch": "dev"}
    )
    second = await api.box(ready=False)
    assert web == "repo_acme_123456" and (status, body["type"]) == (200, "repos.updated")
    assert [(r["fullName"], r["baseBranch"]) for r in body["selectedRepositories"]] == [
        ("acme/web", "main"),
        ("acme/api", "dev"),
    ]
    assert sim.selected_at_create(first) == ["acme/web"]
    assert sim.selected_at_create(second) == ["acme/web", "acme/api"]
    status, body, _ = await api("POST", "/repos", json={"repositoryId": "repo_x_1"})
    assert (status, body["code"]) == (400, "invalid_repository")


async def test_repos_are_grouped_by_installation_and_filtered(api: Api, sim: BoxSimulator) -> None:
    selected = sim.add_repo("acme/web")
    sim.add_repo("acme/api")
    sim.add_repo("other/webapp", private=True)
    await api("POST", "/repos", json={"repositoryId": selected})
    _, body, _ = await api("GET", "/repos?q=WEB")
    _, unselected, _ = await api("GET", "/repos?selected=false")
    assert [
        (i["accountLogin"], [r["fullName"] for r in i["repositories"]])
        for i in body["installations"]
    ] == [("acme", ["acme/web"]), ("other", ["other/webapp"])]
    assert body["environmentId"] == "env_sim"
    assert [r["fullName"] for i in unselected["installations"] for r in i["repositories"]] == [
        "acme/api",
        "other/webapp",
    ]


# -- limits and idempotency --------------------------------------------------------------


async def test_active_box_cap(api: Api, sim: BoxSimulator) -> None:
    sim.max_active_boxes = 1
    await api.box(ready=False)
    status, body, _ = await api("POST", "/boxes", json={})
    _, limits, _ = await api("GET", "/limits")
    assert (status, body["code"], body["error"]["details"]) == (
        409,
        "active_box_limit",
        {"maxActiveBoxes": 1},
    )
    assert limits["canStart"] is False


async def test_creation_rate_limit_has_retry_after(api: Api, sim: BoxSimulator) -> None:
    sim.creation_rate_per_minute = 2
    await api.box(ready=False)
    await api.box(ready=False)
    status, body, headers = await api("POST", "/boxes", json={})
    assert (status, body["code"]) == (429, "rate_limited")
    assert 55 <= int(headers["Retry-After"]) <= 60 and len(sim.boxes) == 2


async def test_a_creation_rate_of_zero_refuses_every_start_with_429(
    api: Api, sim: BoxSimulator
) -> None:
    sim.creation_rate_per_minute = 0
    status, body, headers = await api("POST", "/boxes", json={})
    assert (status, body["code"], body["error"]["details"]) == (
        429,
        "rate_limited",
        {"retryAfter": 60},
    )
    assert headers["Retry-After"] == "60" and sim.boxes == {}


async def test_no_credit_gives_402(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box()
    sim.credit = False
    results = [
        await api("POST", "/boxes", json={}),
        await api("POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "x"}),
        await api("GET", f"/boxes/{box_id}/events"),
    ]
    assert [(s, b["code"]) for s, b, _ in results] == [(402, "insufficient_credit")] * 3
    _, limits, _ = await api("GET", "/limits")
    assert limits["canStart"] is False and limits["billingStatus"] == "payment_required"


async def test_provider_not_configured(api: Api, sim: BoxSimulator) -> None:
    sim.unconfigured_providers = {"claude-code"}
    box_id = await api.box()
    status, body, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "claude", "prompt": "x"}
    )
    assert (status, body["code"]) == (409, "provider_not_configured")
    assert body["error"]["details"] == {
        "provider": "claude-code",
        "setupUrl": "https://box.ascii.dev/dashboard?tab=agents",
    }


async def test_idempotency_key_replays_and_rejects_a_different_body(
    api: Api, sim: BoxSimulator
) -> None:
    key = {"Idempotency-Key": "run-42"}
    first = await api("POST", "/boxes", json={"ttlSeconds": 60}, headers=key)
    replay = await api("POST", "/boxes", json={"ttlSeconds": 60}, headers=key)
    other = await api("POST", "/boxes", json={"ttlSeconds": 61}, headers=key)
    assert first[0] == replay[0] == 202 and first[1] == replay[1]
    assert (other[0], other[1]["code"]) == (409, "idempotency_key_reused")
    assert len(sim.boxes) == 1


async def test_idempotency_key_in_progress(api: Api, sim: BoxSimulator) -> None:
    sim.timings.create_latency = 0.05
    key = {"Idempotency-Key": "run-43"}
    first, second = await asyncio.gather(
        api("POST", "/boxes", json={}, headers=key), api("POST", "/boxes", json={}, headers=key)
    )
    assert sorted([first[0], second[0]]) == [202, 409]
    assert {first[1].get("code"), second[1].get("code")} == {None, "idempotency_in_progress"}
    assert len(sim.boxes) == 1


class Clock:
    """A simulator clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("hold", [120.0, 5.0])
async def test_a_failed_create_frees_its_key_after_the_hold(
    api: Api, sim: BoxSimulator, hold: float
) -> None:
    sim.clock = clock = Clock()
    if hold != 120.0:
        sim.failed_key_hold_seconds = hold
    sim.credit = False
    key = {"Idempotency-Key": "run-44"}
    refused = await api("POST", "/boxes", json={}, headers=key)
    sim.credit = True
    clock.now += hold - 1
    early = await api("POST", "/boxes", json={}, headers=key)
    clock.now += 1
    created = await api("POST", "/boxes", json={}, headers=key)
    assert (refused[0], refused[1]["code"]) == (402, "insufficient_credit")
    assert (early[0], early[1]["code"]) == (409, "idempotency_in_progress")
    assert created[0] == 202 and len(sim.boxes) == 1


async def test_idempotency_keys_are_kept_for_24_hours(api: Api, sim: BoxSimulator) -> None:
    sim.clock = clock = Clock()
    key = {"Idempotency-Key": "run-45"}
    first = await api("POST", "/boxes", json={}, headers=key)
    clock.now += 24 * 3600 - 1
    replay = await api("POST", "/boxes", json={}, headers=key)
    clock.now += 1
    fresh = await api("POST", "/boxes", json={}, headers=key)
    assert first[1] == replay[1] and len(sim.boxes) == 2
    assert fresh[0] == 202 and fresh[1]["box"]["id"] != first[1]["box"]["id"]


@pytest.mark.parametrize(("length", "status"), [(255, 202), (256, 400), (0, 400)])
async def test_idempotency_key_length(
    api: Api, sim: BoxSimulator, length: int, status: int
) -> None:
    answer, body, _ = await api(
        "POST", "/boxes", json={}, headers={"Idempotency-Key": "k" * length}
    )
    assert answer == status and len(sim.boxes) == (1 if status == 202 else 0)
    if status == 400:
        assert body["code"] == "invalid_idempotency_key"


# -- fault injection ---------------------------------------------------------------------


async def test_faults_fail_n_times_then_pass(api: Api, sim: BoxSimulator) -> None:
    sim.inject_fault("GET", "/limits$", 503, times=2, retry_after=4)
    results = [await api("GET", "/limits") for _ in range(3)]
    assert [s for s, _, _ in results] == [503, 503, 200]
    assert results[0][2]["Retry-After"] == "4" and results[0][1]["code"] == "internal_error"


async def limits_statuses(http: aiohttp.ClientSession, seed: int, **fault: Any) -> list[int]:
    """Send 200 `GET /limits` to a fresh simulator with one fault; return the statuses."""
    simulator = BoxSimulator(API_KEY, seed=seed)
    await simulator.start()
    try:
        simulator.inject_fault("GET", "/limits$", 503, **fault)
        api = Api(http, simulator)
        statuses = [(await api("GET", "/limits"))[0] for _ in range(200)]
        assert (await api("GET", "/me"))[0] == 200  # other endpoints are not affected
        return statuses
    finally:
        await simulator.close()


async def test_a_fault_rate_fails_about_that_share_of_requests(
    http: aiohttp.ClientSession,
) -> None:
    first = await limits_statuses(http, 11, rate=0.1)
    again = await limits_statuses(http, 11, rate=0.1)
    other_seed = await limits_statuses(http, 12, rate=0.1)
    assert first == again and first != other_seed  # drawn from the seeded generator
    assert 5 <= first.count(503) <= 40 and first.count(503) + first.count(200) == 200
    assert first[first.index(503) + 1 :].count(503) > 0  # the fault stays in place


async def test_a_fault_rate_with_a_count_stops_after_that_many(
    http: aiohttp.ClientSession,
) -> None:
    statuses = await limits_statuses(http, 11, rate=0.5, times=3)
    assert statuses.count(503) == 3 and statuses[-100:] == [200] * 100


async def test_fault_after_the_effect_and_dropped_connections(api: Api, sim: BoxSimulator) -> None:
    sim.inject_fault("POST", "/boxes$", 500, after=True)
    status, _, _ = await api("POST", "/boxes", json={})
    sim.inject_fault("POST", "/boxes$", "drop")
    with pytest.raises(aiohttp.ClientConnectionError):
        await api("POST", "/boxes", json={})
    assert status == 500 and len(sim.boxes) == 1


async def test_latency_only_fault(api: Api, sim: BoxSimulator) -> None:
    sim.inject_fault("GET", "/me$", None, delay=0.3)
    quick = aiohttp.ClientTimeout(total=0.1)
    with pytest.raises(TimeoutError):
        await api("GET", "/me", timeout=quick)
    status, _, _ = await api("GET", "/me", timeout=quick)
    assert status == 200


# -- the scripted agent ------------------------------------------------------------------


async def test_prompt_needs_a_ready_box(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box(ready=False)
    status, body, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "x"}
    )
    assert (status, body["code"]) == (409, "box_starting")
    await api("POST", f"/boxes/{box_id}/stop")
    status, body, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "x"}
    )
    assert (status, body["code"]) == (409, "box_not_running")


async def test_prompt_run_lifecycle_and_box_states(api: Api, sim: BoxSimulator) -> None:
    box_id = await api.box()
    status, body, _ = await api(
        "POST",
        f"/boxes/{box_id}/prompt",
        json={"provider": "codex", "prompt": "Go", "model": "gpt-5.5", "reasoningEffort": "high"},
    )
    prompt_id = body["promptId"]
    assert (status, body["type"], body["id"], body["status"]) == (
        202,
        "prompt.queued",
        box_id,
        "queued",
    )
    assert body["promptRun"] == {
        **body["promptRun"],
        "id": prompt_id,
        "promptId": prompt_id,
        "boxId": box_id,
        "done": False,
        "model": "gpt-5.5",
    }
    async with asyncio.timeout(WAIT_SECONDS):
        assert (await sim.wait_for_state(box_id, "running")).state == "running"
        await sim.wait_for_run(box_id, prompt_id)
    _, run, _ = await api("GET", f"/boxes/{box_id}/prompts/{prompt_id}")
    assert run["type"] == "prompt.run" and run["promptRun"]["status"] == "finished"
    assert run["promptRun"]["done"] is True and sim.boxes[box_id].state == "idle"
    status, missing, _ = await api("GET", f"/boxes/{box_id}/prompts/prompt_nope")
    assert (status, missing["code"]) == (404, "prompt_not_found")


async def test_success_script_events(api: Api, sim: BoxSimulator) -> None:
    sim.add_repo("acme/web")
    await api("POST", "/repos", json={"repositoryId": "repo_acme_100000"})
    box_id = await api.box()
    prompt_id = await api.run(box_id, "Fix issue #3 on branch box/issue-3")
    events = sim.boxes[box_id].events
    kinds = [
        (e["type"], bool(e["data"].get("is_streaming")), bool(e["data"].get("tools")))
        for e in events
    ]
    checkpoint = next(e["data"] for e in events if e["type"] == "git_checkpoint")
    subdomain = sim.boxes[box_id].subdomain
    assert events[0] == {
        "id": prompt_id,
        "type": "prompt",
        "timestamp": events[0]["timestamp"],
        "taskId": prompt_id,
        "data": {
            "prompt": "Fix issue #3 on branch box/issue-3",
            "status": "finished",
            "is_reverted": False,
        },
    }
    assert kinds[1:4] == [("response", True, False)] * 2 + [("response", False, False)]
    assert checkpoint["branch"] == "box/issue-3" and checkpoint["pushed"] is True
    assert (
        checkpoint["commitUrl"] == f"https://github.com/acme/web/commit/{checkpoint['commitSha']}"
    )
    assert events[-1]["data"]["content"].endswith(f"Preview: https://{subdomain}-3000.on.ascii.dev")


async def test_default_branch_and_custom_scripts(api: Api, sim: BoxSimulator) -> None:
    sim.scripts["custom"] = [*success_script(extra_commands=3)[:-1], Say("bye")]
    sim.script_rules["[custom]"] = "custom"
    box_id = await api.box()
    await api.run(box_id, "[custom] tidy up")
    events = sim.boxes[box_id].events
    tool_events = [e for e in events if e["data"].get("tools")]
    assert len(tool_events) == 3 + 3
    assert next(e for e in events if e["type"] == "git_checkpoint")["data"]["branch"] == "box/work"
    assert events[-1]["data"]["content"] == "bye"


async def test_failure_script(api: Api, sim: BoxSimulator) -> None:
    sim.default_script = "failure"
    box_id = await api.box()
    prompt_id = await api.run(box_id)
    run = sim.boxes[box_id].runs[prompt_id]
    tool = next(e for e in sim.boxes[box_id].events if e["data"].get("tools"))["data"]["tools"][0]
    assert run.status == "failed" and tool["result"]["is_error"] is True
    assert '"exitCode": 1' in tool["result"]["content"]


async def test_interrupt_and_queued_prompts(api: Api, sim: BoxSimulator) -> None:
    sim.default_script = "interrupt"
    box_id = await api.box()
    _, first, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "long"}
    )
    _, second, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "next"}
    )
    assert second["promptRun"]["status"] == "queued"
    status, body, _ = await api("POST", f"/boxes/{box_id}/interrupt")
    runs = sim.boxes[box_id].runs
    assert (status, body) == (
        200,
        {"ok": True, "type": "box.interrupted", "id": box_id, "status": "interrupted"},
    )
    assert [runs[p["promptId"]].status for p in (first, second)] == ["interrupted"] * 2
    status, body, _ = await api("POST", f"/boxes/{box_id}/interrupt")
    assert (status, body["code"]) == (409, "no_running_turn")


async def test_a_prompt_sent_while_running_runs_next(api: Api, sim: BoxSimulator) -> None:
    sim.scripts["slow"] = [RunCommand("make build"), Wait(0.05), Say("first done")]
    sim.script_rules["slow"] = "slow"
    box_id = await api.box()
    _, first, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "slow"}
    )
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "running")
    _, queued, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "quick"}
    )
    assert queued["promptRun"]["status"] == "queued"
    async with asyncio.timeout(WAIT_SECONDS):
        second = (await sim.wait_for_run(box_id, queued["promptId"])).id
    assert sim.boxes[box_id].runs[first["promptId"]].status == "finished"
    prompts = [e["id"] for e in sim.boxes[box_id].events if e["type"] == "prompt"]
    assert prompts == [first["promptId"], second]


async def test_agent_event_hook_sees_every_event(api: Api, sim: BoxSimulator) -> None:
    seen: list[tuple[str, str, str | None]] = []

    async def hook(box_id: str, event: dict[str, Any]) -> None:
        seen.append((box_id, event["type"], event["data"].get("status")))

    sim.on_agent_event = hook
    sim.scripts["tiny"] = [Checkpoint(pushed=True)]
    sim.default_script = "tiny"
    box_id = await api.box()
    await api.run(box_id)
    assert seen == [
        (box_id, "prompt", "queued"),
        (box_id, "prompt", "running"),
        (box_id, "git_checkpoint", None),
        (box_id, "prompt", "finished"),
    ]


async def test_desktop_and_host(api: Api, sim: BoxSimulator) -> None:
    starting = await api.box(ready=False)
    _, early, _ = await api("POST", f"/boxes/{starting}/desktop", json={})
    box_id = await api.box()
    _, desktop, _ = await api("POST", f"/boxes/{box_id}/desktop?vnc=1", json={})
    _, hosted, _ = await api("POST", f"/boxes/{box_id}/host", json={"port": 3000})
    _, same, _ = await api("POST", f"/boxes/{box_id}/host", json={"port": 3000, "public": True})
    status, bad, _ = await api("POST", f"/boxes/{box_id}/host", json={"port": 70000})
    subdomain = sim.boxes[box_id].subdomain
    assert early["provisioning"] is True and early["desktopUrl"] is None
    assert (desktop["type"], desktop["mode"]) == ("desktop.url", "vnc")
    assert desktop["desktopUrl"].startswith(
        f"https://{subdomain}-desktop.on.ascii.dev/vnc.html?token="
    )
    assert hosted["url"].startswith(f"https://{subdomain}-3000.on.ascii.dev?_token=")
    assert same["url"] == hosted["url"] and same["isProtected"] is True
    assert (status, bad["code"]) == (400, "invalid_port")


async def test_host_can_be_switched_off(http: aiohttp.ClientSession, sim: BoxSimulator) -> None:
    sim.host_supported = False
    api = Api(http, sim)
    box_id = await api.box(ready=False)
    async with http.post(
        f"{sim.base_url}/boxes/{box_id}/host",
        json={"port": 1},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as response:
        assert response.status == 404 and response.content_type == "text/plain"


async def test_close_cancels_running_work(http: aiohttp.ClientSession) -> None:
    simulator = BoxSimulator(API_KEY, timings=BoxTimings(provisioning=0, cloning=0))
    simulator.default_script = "interrupt"
    await simulator.start()
    api = Api(http, simulator)
    box_id = await api.box()
    await api("POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "x"})
    async with asyncio.timeout(WAIT_SECONDS):
        await simulator.close()
    task = simulator.boxes[box_id].run_task
    assert task is not None and task.cancelled()


async def test_failed_provisioning_ends_in_error(api: Api, sim: BoxSimulator) -> None:
    sim.provision_failure = True
    box_id = await api.box(ready=False)
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box_id, "error")
    status, body, _ = await api(
        "POST", f"/boxes/{box_id}/prompt", json={"provider": "codex", "prompt": "x"}
    )
    assert (status, body["code"]) == (409, "box_not_running")


# -- setup scripts, machine types, environments and usage ------------------------------


async def test_setup_script_runs_after_ready_and_can_fail(api: Api, sim: BoxSimulator) -> None:
    sim.setup_failures["npm ci"] = "exit code 1\nnpm ERR! missing package-lock.json"
    good = await api.box(setupScript="make deps")
    bad = await api.box(setupScript="npm ci")
    async with asyncio.timeout(WAIT_SECONDS):
        for box_id in (good, bad):
            await sim.wait_until(box_id, lambda b: b.setup_status in ("done", "failed"))
    _, first, _ = await api("GET", f"/boxes/{good}")
    _, second, _ = await api("GET", f"/boxes/{bad}")
    assert (first["box"]["setupStatus"], first["box"]["setupError"]) == ("done", None)
    assert (second["box"]["setupStatus"], second["box"]["setupError"]) == (
        "failed",
        "exit code 1\nnpm ERR! missing package-lock.json",
    )
    plain = await api.box()
    _, third, _ = await api("GET", f"/boxes/{plain}")
    assert third["box"]["setupStatus"] is None and third["box"]["environment"] == "base"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"setupScript": 5}, "invalid_setup_script"),
        ({"setupScript": "x" * (64 * 1024 + 1)}, "invalid_setup_script"),
        ({"environment": "nope"}, "unknown_environment"),
        ({"env": {"BOX_ID": "x"}}, "invalid_env"),
        ({"env": {"1A": "x"}}, "invalid_env"),
        ({"env": {f"V{n}": "x" for n in range(101)}}, "invalid_env"),
        ({"env": {"A": 1}}, "invalid_env"),
        ({"type": "huge"}, "invalid_type"),
    ],
)
async def test_create_fields_are_checked(
    api: Api, sim: BoxSimulator, body: dict[str, Any], code: str
) -> None:
    status, answer, _ = await api("POST", "/boxes", json=body)
    assert (status, answer["code"], answer["error"]["code"]) == (400, code, code)
    assert sim.boxes == {}


async def test_type_environment_and_env_are_kept(api: Api, sim: BoxSimulator) -> None:
    sim.environments.add("web")
    box_id = await api.box(type="large", environment="web", env={"NODE_ENV": "test"})
    _, info, _ = await api("GET", f"/boxes/{box_id}")
    assert (info["box"]["type"], info["box"]["billingMultiplier"]) == ("large", 2.0)
    assert info["box"]["environment"] == "web" and sim.boxes[box_id].env == {"NODE_ENV": "test"}


async def test_usage_follows_the_clock_and_stops_once_archived(api: Api, sim: BoxSimulator) -> None:
    now = [1000.0]
    sim.clock = lambda: now[0]
    sim.seconds_per_dollar = 100.0
    small = await api.box(type="small")
    large = await api.box(type="large")
    now[0] += 50.0
    _, usage, _ = await api("GET", f"/boxes/{large}/usage")
    assert usage == {
        "ok": True,
        "type": "box.usage",
        "boxId": large,
        "boxType": "large",
        "billingMultiplier": 2.0,
        "since": usage["since"],
        "until": usage["until"],
        "seconds": 50.0,
        "dollars": 1.0,
        "secondsPerDollar": 100.0,
        "running": True,
    }
    _, cheap, _ = await api("GET", f"/boxes/{small}/usage")
    assert (cheap["seconds"], cheap["dollars"]) == (50.0, 0.25)
    await api("POST", f"/boxes/{large}/stop")
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(large, "archived")
    now[0] += 500.0
    _, stopped, _ = await api("GET", f"/boxes/{large}/usage")
    assert (stopped["seconds"], stopped["dollars"], stopped["running"]) == (50.0, 1.0, False)


async def test_an_older_box_has_no_usage_endpoint(api: Api, sim: BoxSimulator) -> None:
    sim.usage_supported = False
    box_id = await api.box()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with api.http.get(f"{sim.base_url}/boxes/{box_id}/usage", headers=headers) as answer:
        assert answer.status == 404
