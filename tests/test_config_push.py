"""A push to the default branch that changes `.github/box.yml` drops the cached copy."""

from __future__ import annotations

from typing import Any

import pytest

from bot.ingress.screen import Skip
from bot.models import RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import INSTALLATION_ID, REPO, RunningApp, load_payload
from tests.flow import labeled, post_not_stored, wait_for_run

CONFIG = ".github/box.yml"
ORG_REPO = "Codertocat/.github"


def pushed(
    *, ref: str = "refs/heads/master", modified: list[str], repo: str = REPO
) -> dict[str, Any]:
    """A `push` delivery of one commit that modified *modified* on *ref* of *repo*."""
    data = load_payload("push.event.1")
    owner, name = repo.split("/")
    data.update(ref=ref, deleted=False, after="f" * 40)
    data["repository"] = {**data["repository"], "full_name": repo, "name": name}
    data["commits"] = [
        {
            "id": "f" * 40,
            "tree_id": "e" * 40,
            "distinct": True,
            "message": "Tune the box",
            "timestamp": "2019-05-15T15:20:30-05:00",
            "url": f"https://github.com/{owner}/{name}/commit/{'f' * 40}",
            "author": {
                "name": "Codertocat",
                "email": "21031067+Codertocat@users.noreply.github.com",
            },
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
            "added": [],
            "removed": [],
            "modified": modified,
        }
    ]
    data["head_commit"] = data["commits"][0]
    return data


def config_calls(github: GitHubSimulator, repo: str = REPO) -> list[Any]:
    return github.calls_to("GET", rf"^/repos/{repo}/contents/\.github/box\.yml$")


async def run_on(app: RunningApp, github: GitHubSimulator, number: int) -> None:
    github.add_issue(REPO, number, title=f"Issue {number}", body="Please fix.")
    await app.post("issues", labeled(number))
    await wait_for_run(app, number, RunState.IDLE)


async def push(app: RunningApp, payload: dict[str, Any], delivery: str) -> None:
    await app.post("push", payload, delivery_id=delivery)
    row = await app.wait_for(delivery)
    assert row.done_handlers == ("config.on_push",)


async def test_push_changing_the_file_makes_the_next_run_read_it_afresh(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "model: gpt-5.4\n")
    await run_on(app, github_sim, 61)
    assert all("if-none-match" in call.headers for call in config_calls(github_sim)[1:])
    github_sim.set_file(REPO, CONFIG, "model: gpt-5.5\n")
    before = len(config_calls(github_sim))
    merged_by_a_bot = pushed(modified=[CONFIG])
    merged_by_a_bot["sender"] = {**merged_by_a_bot["sender"], "login": "merge[bot]", "type": "Bot"}
    await push(app, merged_by_a_bot, "push-config")
    await run_on(app, github_sim, 62)
    first_after = config_calls(github_sim)[before]
    assert (first_after.status, "if-none-match" in first_after.headers) == (200, False)
    models = [r.json["model"] for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]
    assert models == ["gpt-5.4", "gpt-5.5"]


@pytest.mark.parametrize(
    ("ref", "modified"),
    [("refs/heads/master", ["README.md"]), ("refs/heads/feature", [CONFIG])],
    ids=["other-file", "other-branch"],
)
async def test_other_pushes_keep_the_cached_copy(
    app: RunningApp, github_sim: GitHubSimulator, ref: str, modified: list[str]
) -> None:
    github_sim.set_file(REPO, CONFIG, "model: gpt-5.4\n")
    await run_on(app, github_sim, 63)
    before = len(config_calls(github_sim))
    other = pushed(ref=ref, modified=modified)
    if ref == "refs/heads/master":
        await push(app, other, "push-other")
    else:  # intake answers it without storing: no handler acts on another branch's push
        await post_not_stored(app, "push", other, "push-other", Skip.OTHER_BRANCH)
    await run_on(app, github_sim, 64)
    first_after = config_calls(github_sim)[before]
    assert (first_after.status, "if-none-match" in first_after.headers) == (304, True)


async def test_push_to_the_org_repository_drops_the_org_file(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_repo(ORG_REPO, installation_id=INSTALLATION_ID, default_branch="master")
    github_sim.set_file(ORG_REPO, CONFIG, "instructions: Old org rule.\n")
    await run_on(app, github_sim, 65)
    github_sim.set_file(ORG_REPO, CONFIG, "instructions: New org rule.\n")
    before = len(config_calls(github_sim, ORG_REPO))
    await push(app, pushed(modified=[CONFIG], repo=ORG_REPO), "push-org")
    await run_on(app, github_sim, 66)
    first_after = config_calls(github_sim, ORG_REPO)[before]
    assert (first_after.status, "if-none-match" in first_after.headers) == (200, False)
    prompts = [r.json["prompt"] for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]
    assert "Old org rule." in prompts[0] and "New org rule." in prompts[1]
