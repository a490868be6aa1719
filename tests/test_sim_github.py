"""The GitHub simulator, driven by gidgethub exactly as the app drives GitHub."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import gidgethub
import gidgethub.apps
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gidgethub.aiohttp import GitHubAPI

from bot.ingress.webhook import sign
from bot.sim.github import GitHubSimulator
from bot.sim.openapi import OpenAPISpec

APP_ID = 321
INSTALLATION_ID = 77
OTHER_INSTALLATION_ID = 78
REPO = "Codertocat/Hello-World"
SIBLING_REPO = "Codertocat/Other"
FOREIGN_REPO = "someone/else"
HEAD_SHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
RUN_ID = 30433642
ISSUE_DOCS = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"


def new_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Clock:
    """A clock the test moves by hand, starting at the real time so gidgethub's JWTs fit."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class RecordingGitHubAPI(GitHubAPI):
    """gidgethub's aiohttp client, keeping every raw response it received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[tuple[int, Mapping[str, str], bytes]] = []

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        response = await super()._request(method, url, headers, body)
        self.responses.append(response)
        return response

    @property
    def last_headers(self) -> Mapping[str, str]:
        return self.responses[-1][1]


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def spec() -> OpenAPISpec:
    return OpenAPISpec.load()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(key: str, clock: Clock) -> AsyncIterator[GitHubSimulator]:
    sim = GitHubSimulator(app_id=APP_ID, app_slug="box-bot", private_key_pem=key, clock=clock)
    await sim.start()
    sim.add_installation(INSTALLATION_ID, "Codertocat")
    sim.add_installation(OTHER_INSTALLATION_ID, "someone")
    sim.add_repo(REPO, installation_id=INSTALLATION_ID, repo_id=186853002)
    sim.add_repo(SIBLING_REPO, installation_id=INSTALLATION_ID)
    sim.add_repo(FOREIGN_REPO, installation_id=OTHER_INSTALLATION_ID)
    yield sim
    await sim.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def gh(session: aiohttp.ClientSession, sim: GitHubSimulator) -> RecordingGitHubAPI:
    return RecordingGitHubAPI(session, "box-bot-tests", base_url=sim.base_url)


@pytest.fixture
async def token(gh: RecordingGitHubAPI, key: str, clock: Clock) -> str:
    data = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens", data=b"", jwt=app_jwt(key, clock)
    )
    minted: str = data["token"]
    return minted


@pytest.fixture
def inst(session: aiohttp.ClientSession, sim: GitHubSimulator, token: str) -> RecordingGitHubAPI:
    return RecordingGitHubAPI(session, "box-bot-tests", oauth_token=token, base_url=sim.base_url)


async def mint(gh: GitHubAPI, key: str, installation_id: int = INSTALLATION_ID) -> str:
    data = await gidgethub.apps.get_installation_access_token(
        gh, installation_id=str(installation_id), app_id=str(APP_ID), private_key=key
    )
    token: str = data["token"]
    return token


@functools.cache
def signing_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def app_jwt(
    key: str, clock: Clock, *, iat: float = -60, exp: float = 540, iss: Any = APP_ID
) -> str:
    """Sign app claims; PyJWT's `jwt.encode` refuses the integer `iss` GitHub accepts."""
    now = int(clock.now)
    claims = {"iat": now + int(iat), "exp": now + int(exp), "iss": iss}
    return jwt.api_jws.encode(json.dumps(claims).encode(), signing_key(key), algorithm="RS256")


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


# -- app authentication ---------------------------------------------------------------------


async def test_gidgethub_mints_an_installation_token(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    data = await gidgethub.apps.get_installation_access_token(
        gh, installation_id=str(INSTALLATION_ID), app_id=str(APP_ID), private_key=key
    )
    assert data["token"].startswith("ghs_") and len(data["token"]) > 100
    assert data["expires_at"] == iso(clock.now + 3600)
    assert data["permissions"]["issues"] == "write"
    assert data["repository_selection"] == "selected"
    [issued] = sim.tokens_issued
    assert (issued.installation_id, issued.token, issued.expires_at) == (
        INSTALLATION_ID,
        data["token"],
        clock.now + 3600,
    )
    [call] = sim.calls_to("POST", rf"^/app/installations/{INSTALLATION_ID}/access_tokens$")
    assert call.status == 201
    assert call.headers["authorization"].startswith("bearer ey")


@pytest.mark.parametrize("iss", [APP_ID, str(APP_ID), "client-id"])
async def test_get_app_accepts_the_app_id_or_client_id_as_issuer(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock, iss: Any
) -> None:
    issuer = sim.client_id if iss == "client-id" else iss
    app = await gh.getitem("/app", jwt=app_jwt(key, clock, iss=issuer))
    assert (app["id"], app["slug"], app["name"]) == (APP_ID, "box-bot", "box-bot")
    assert app["owner"]["login"] == "box-bot-dev"
    assert app["installations_count"] == 2


async def test_jwt_issued_within_the_clock_skew_is_accepted(
    gh: RecordingGitHubAPI, key: str, clock: Clock
) -> None:
    app = await gh.getitem("/app", jwt=app_jwt(key, clock, iat=50, exp=600))
    assert app["id"] == APP_ID


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"other_key": True}, "A JSON web token could not be decoded"),
        ({"iat": -700, "exp": -100}, "'Expiration time' claim ('exp') must be a numeric value"),
        ({"iat": -60, "exp": 600}, "'Expiration time' claim ('exp') is too far in the future"),
        ({"iat": 120, "exp": 600}, "'Issued at' claim ('iat') must be an Integer"),
        ({"iss": 999}, "A JSON web token could not be decoded"),
        ({"iss": "not-the-app"}, "'Issuer' claim ('iss') must be an Integer"),
    ],
    ids=["other-key", "expired", "exp-too-far", "iat-future", "other-app", "bad-iss"],
)
async def test_bad_jwts_are_refused_with_githubs_message(
    gh: RecordingGitHubAPI,
    sim: GitHubSimulator,
    key: str,
    clock: Clock,
    claims: dict[str, Any],
    message: str,
) -> None:
    signing_key = new_key() if claims.pop("other_key", False) else key
    token = app_jwt(signing_key, clock, **claims)
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.post(f"/app/installations/{INSTALLATION_ID}/access_tokens", data=b"", jwt=token)
    assert raised.value.status_code == 401
    assert message in str(raised.value)
    assert sim.tokens_issued == []


async def test_app_endpoints_refuse_installation_tokens(gh: RecordingGitHubAPI, token: str) -> None:
    with pytest.raises(gidgethub.BadRequest, match="JSON web token could not be decoded"):
        await gh.getitem("/app", oauth_token=token)


async def test_minting_for_an_unknown_installation_is_404(gh: RecordingGitHubAPI, key: str) -> None:
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await mint(gh, key, installation_id=999)


