"""GitHub App authentication against the GitHub simulator: JWTs and installation tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest

from bot.github.client import GitHubAppAuth
from bot.sim.github import GitHubSimulator
from bot.store.records import DeliveryStatus
from tests.conftest import INSTALLATION_ID, MAINTAINER, REPO, AppFactory
from tests.flow import commented


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[GitHubSimulator]:
    sim = GitHubSimulator(app_id=321, app_slug="box-bot", clock=clock)
    await sim.start()
    sim.add_installation(INSTALLATION_ID, "Codertocat")
    sim.add_repo(REPO, installation_id=INSTALLATION_ID)
    yield sim
    await sim.close()


@pytest.fixture
async def auth(sim: GitHubSimulator, clock: Clock) -> AsyncIterator[GitHubAppAuth]:
    async with aiohttp.ClientSession() as session:
        yield GitHubAppAuth(
            session,
            app_id="321",
            private_key=sim.private_key_pem,
            base_url=sim.base_url,
            clock=clock,
            write_interval=0.0,
        )


def token_mints(sim: GitHubSimulator) -> int:
    return len(sim.calls_to("POST", r"/app/installations/\d+/access_tokens"))


def test_app_jwt_claims(auth: GitHubAppAuth, sim: GitHubSimulator, clock: Clock) -> None:
    token = auth.app_jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        sim.public_key_pem,
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == "321"
    assert claims["iat"] == int(clock.now) - 60
    assert 0 < claims["exp"] - clock.now < 600


async def test_get_app_with_the_jwt(auth: GitHubAppAuth) -> None:
    info = await auth.app_client().getitem("/app")
    assert (info["id"], info["slug"]) == (321, "box-bot")


async def test_concurrent_requests_mint_one_token(
    auth: GitHubAppAuth, sim: GitHubSimulator
) -> None:
    tokens = await asyncio.gather(*(auth.installation_token(INSTALLATION_ID) for _ in range(20)))
    assert len(set(tokens)) == 1
    assert token_mints(sim) == 1
    gh = auth.installation_client(INSTALLATION_ID)
    await asyncio.gather(*(gh.getitem(f"/repos/{REPO}") for _ in range(10)))
    assert token_mints(sim) == 1


async def test_token_refreshed_five_minutes_before_expiry(
    auth: GitHubAppAuth, sim: GitHubSimulator, clock: Clock
) -> None:
    first = await auth.installation_token(INSTALLATION_ID)
    clock.now += 3600 - 301
    assert await auth.installation_token(INSTALLATION_ID) == first
    assert token_mints(sim) == 1
    clock.now += 2
    second = await auth.installation_token(INSTALLATION_ID)
    assert second != first
    assert token_mints(sim) == 2


async def test_rejected_token_is_minted_again_once(
    auth: GitHubAppAuth, sim: GitHubSimulator, clock: Clock
) -> None:
    gh = auth.installation_client(INSTALLATION_ID)
    await gh.getitem(f"/repos/{REPO}")
    sim.revoke_tokens(INSTALLATION_ID)
    repo = await gh.getitem(f"/repos/{REPO}")
    assert repo["full_name"] == REPO
    assert token_mints(sim) == 2


async def test_each_request_carries_the_pinned_api_version(
    auth: GitHubAppAuth, sim: GitHubSimulator
) -> None:
    await auth.installation_client(INSTALLATION_ID).getitem(f"/repos/{REPO}")
    call = sim.calls_to("GET", f"/repos/{REPO}$")[0]
    assert call.headers["x-github-api-version"] == "2022-11-28"
    assert call.headers["authorization"].startswith("token ghs_")


async def test_forgotten_installation_mints_a_new_token(
    auth: GitHubAppAuth, sim: GitHubSimulator
) -> None:
    await auth.installation_token(INSTALLATION_ID)
    auth.forget_installation(INSTALLATION_ID)
    await auth.installation_token(INSTALLATION_ID)
    assert token_mints(sim) == 2


async def test_secondary_rate_limit_waits_for_retry_after(
    auth: GitHubAppAuth, sim: GitHubSimulator
) -> None:
    slept: list[float] = []
    gh = auth.installation_client(INSTALLATION_ID)

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    gh.sleep = record_sleep  # type: ignore[method-assign]
    sim.inject_fault(
        "GET",
        f"/repos/{REPO}$",
        status=403,
        headers={"retry-after": "7"},
        body={"message": "You have exceeded a secondary rate limit."},
    )
    repo = await gh.getitem(f"/repos/{REPO}")
    assert repo["full_name"] == REPO
    assert slept == [7.0]
    assert len(sim.calls_to("GET", f"/repos/{REPO}$")) == 2


async def test_server_error_on_a_write_is_not_retried(
    auth: GitHubAppAuth, sim: GitHubSimulator
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    gh = auth.installation_client(INSTALLATION_ID)
    sim.inject_fault("POST", rf"/repos/{REPO}/issues/1/comments$", status=502)
    with pytest.raises(Exception, match=r"502|Bad Gateway"):
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"})
    assert len(sim.calls_to("POST", rf"/repos/{REPO}/issues/1/comments$")) == 1


async def test_concurrent_events_for_one_installation_mint_one_token(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    github_sim.add_issue(REPO, 11, title="A bug", body="It breaks.")
    app = await start_app()
    deliveries = [f"help-{n}" for n in range(8)]
    for delivery in deliveries:
        comment = github_sim.add_comment(REPO, 11, body="/box help", user=MAINTAINER)
        payload = commented(11, "/box help", comment_id=comment["id"])
        assert (await app.post("issue_comment", payload, delivery_id=delivery)).status == 202
    for delivery in deliveries:
        assert (await app.wait_for(delivery)).status is DeliveryStatus.DONE
    replies = github_sim.calls_to("POST", r"/issues/\d+/comments$")
    assert len(replies) == len(deliveries)
    assert len(github_sim.calls_to("POST", r"^/app/installations/\d+/access_tokens$")) == 1