async def test_stateless_token_format_can_be_switched_off(
    gh: RecordingGitHubAPI, key: str, clock: Clock
) -> None:
    data = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        data=b"",
        jwt=app_jwt(key, clock),
        extra_headers={"x-github-stateless-s2s-token": "disabled"},
    )
    assert data["token"].startswith("ghs_") and len(data["token"]) == 40


# -- installation tokens --------------------------------------------------------------------


async def test_token_expires_after_its_lifetime_on_the_simulator_clock(
    inst: RecordingGitHubAPI, clock: Clock
) -> None:
    assert (await inst.getitem(f"/repos/{REPO}"))["full_name"] == REPO
    clock.now += 3599
    assert (await inst.getitem(f"/repos/{REPO}"))["full_name"] == REPO
    clock.now += 1
    with pytest.raises(gidgethub.BadRequest, match="Bad credentials") as raised:
        await inst.getitem(f"/repos/{REPO}")
    assert raised.value.status_code == 401


async def test_token_lifetime_is_configurable(
    session: aiohttp.ClientSession, key: str, clock: Clock
) -> None:
    async with GitHubSimulator(
        app_id=APP_ID, private_key_pem=key, clock=clock, token_lifetime=600
    ) as sim:
        sim.add_installation(INSTALLATION_ID, "Codertocat")
        gh = GitHubAPI(session, "tests", base_url=sim.base_url)
        data = await gh.post(
            f"/app/installations/{INSTALLATION_ID}/access_tokens", data=b"", jwt=app_jwt(key, clock)
        )
    assert data["expires_at"] == iso(clock.now + 600)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [(None, "Requires authentication"), ("token ghs_unknown", "Bad credentials")],
)
async def test_requests_without_a_valid_token_are_401(
    session: aiohttp.ClientSession, sim: GitHubSimulator, authorization: str | None, message: str
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    async with session.get(f"{sim.base_url}/repos/{REPO}", headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["message"] == message


async def test_token_accepts_the_bearer_scheme_too(
    session: aiohttp.ClientSession, sim: GitHubSimulator, token: str
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with session.get(f"{sim.base_url}/repos/{REPO}", headers=headers) as response:
        assert response.status == 200


async def test_token_reaches_only_its_installations_repositories(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    assert (await inst.getitem(f"/repos/{SIBLING_REPO}"))["full_name"] == SIBLING_REPO
    for hidden in (FOREIGN_REPO, "Codertocat/missing"):
        with pytest.raises(gidgethub.BadRequest, match="Not Found"):
            await inst.getitem(f"/repos/{hidden}")
    assert [c.status for c in sim.calls_to("GET", r"^/repos/")] == [200, 404, 404]
    assert {c.installation_id for c in sim.calls_to("GET", r"^/repos/")} == {INSTALLATION_ID}


async def test_token_narrowed_to_one_repository_and_read_permissions(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    data = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        jwt=app_jwt(key, clock),
        data={"repositories": ["Hello-World"], "permissions": {"issues": "read"}},
    )
    assert [r["full_name"] for r in data["repositories"]] == [REPO]
    assert data["permissions"] == {"issues": "read"}
    token = data["token"]
    assert (await gh.getitem(f"/repos/{REPO}/issues/1", oauth_token=token))["number"] == 1
    with pytest.raises(gidgethub.BadRequest, match="Resource not accessible by integration"):
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"}, oauth_token=token)
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await gh.getitem(f"/repos/{SIBLING_REPO}", oauth_token=token)
    assert sim.comments(REPO, 1) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"permissions": {"administration": "write"}}, "permissions requested are not granted"),
        ({"repositories": ["else"]}, "not accessible to the parent installation"),
    ],
)
async def test_token_cannot_exceed_the_installation(
    gh: RecordingGitHubAPI, key: str, clock: Clock, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(gidgethub.GitHubException, match=message):
        await gh.post(
            f"/app/installations/{INSTALLATION_ID}/access_tokens",
            data=body,
            jwt=app_jwt(key, clock),
        )


async def test_revoked_tokens_and_removed_installations_stop_working(
    inst: RecordingGitHubAPI, gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str
) -> None:
    sim.revoke_tokens(INSTALLATION_ID)
    with pytest.raises(gidgethub.BadRequest, match="Bad credentials"):
        await inst.getitem(f"/repos/{REPO}")
    token = await mint(gh, key)
    sim.remove_installation(INSTALLATION_ID)
    with pytest.raises(gidgethub.BadRequest, match="Bad credentials"):
        await gh.getitem(f"/repos/{REPO}", oauth_token=token)
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await mint(gh, key)


# -- every operation of the description: happy path and response shape ---------------------


@dataclass(frozen=True)
class Case:
    operation_id: str
    method: str
    path: str
    body: Any = None
    status: int = 200
    auth: str = "token"


HAPPY_PATHS = [
    Case("apps/get-authenticated", "GET", "/app", auth="jwt"),
    Case(
        "apps/create-from-manifest",
        "POST",
        "/app-manifests/code123/conversions",
        status=201,
        auth="none",
    ),
    Case(
        "apps/create-installation-access-token",
        "POST",
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        status=201,
        auth="jwt",
    ),
    Case("apps/get-repo-installation", "GET", f"/repos/{REPO}/installation", auth="jwt"),
    Case("rate-limit/get", "GET", "/rate_limit"),
    Case("repos/get", "GET", f"/repos/{REPO}"),
    Case("repos/get-content", "GET", f"/repos/{REPO}/contents/docs/README.md"),
    Case(
        "repos/get-collaborator-permission-level",
        "GET",
        f"/repos/{REPO}/collaborators/octocat/permission",
    ),
    Case(
        "repos/create-commit-status",
        "POST",
        f"/repos/{REPO}/statuses/{HEAD_SHA}",
        {"state": "pending", "context": "box", "target_url": None},
        status=201,
    ),
    Case("issues/get", "GET", f"/repos/{REPO}/issues/2"),
    Case("issues/list-comments", "GET", f"/repos/{REPO}/issues/1/comments"),
    Case(
        "issues/create-comment",
        "POST",
        f"/repos/{REPO}/issues/1/comments",
        {"body": "On it"},
        status=201,
    ),
    Case("issues/get-comment", "GET", f"/repos/{REPO}/issues/comments/{{comment_id}}"),
    Case(
        "issues/update-comment",
        "PATCH",
        f"/repos/{REPO}/issues/comments/{{comment_id}}",
        {"body": "Edited"},
    ),
    Case(
        "reactions/create-for-issue-comment",
        "POST",
        f"/repos/{REPO}/issues/comments/{{comment_id}}/reactions",
        {"content": "eyes"},
        status=201,
    ),
    Case("issues/add-labels", "POST", f"/repos/{REPO}/issues/1/labels", {"labels": ["box"]}),
    Case("issues/remove-label", "DELETE", f"/repos/{REPO}/issues/1/labels/bug"),
    Case("pulls/list", "GET", f"/repos/{REPO}/pulls"),
    Case("pulls/get", "GET", f"/repos/{REPO}/pulls/2"),
    Case("pulls/list-files", "GET", f"/repos/{REPO}/pulls/2/files"),
    Case("pulls/list-reviews", "GET", f"/repos/{REPO}/pulls/2/reviews"),
    Case("pulls/list-review-comments", "GET", f"/repos/{REPO}/pulls/2/comments"),
    Case("pulls/get-review", "GET", f"/repos/{REPO}/pulls/2/reviews/{{review_id}}"),
    Case(
        "pulls/list-comments-for-review",
        "GET",
        f"/repos/{REPO}/pulls/2/reviews/{{review_id}}/comments",
    ),
    Case("pulls/get-review-comment", "GET", f"/repos/{REPO}/pulls/comments/{{review_comment_id}}"),
    Case(
        "pulls/update-review-comment",
        "PATCH",
        f"/repos/{REPO}/pulls/comments/{{review_comment_id}}",
        {"body": "Edited nit"},
    ),
    Case(
        "pulls/create-reply-for-review-comment",
        "POST",
        f"/repos/{REPO}/pulls/2/comments/{{review_comment_id}}/replies",
        {"body": "Done"},
        status=201,
    ),
    Case(
        "reactions/create-for-pull-request-review-comment",
        "POST",
        f"/repos/{REPO}/pulls/comments/{{review_comment_id}}/reactions",
        {"content": "eyes"},
        status=201,
    ),
    Case("apps/list-webhook-deliveries", "GET", "/app/hook/deliveries", auth="jwt"),
    Case("apps/get-webhook-delivery", "GET", "/app/hook/deliveries/{delivery_id}", auth="jwt"),
    Case(
        "apps/redeliver-webhook-delivery",
        "POST",
        "/app/hook/deliveries/{delivery_id}/attempts",
        status=202,
        auth="jwt",
    ),
    Case(
        "checks/create",
        "POST",
        f"/repos/{REPO}/check-runs",
        {
            "name": "box",
            "head_sha": HEAD_SHA,
            "status": "in_progress",
            "output": {"title": "Working", "summary": "Started"},
        },
        status=201,
    ),
    Case("checks/get", "GET", f"/repos/{REPO}/check-runs/{{check_run_id}}"),
    Case(
        "checks/update",
        "PATCH",
        f"/repos/{REPO}/check-runs/{{check_run_id}}",
        {
            "conclusion": "success",
            "output": {"title": "Done", "summary": "All good"},
            "actions": [
                {"label": "Rerun", "description": "Run the box again", "identifier": "rerun"}
            ],
        },
    ),
    Case("checks/list-for-ref", "GET", f"/repos/{REPO}/commits/{HEAD_SHA}/check-runs"),
    Case("actions/list-jobs-for-workflow-run", "GET", f"/repos/{REPO}/actions/runs/{RUN_ID}/jobs"),
    Case(
        "actions/download-job-logs-for-workflow-run",
        "GET",
        f"/repos/{REPO}/actions/jobs/{{job_id}}/logs",
        status=302,
    ),
]


async def seed(sim: GitHubSimulator, inst: RecordingGitHubAPI) -> dict[str, Any]:
    """Give every operation something to act on; return the ids the paths need."""
    sim.add_issue(REPO, 1, title="A bug", labels=["bug"])
    sim.add_pull(
        REPO,
        2,
        title="Fix it",
        head="feature",
        head_sha=HEAD_SHA,
        files=["README.md", "bot/app.py"],
    )
    review = sim.add_review(REPO, 2, user="reviewer", state="APPROVED", body="LGTM")
    review_comment = sim.add_review_comment(
        REPO, 2, user="reviewer", body="nit", path="bot/app.py", line=3, review_id=review["id"]
    )
    delivery = sim.record_delivery("0b989ba4-242f-11e5-81e1-c7b6966d2516", "issues", "opened", 200)
    comment = sim.add_comment(REPO, 1, body="/box fix it", user="octocat")
    sim.set_permission(REPO, "octocat", "write")
    sim.set_file(REPO, "docs/README.md", "hello\n")
    sim.add_manifest_code("code123")
    job = sim.add_workflow_job(REPO, RUN_ID, name="test", log="step 1\nerror: boom\n")
    run = await inst.post(f"/repos/{REPO}/check-runs", data={"name": "box", "head_sha": HEAD_SHA})
    return {
        "comment_id": comment["id"],
        "check_run_id": run["id"],
        "job_id": job["id"],
        "review_id": review["id"],
        "review_comment_id": review_comment["id"],
        "delivery_id": delivery["id"],
    }


async def send(gh: RecordingGitHubAPI, case: Case, path: str, credentials: dict[str, Any]) -> Any:
    if case.method == "GET":
        return await gh.getitem(path, **credentials)
    if case.method == "DELETE":
        await gh.delete(path, **credentials)
        return json.loads(gh.responses[-1][2])
    call = gh.post if case.method == "POST" else gh.patch
    return await call(path, data=b"" if case.body is None else case.body, **credentials)


@pytest.mark.parametrize("case", HAPPY_PATHS, ids=[c.operation_id for c in HAPPY_PATHS])
async def test_operation_answers_like_github(
    case: Case,
    sim: GitHubSimulator,
    inst: RecordingGitHubAPI,
    token: str,
    key: str,
    clock: Clock,
    spec: OpenAPISpec,
) -> None:
    path = case.path.format(**await seed(sim, inst))
    assert spec.match(case.method, path) is not None
    assert spec.match(case.method, path)[0] == case.operation_id  # type: ignore[index]
    credentials: dict[str, Any] = {
        "token": {"oauth_token": token},
        "jwt": {"jwt": app_jwt(key, clock)},
        "none": {},
    }[case.auth]
    gh = RecordingGitHubAPI(inst._session, "tests", base_url=sim.base_url)
    data = await send(gh, case, path, credentials)
    assert sim.calls_to(case.method, path.split("?")[0] + "$")[-1].status == case.status
    assert spec.validate_request(case.method, path, case.body) == []
    assert spec.validate_response(case.method, path, case.status, data) == []
    if case.status != 302:
        assert gh.last_headers["x-ratelimit-resource"] == "core"


def test_every_operation_of_the_description_has_a_happy_path(spec: OpenAPISpec) -> None:
    assert {c.operation_id for c in HAPPY_PATHS} == {op for _, _, op in spec.operations()}


def test_response_check_reports_missing_required_fields(spec: OpenAPISpec) -> None:
    problems = spec.validate_response(
        "POST", f"/repos/{REPO}/issues/1/comments", 201, {"id": 1, "body": "hi"}
    )
    assert "<body>: 'node_id' is a required property" in problems
    assert "<body>: 'user' is a required property" in problems


# -- comments, reactions, labels ------------------------------------------------------------


async def test_comment_from_an_installation_is_authored_by_the_app_bot(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_issue(REPO, 5, title="A bug")
    comment = await inst.post(f"/repos/{REPO}/issues/5/comments", data={"body": "On it"})
    assert comment["user"]["login"] == "box-bot[bot]"
    assert comment["user"]["type"] == "Bot"
    assert comment["performed_via_github_app"]["id"] == APP_ID
    assert comment["performed_via_github_app"]["slug"] == "box-bot"
    assert comment["html_url"].endswith(f"/{REPO}/issues/5#issuecomment-{comment['id']}")
    assert inst.last_headers["location"] == comment["url"]
    assert [c["body"] for c in sim.comments(REPO, 5)] == ["On it"]
    assert (await inst.getitem(f"/repos/{REPO}/issues/5"))["comments"] == 1


async def test_comment_on_a_missing_issue_is_404(inst: RecordingGitHubAPI) -> None:
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.post(f"/repos/{REPO}/issues/404/comments", data={"body": "hi"})


async def test_comment_edits_are_counted(inst: RecordingGitHubAPI, sim: GitHubSimulator) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    comment = await inst.post(f"/repos/{REPO}/issues/1/comments", data={"body": "v1"})
    for body in ("v2", "v3"):
        await inst.patch(f"/repos/{REPO}/issues/comments/{comment['id']}", data={"body": body})
    assert sim.comment_edits(comment["id"]) == 2
    assert [c["body"] for c in sim.comments(REPO, 1)] == ["v3"]


async def test_same_reaction_twice_answers_201_then_200(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    comment = sim.add_comment(REPO, 1, body="/box fix", user="octocat")
    url = f"/repos/{REPO}/issues/comments/{comment['id']}/reactions"
    first = await inst.post(url, data={"content": "eyes"})
    second = await inst.post(url, data={"content": "eyes"})
    assert [c.status for c in sim.calls_to("POST", url)] == [201, 200]
    assert first["id"] == second["id"]
    assert [(r["user"]["login"], r["content"]) for r in sim.reactions(REPO, comment["id"])] == [
        ("box-bot[bot]", "eyes")
    ]
    assert sim.comments(REPO, 1)[0]["reactions"]["eyes"] == 1


async def test_list_comments_paginates_with_link_headers(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    ids = [sim.add_comment(REPO, 1, body=f"c{n}", user="octocat")["id"] for n in range(5)]
    first = await inst.getitem(f"/repos/{REPO}/issues/1/comments?per_page=2")
    assert [c["id"] for c in first] == ids[:2]
    base = f"{sim.base_url}/repos/{REPO}/issues/1/comments"
    assert inst.last_headers["link"] == (
        f'<{base}?per_page=2&page=2>; rel="next", <{base}?per_page=2&page=3>; rel="last"'
    )
    await inst.getitem(f"/repos/{REPO}/issues/1/comments?per_page=2&page=3")
    assert inst.last_headers["link"] == (
        f'<{base}?per_page=2&page=1>; rel="first", <{base}?per_page=2&page=2>; rel="prev"'
    )
    every = [c["id"] async for c in inst.getiter(f"/repos/{REPO}/issues/1/comments?per_page=2")]
    assert every == ids


async def test_labels_are_added_and_removed(inst: RecordingGitHubAPI, sim: GitHubSimulator) -> None:
    sim.add_issue(REPO, 1, title="A bug", labels=["bug"])
    labels = await inst.post(f"/repos/{REPO}/issues/1/labels", data=["box", "bug"])
    assert [label["name"] for label in labels] == ["bug", "box"]
    await inst.delete(f"/repos/{REPO}/issues/1/labels/bug")
    assert [label["name"] for label in sim.issue(REPO, 1)["labels"]] == ["box"]
    with pytest.raises(gidgethub.BadRequest, match="Label does not exist"):
        await inst.delete(f"/repos/{REPO}/issues/1/labels/bug")


# -- review threads -------------------------------------------------------------------------


def open_pull_with_review(sim: GitHubSimulator) -> tuple[dict[str, Any], dict[str, Any]]:
    """PR 2 with a changes-requested review holding one comment on lines 10-12 of src/app.py."""
    sim.add_pull(REPO, 2, title="Fix it", head="feature", head_sha=HEAD_SHA, files=["src/app.py"])
    review = sim.add_review(REPO, 2, user="reviewer", state="CHANGES_REQUESTED", body="See notes")
    comment = sim.add_review_comment(
        REPO,
        2,
        user="reviewer",
        body="/box fix rename this",
        path="src/app.py",
        start_line=10,
        line=12,
        diff_hunk="@@ -8,3 +8,5 @@ def main():\n     run()\n+    x = 1\n+    y = 2",
        review_id=review["id"],
    )
    return review, comment


async def test_reply_joins_the_thread_of_its_first_comment(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    _, root = open_pull_with_review(sim)
    answer = sim.add_review_comment(REPO, 2, user="octocat", body="+1", in_reply_to=root["id"])
    reply = await inst.post(
        f"/repos/{REPO}/pulls/2/comments/{root['id']}/replies", data={"body": "Done in abc123"}
    )
    assert inst.last_headers["location"] == reply["url"]
    assert reply["user"]["login"] == "box-bot[bot]"
    assert (reply["in_reply_to_id"], reply["path"], reply["line"], reply["start_line"]) == (
        root["id"],
        "src/app.py",
        12,
        10,
    )
    assert reply["diff_hunk"] == root["diff_hunk"]
    thread = sim.review_thread(REPO, answer["id"])
    assert [(c["user"]["login"], c["body"]) for c in thread] == [
        ("reviewer", "/box fix rename this"),
        ("octocat", "+1"),
        ("box-bot[bot]", "Done in abc123"),
    ]


async def test_replies_to_replies_and_to_another_pull_are_refused(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    _, root = open_pull_with_review(sim)
    sim.add_pull(REPO, 3, title="Other", head="other")
    reply = sim.add_review_comment(REPO, 2, user="octocat", body="+1", in_reply_to=root["id"])
    with pytest.raises(gidgethub.BadRequest, match="Replies to replies are not supported"):
        await inst.post(
            f"/repos/{REPO}/pulls/2/comments/{reply['id']}/replies", data={"body": "no"}
        )
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.post(f"/repos/{REPO}/pulls/3/comments/{root['id']}/replies", data={"body": "no"})
    assert len(sim.review_thread(REPO, root["id"])) == 2


async def test_review_comment_reaction_and_edit(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    _, comment = open_pull_with_review(sim)
    url = f"/repos/{REPO}/pulls/comments/{comment['id']}"
    for _ in range(2):
        await inst.post(url + "/reactions", data={"content": "eyes"})
    assert [c.status for c in sim.calls_to("POST", url + "/reactions")] == [201, 200]
    assert [(r["user"]["login"], r["content"]) for r in sim.reactions(REPO, comment["id"])] == [
        ("box-bot[bot]", "eyes")
    ]
    await inst.patch(url, data={"body": "/box fix rename it"})
    fetched = await inst.getitem(url)
    assert (fetched["body"], fetched["reactions"]["eyes"]) == ("/box fix rename it", 1)


async def test_review_lists_only_its_own_comments(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    review, comment = open_pull_with_review(sim)
    sim.add_review_comment(REPO, 2, user="octocat", body="loose", path="README.md")
    got = await inst.getitem(f"/repos/{REPO}/pulls/2/reviews/{review['id']}")
    assert (got["state"], got["body"], got["commit_id"]) == (
        "CHANGES_REQUESTED",
        "See notes",
        HEAD_SHA,
    )
    listed = await inst.getitem(f"/repos/{REPO}/pulls/2/reviews/{review['id']}/comments")
    assert [(c["id"], c["path"], c["position"]) for c in listed] == [
        (comment["id"], "src/app.py", 3)
    ]
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.getitem(f"/repos/{REPO}/pulls/2/reviews/999/comments")


async def test_review_comment_writes_need_pull_request_write(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    _, comment = open_pull_with_review(sim)
    minted = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens",
        data={"permissions": {"pull_requests": "read", "issues": "write"}},
        jwt=app_jwt(key, clock),
    )
    url = f"/repos/{REPO}/pulls/2/comments/{comment['id']}/replies"
    with pytest.raises(gidgethub.BadRequest, match="Resource not accessible by integration"):
        await gh.post(url, data={"body": "hi"}, oauth_token=minted["token"])
    assert (await gh.getitem(url.rsplit("/", 3)[0], oauth_token=minted["token"]))["number"] == 2


# -- webhook delivery log -------------------------------------------------------------------


def log_deliveries(sim: GitHubSimulator, count: int) -> list[dict[str, Any]]:
    """Log *count* deliveries, every third one refused by the app; return them oldest first."""
    return [
        sim.record_delivery(
            f"guid-{n}",
            "pull_request_review_comment",
            "created",
            500 if n % 3 == 2 else 202,
            clock_at(n),
            installation_id=INSTALLATION_ID,
            repository_id=186853002,
        )
        for n in range(count)
    ]


def clock_at(n: int) -> float:
    return 1_700_000_000.0 + n * 60


async def test_delivery_log_pages_newest_first_by_cursor(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    logged = log_deliveries(sim, 5)
    first = await gh.getitem("/app/hook/deliveries?per_page=2", jwt=app_jwt(key, clock))
    assert [d["guid"] for d in first] == ["guid-4", "guid-3"]
    assert gh.last_headers["link"] == (
        f'<{sim.base_url}/app/hook/deliveries?per_page=2&cursor={logged[2]["id"]}>; rel="next"'
    )
    every = [
        d["guid"]
        async for d in gh.getiter("/app/hook/deliveries?per_page=2", jwt=app_jwt(key, clock))
    ]
    assert every == [f"guid-{n}" for n in (4, 3, 2, 1, 0)]
    failed = await gh.getitem("/app/hook/deliveries?status=failure", jwt=app_jwt(key, clock))
    assert [(d["guid"], d["status"]) for d in failed] == [("guid-2", "Invalid HTTP Response: 500")]
    assert first[0]["delivered_at"] == iso(clock_at(4))


async def test_delivery_log_is_for_the_app_only(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    log_deliveries(sim, 1)
    with pytest.raises(gidgethub.BadRequest, match="A JSON web token could not be decoded"):
        await inst.getitem("/app/hook/deliveries")


async def test_one_delivery_carries_its_request(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    payload = {"action": "created", "comment": {"id": 7, "body": "/box fix"}}
    logged = sim.record_delivery(
        "guid-a", "pull_request_review_comment", "created", 202, payload=payload
    )
    got = await gh.getitem(f"/app/hook/deliveries/{logged['id']}", jwt=app_jwt(key, clock))
    assert got["request"]["payload"] == payload
    assert got["request"]["headers"]["X-GitHub-Event"] == "pull_request_review_comment"
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await gh.getitem("/app/hook/deliveries/12", jwt=app_jwt(key, clock))


async def test_redelivery_posts_the_payload_again_signed(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = TestServer(receiver)
    await server.start_server()
    try:
        sim.webhook_url = str(server.make_url("/hook"))
        payload = {"action": "submitted", "review": {"id": 80}}
        logged = sim.record_delivery(
            "guid-r", "pull_request_review", "submitted", 500, payload=payload
        )
        await gh.post(
            f"/app/hook/deliveries/{logged['id']}/attempts", data=b"", jwt=app_jwt(key, clock)
        )
        assert sim.redelivery_requests == ["guid-r"]
        async with asyncio.timeout(5):
            while len(sim.deliveries()) < 2:
                await asyncio.sleep(0.01)
    finally:
        await server.close()
    headers, body = received[0]
    assert json.loads(body) == payload
    assert headers["X-GitHub-Delivery"] == "guid-r"
    assert headers["X-GitHub-Event"] == "pull_request_review"
    assert headers["X-Hub-Signature-256"] == sign(sim.webhook_secret, body)
    newest = sim.deliveries()[0]
    assert (newest["guid"], newest["redelivery"], newest["status_code"]) == ("guid-r", True, 202)


async def test_redelivery_of_an_unknown_delivery_is_404(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, key: str, clock: Clock
) -> None:
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await gh.post("/app/hook/deliveries/5/attempts", data=b"", jwt=app_jwt(key, clock))
    assert sim.redelivery_requests == []


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "code"),
    [
        ("/issues/1/comments", {}, "body", "missing_field"),
        ("/issues/1/comments", {"body": "x" * 65537}, "data", "unprocessable"),
        (
            "/check-runs",
            {"name": "box", "head_sha": HEAD_SHA, "status": "bogus"},
            "status",
            "invalid",
        ),
        (
            "/check-runs",
            {"name": "box", "head_sha": HEAD_SHA, "status": "completed"},
            "conclusion",
            "missing_field",
        ),
        (
            "/check-runs",
            {"name": "box", "head_sha": HEAD_SHA, "output": {"title": "t", "summary": "s" * 65536}},
            "output.summary",
            "invalid",
        ),
        (
            "/check-runs",
            {
                "name": "box",
                "head_sha": HEAD_SHA,
                "actions": [{"label": "a", "description": "d", "identifier": "i"}] * 4,
            },
            "actions",
            "invalid",
        ),
        (
            "/check-runs",
            {
                "name": "box",
                "head_sha": HEAD_SHA,
                "actions": [{"label": "x" * 21, "description": "d", "identifier": "i"}],
            },
            "actions.0.label",
            "invalid",
        ),
        ("/check-runs", {"head_sha": HEAD_SHA}, "name", "missing_field"),
        ("/statuses/" + HEAD_SHA, {"state": "ok"}, "state", "invalid"),
    ],
    ids=[
        "missing-body",
        "too-long-body",
        "bad-status",
        "completed-without-conclusion",
        "long-summary",
        "four-actions",
        "long-label",
        "missing-name",
        "bad-state",
    ],
)
async def test_invalid_bodies_answer_422(
    inst: RecordingGitHubAPI,
    sim: GitHubSimulator,
    path: str,
    body: dict[str, Any],
    field: str,
    code: str,
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    # gidgethub raises InvalidField for GitHub's field codes and ValidationError otherwise.
    expected = gidgethub.ValidationError if code == "unprocessable" else gidgethub.InvalidField
    with pytest.raises(gidgethub.BadRequest) as raised:
        await inst.post(f"/repos/{REPO}{path}", data=body)
    assert type(raised.value) is expected
    assert isinstance(raised.value, gidgethub.ValidationError | gidgethub.InvalidField)
    assert raised.value.status_code == 422
    [error] = raised.value.errors
    assert (error["field"], error["code"]) == (field, code)
    answer = json.loads(inst.responses[-1][2])
    assert answer["message"] == "Validation Failed"
    assert answer["documentation_url"].startswith("https://docs.github.com/rest/")
    assert sim.comments(REPO, 1) == [] and sim.check_runs(REPO) == [] and sim.statuses(REPO) == []


async def test_too_long_comment_carries_githubs_error(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    with pytest.raises(gidgethub.ValidationError) as raised:
        await inst.post(f"/repos/{REPO}/issues/1/comments", data={"body": "é" * 65537})
    assert raised.value.errors == [
        {
            "resource": "IssueComment",
            "code": "unprocessable",
            "field": "data",
            "message": "Body is too long (maximum is 65536 characters)",
        }
    ]
    assert json.loads(inst.responses[-1][2])["documentation_url"] == ISSUE_DOCS
    comment = await inst.post(f"/repos/{REPO}/issues/1/comments", data={"body": "é" * 65536})
    with pytest.raises(gidgethub.ValidationError, match="Body is too long"):
        await inst.patch(
            f"/repos/{REPO}/issues/comments/{comment['id']}", data={"body": "x" * 65537}
        )


async def test_update_to_completed_needs_a_conclusion(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    run = await inst.post(f"/repos/{REPO}/check-runs", data={"name": "box", "head_sha": HEAD_SHA})
    with pytest.raises(gidgethub.InvalidField) as raised:
        await inst.patch(f"/repos/{REPO}/check-runs/{run['id']}", data={"status": "completed"})
    assert raised.value.errors[0]["field"] == "conclusion"
    assert sim.check_runs(REPO)[0]["status"] == "queued"


async def test_malformed_json_is_400(
    session: aiohttp.ClientSession, sim: GitHubSimulator, token: str
) -> None:
    sim.add_issue(REPO, 1, title="A bug")
    async with session.post(
        f"{sim.base_url}/repos/{REPO}/issues/1/comments",
        data=b"{nope",
        headers={"authorization": f"token {token}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["message"] == "Problems parsing JSON"


async def test_unknown_paths_and_api_versions_are_refused(inst: RecordingGitHubAPI) -> None:
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.getitem(f"/repos/{REPO}/branches")
    with pytest.raises(gidgethub.BadRequest, match="not supported") as raised:
        await inst.getitem(f"/repos/{REPO}", extra_headers={"x-github-api-version": "1999-01-01"})
    assert raised.value.status_code == 400


# -- faults and rate limits -----------------------------------------------------------------


async def test_injected_server_errors_hit_the_given_number_of_calls(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.inject_fault("GET", rf"^/repos/{REPO}$", status=503, times=2)
    for _ in range(2):
        with pytest.raises(gidgethub.GitHubBroken) as raised:
            await inst.getitem(f"/repos/{REPO}")
        assert raised.value.status_code == 503
    await inst.getitem(f"/repos/{REPO}")
    assert [c.status for c in sim.calls_to("GET", rf"^/repos/{REPO}$")] == [503, 503, 200]
    assert [c.installation_id for c in sim.calls_to("GET", rf"^/repos/{REPO}$")] == [
        INSTALLATION_ID
    ] * 3


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_rate_limit_carries_retry_after(
    inst: RecordingGitHubAPI, sim: GitHubSimulator, status: int
) -> None:
    sim.inject_fault("*", r"/issues/1/comments$", status=status, headers={"Retry-After": "30"})
    sim.add_issue(REPO, 1, title="A bug")
    with pytest.raises(gidgethub.BadRequest, match="secondary rate limit") as raised:
        await inst.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"})
    assert raised.value.status_code == status
    assert raised.value.headers is not None
    assert raised.value.headers["retry-after"] == "30"
    assert sim.comments(REPO, 1) == []
    await inst.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"})
    assert len(sim.comments(REPO, 1)) == 1


async def test_fault_with_a_custom_body(inst: RecordingGitHubAPI, sim: GitHubSimulator) -> None:
    sim.inject_fault(
        "GET", r"/pulls$", status=422, body={"message": "Validation Failed", "errors": "nope"}
    )
    with pytest.raises(gidgethub.ValidationError, match="nope"):
        await inst.getitem(f"/repos/{REPO}/pulls")


async def test_delay_and_latency_make_a_short_client_timeout_fire(
    session: aiohttp.ClientSession, sim: GitHubSimulator
) -> None:
    timeout = aiohttp.ClientTimeout(total=0.05)
    sim.inject_fault("GET", r"^/rate_limit$", status=None, delay=1.0)
    with pytest.raises(asyncio.TimeoutError):
        await session.get(f"{sim.base_url}/rate_limit", timeout=timeout)
    async with session.get(f"{sim.base_url}/rate_limit", timeout=timeout) as response:
        assert response.status == 200
    sim.latency = 1.0
    with pytest.raises(asyncio.TimeoutError):
        await session.get(f"{sim.base_url}/rate_limit", timeout=timeout)


async def test_clear_faults_drops_pending_faults(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.inject_fault("GET", r"^/rate_limit$", status=500, times=10)
    sim.clear_faults()
    assert (await inst.getitem("/rate_limit"))["rate"]["limit"] == 5000


async def test_primary_rate_limit_is_counted_and_reset(
    inst: RecordingGitHubAPI, gh: RecordingGitHubAPI, sim: GitHubSimulator, clock: Clock, key: str
) -> None:
    sim.rate_limit = 3
    remaining = []
    for _ in range(3):
        await inst.getitem(f"/repos/{REPO}")
        remaining.append(inst.last_headers["x-ratelimit-remaining"])
        assert inst.last_headers["x-ratelimit-limit"] == "3"
    assert remaining == ["2", "1", "0"]
    assert inst.last_headers["x-ratelimit-reset"] == str(int(clock.now + 3600))
    with pytest.raises(gidgethub.RateLimitExceeded, match="rate limit exceeded") as raised:
        await inst.getitem(f"/repos/{REPO}")
    assert raised.value.rate_limit.remaining == 0
    status = await inst.getitem("/rate_limit")
    assert status["resources"]["core"] == {
        "limit": 3,
        "used": 3,
        "remaining": 0,
        "reset": int(clock.now + 3600),
    }
    clock.now += 3600
    fresh = await gh.post(
        f"/app/installations/{INSTALLATION_ID}/access_tokens", data=b"", jwt=app_jwt(key, clock)
    )
    await gh.getitem(f"/repos/{REPO}", oauth_token=fresh["token"])
    assert gh.last_headers["x-ratelimit-remaining"] == "2"


# -- contents, permissions, pulls, checks, statuses, jobs -----------------------------------


async def test_contents_are_base64_with_the_git_blob_sha_per_ref(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.set_file(REPO, ".github/box.yml", "hello\n")
    sim.set_file(REPO, ".github/box.yml", "dev: true\n", ref="dev")
    data = await inst.getitem(f"/repos/{REPO}/contents/.github/box.yml")
    assert base64.b64decode(data["content"]) == b"hello\n"
    # `git hash-object` of "hello\n"
    assert data["sha"] == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert (data["encoding"], data["size"], data["name"]) == ("base64", 6, "box.yml")
    dev = await inst.getitem(f"/repos/{REPO}/contents/.github/box.yml?ref=dev")
    assert base64.b64decode(dev["content"]) == b"dev: true\n"
    raw = await inst.getitem(
        f"/repos/{REPO}/contents/.github/box.yml", accept="application/vnd.github.raw+json"
    )
    assert raw == "hello\n"
    listing = await inst.getitem(f"/repos/{REPO}/contents/.github")
    assert [(e["name"], e["type"]) for e in listing] == [("box.yml", "file")]
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.getitem(f"/repos/{REPO}/contents/missing.yml")


async def test_files_over_1_mb_come_without_content(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.set_file(REPO, "big.bin", b"\xff" * (1024 * 1024 + 1))
    data = await inst.getitem(f"/repos/{REPO}/contents/big.bin")
    assert (data["encoding"], data["content"], data["size"]) == ("none", "", 1024 * 1024 + 1)


async def test_etag_answers_304_without_spending_rate_limit(
    session: aiohttp.ClientSession, sim: GitHubSimulator, token: str
) -> None:
    sim.set_file(REPO, "README.md", "# Hello\n")
    cache: dict[str, Any] = {}
    gh = RecordingGitHubAPI(session, "tests", oauth_token=token, base_url=sim.base_url, cache=cache)
    first = await gh.getitem(f"/repos/{REPO}/contents/README.md")
    etag = gh.last_headers["etag"]
    assert etag.startswith('W/"')
    second = await gh.getitem(f"/repos/{REPO}/contents/README.md")
    assert second == first
    calls = sim.calls_to("GET", r"/contents/README.md$")
    assert [c.status for c in calls] == [200, 304]
    assert calls[1].headers["if-none-match"] == etag
    assert gh.responses[0][1]["x-ratelimit-used"] == gh.responses[1][1]["x-ratelimit-used"]
    sim.set_file(REPO, "README.md", "# Changed\n")
    changed = await gh.getitem(f"/repos/{REPO}/contents/README.md")
    assert base64.b64decode(changed["content"]) == b"# Changed\n"


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
        ("none", "none"),
    ],
)
async def test_collaborator_permission_maps_roles_to_legacy_values(
    inst: RecordingGitHubAPI, sim: GitHubSimulator, role: str, permission: str
) -> None:
    sim.set_permission(REPO, "hubot", role)
    data = await inst.getitem(f"/repos/{REPO}/collaborators/hubot/permission")
    assert (data["permission"], data["role_name"], data["user"]["login"]) == (
        permission,
        role,
        "hubot",
    )


async def test_permission_of_strangers_depends_on_visibility(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_repo("Codertocat/secret", installation_id=INSTALLATION_ID, private=True)
    public = await inst.getitem(f"/repos/{REPO}/collaborators/stranger/permission")
    assert (public["permission"], public["role_name"]) == ("read", "read")
    owner = await inst.getitem(f"/repos/{REPO}/collaborators/Codertocat/permission")
    assert owner["permission"] == "admin"
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.getitem("/repos/Codertocat/secret/collaborators/stranger/permission")


async def test_pulls_list_filters_by_state_head_and_base(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_pull(REPO, 1, title="Open", head="feature")
    sim.add_pull(REPO, 2, title="Closed", head="old", state="closed")
    sim.add_pull(REPO, 3, title="From a fork", head="patch", head_repo="forker/Hello-World")
    sim.add_pull(REPO, 4, title="To dev", head="x", base="dev")

    async def numbers(query: str) -> list[int]:
        return [p["number"] for p in await inst.getitem(f"/repos/{REPO}/pulls{query}")]

    assert await numbers("") == [4, 3, 1]
    assert await numbers("?state=all&direction=asc") == [1, 2, 3, 4]
    assert await numbers("?state=closed") == [2]
    assert await numbers("?head=Codertocat:feature") == [1]
    assert await numbers("?head=forker:patch") == [3]
    assert await numbers("?base=dev") == [4]


async def test_pull_carries_refs_shas_and_changed_files(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    sim.add_pull(
        REPO,
        7,
        title="Fix",
        head="fix",
        head_sha=HEAD_SHA,
        user="contrib",
        files=["a.py", "docs/b.md"],
        head_repo="contrib/Hello-World",
    )
    pull = await inst.getitem(f"/repos/{REPO}/pulls/7")
    assert (pull["head"]["ref"], pull["head"]["sha"], pull["head"]["label"]) == (
        "fix",
        HEAD_SHA,
        "contrib:fix",
    )
    assert pull["head"]["repo"]["full_name"] == "contrib/Hello-World"
    assert (pull["base"]["ref"], pull["base"]["repo"]["full_name"]) == ("main", REPO)
    assert len(pull["base"]["sha"]) == 40
    assert (pull["changed_files"], pull["user"]["login"]) == (2, "contrib")
    files = await inst.getitem(f"/repos/{REPO}/pulls/7/files")
    assert [f["filename"] for f in files] == ["a.py", "docs/b.md"]
    issue = await inst.getitem(f"/repos/{REPO}/issues/7")
    assert issue["pull_request"]["url"] == pull["url"]
    sim.add_issue(REPO, 8, title="Plain issue")
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await inst.getitem(f"/repos/{REPO}/pulls/8")


async def test_check_run_lifecycle(inst: RecordingGitHubAPI, sim: GitHubSimulator) -> None:
    sim.add_pull(REPO, 3, title="Fix", head="fix", head_sha=HEAD_SHA)
    created = await inst.post(
        f"/repos/{REPO}/check-runs",
        data={
            "name": "box",
            "head_sha": HEAD_SHA,
            "status": "in_progress",
            "external_id": "run-1",
            "output": {
                "title": "Working",
                "summary": "Started",
                "annotations": [
                    {
                        "path": "a.py",
                        "start_line": 1,
                        "end_line": 1,
                        "annotation_level": "notice",
                        "message": "here",
                    }
                ],
            },
        },
    )
    assert (created["status"], created["conclusion"], created["completed_at"]) == (
        "in_progress",
        None,
        None,
    )
    assert [p["number"] for p in created["pull_requests"]] == [3]
    assert created["app"]["id"] == APP_ID
    updated = await inst.patch(
        f"/repos/{REPO}/check-runs/{created['id']}",
        data={
            "conclusion": "failure",
            "output": {
                "title": "Failed",
                "summary": "Tests failed",
                "annotations": [
                    {
                        "path": "a.py",
                        "start_line": 2,
                        "end_line": 2,
                        "annotation_level": "failure",
                        "message": "boom",
                    }
                ],
            },
            "actions": [{"label": "Retry", "description": "Run again", "identifier": "retry"}],
        },
    )
    assert (updated["status"], updated["conclusion"]) == ("completed", "failure")
    assert updated["completed_at"] is not None
    assert updated["output"]["annotations_count"] == 2
    [stored] = sim.check_runs(REPO)
    assert stored["actions"][0]["identifier"] == "retry"
    assert [a["message"] for a in stored["annotations"]] == ["here", "boom"]
    again = await inst.post(f"/repos/{REPO}/check-runs", data={"name": "box", "head_sha": HEAD_SHA})
    for ref in (HEAD_SHA, "fix"):
        latest = await inst.getitem(f"/repos/{REPO}/commits/{ref}/check-runs")
        assert [r["id"] for r in latest["check_runs"]] == [again["id"]]
    everything = await inst.getitem(f"/repos/{REPO}/commits/{HEAD_SHA}/check-runs?filter=all")
    assert everything["total_count"] == 2


async def test_commit_status_is_created_by_the_bot(
    inst: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    status = await inst.post(
        f"/repos/{REPO}/statuses/{HEAD_SHA}", data={"state": "success", "context": "box/run"}
    )
    assert (status["state"], status["context"], status["creator"]["login"]) == (
        "success",
        "box/run",
        "box-bot[bot]",
    )
    assert [s["state"] for s in sim.statuses(REPO, HEAD_SHA)] == ["success"]


async def test_job_logs_redirect_to_plain_text(
    inst: RecordingGitHubAPI, sim: GitHubSimulator, session: aiohttp.ClientSession
) -> None:
    job = sim.add_workflow_job(REPO, RUN_ID, name="test", log="line 1\nerror: boom\n")
    text = await inst.getitem(f"/repos/{REPO}/actions/jobs/{job['id']}/logs")
    assert text == "line 1\nerror: boom\n"
    [redirect] = sim.calls_to("GET", r"/logs$")
    assert redirect.status == 302
    async with session.get(f"{sim.base_url}/_sim/job-logs/{job['id']}?sig=forged") as response:
        assert response.status == 403
    jobs = await inst.getitem(f"/repos/{REPO}/actions/runs/{RUN_ID}/jobs")
    assert [(j["id"], j["conclusion"]) for j in jobs["jobs"]] == [(job["id"], "failure")]


# -- app registration from a manifest --------------------------------------------------------


async def test_manifest_code_converts_once_into_working_credentials(
    gh: RecordingGitHubAPI, sim: GitHubSimulator, clock: Clock
) -> None:
    sim.add_manifest_code("abc")
    app = await gh.post("/app-manifests/abc/conversions", data=b"")
    assert (app["id"], app["slug"]) == (APP_ID, "box-bot")
    assert app["pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert app["webhook_secret"] and app["client_id"] and app["client_secret"]
    me = await gh.getitem("/app", jwt=app_jwt(app["pem"], clock, iss=app["client_id"]))
    assert me["id"] == APP_ID
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await gh.post("/app-manifests/abc/conversions", data=b"")
    sim.add_manifest_code("late")
    clock.now += 3600
    with pytest.raises(gidgethub.BadRequest, match="Not Found"):
        await gh.post("/app-manifests/late/conversions", data=b"")


async def test_manifest_form_redirects_with_a_code(
    session: aiohttp.ClientSession, gh: RecordingGitHubAPI, sim: GitHubSimulator
) -> None:
    manifest = {
        "name": "Box Bot Dev",
        "url": "https://box.example.com",
        "redirect_url": "http://127.0.0.1:9/setup/done",
        "default_events": ["issues"],
        "default_permissions": {"issues": "write"},
    }
    async with session.post(
        f"{sim.base_url}/settings/apps/new?state=s1",
        data={"manifest": json.dumps(manifest)},
        allow_redirects=False,
    ) as response:
        assert response.status == 302
        location = response.headers["location"]
    assert location.startswith("http://127.0.0.1:9/setup/done?code=")
    assert location.endswith("&state=s1")
    code = location.split("code=")[1].split("&")[0]
    app = await gh.post(f"/app-manifests/{code}/conversions", data=b"")
    assert (app["name"], app["external_url"], app["events"]) == (
        "Box Bot Dev",
        "https://box.example.com",
        ["issues"],
    )
    assert sim.app_manifest == manifest


# -- the description itself -----------------------------------------------------------------


def test_spec_matches_paths_and_decodes_parameters(spec: OpenAPISpec) -> None:
    assert spec.match("get", f"https://api.github.com/repos/{REPO}/contents/a/b%20c.md?ref=x") == (
        "repos/get-content",
        {"owner": "Codertocat", "repo": "Hello-World", "path": "a/b c.md"},
    )
    assert spec.match("DELETE", f"/repos/{REPO}/issues/3/labels/good%2Ffirst") == (
        "issues/remove-label",
        {"owner": "Codertocat", "repo": "Hello-World", "issue_number": "3", "name": "good/first"},
    )
    assert spec.match("GET", f"/repos/{REPO}/issues/comments/5")[0] == (  # type: ignore[index]
        "issues/get-comment"
    )
    assert spec.match("PUT", f"/repos/{REPO}") is None


def test_spec_validates_recorded_request_bodies(spec: OpenAPISpec) -> None:
    check_runs = f"/repos/{REPO}/check-runs"
    assert spec.validate_request("POST", check_runs, {"name": "box", "head_sha": "a"}) == []
    assert spec.validate_request(
        "POST", check_runs, {"name": "box", "head_sha": "a", "conclusion": "great"}
    ) == [
        "conclusion: 'great' is not one of ['action_required', 'cancelled', 'failure', "
        "'neutral', 'success', 'skipped', 'stale', 'timed_out']"
    ]
    assert spec.validate_request("PATCH", f"{check_runs}/1", {"status": "completed"}) == [
        "conclusion: 'conclusion' is a required property"
    ]
    assert spec.validate_request("POST", f"/repos/{REPO}/issues/1/comments", None) == [
        "<body>: a request body is required"
    ]
    assert spec.validate_request("GET", f"/repos/{REPO}", None) == []
