"""The `Box config` check on pull requests that change `.github/box.yml`."""

from __future__ import annotations

from typing import Any

from bot.sim.github import GitHubSimulator
from tests.conftest import INSTALLATION_ID, REPO, RunningApp
from tests.flow import pull_request_event

CONFIG = ".github/box.yml"
PR = 51
BRANCH = "tune-box"
SHA = "d" * 40


def open_pull(github: GitHubSimulator, files: list[str], sha: str = SHA) -> None:
    github.add_pull(
        REPO, PR, title="Tune the box", head=BRANCH, base="master", head_sha=sha, files=files
    )


async def post_pull(app: RunningApp, action: str, sha: str = SHA) -> None:
    payload = pull_request_event(f"pull_request.{action}.1", PR, head=BRANCH, sha=sha)
    payload["installation"] = {"id": INSTALLATION_ID}
    delivery = f"{action}-{sha[:4]}"
    await app.post("pull_request", payload, delivery_id=delivery)
    await app.wait_for(delivery)


def config_checks(github: GitHubSimulator) -> list[dict[str, Any]]:
    return [c for c in github.check_runs(REPO) if c["name"] == "Box config"]


def contents_refs(github: GitHubSimulator) -> list[str | None]:
    calls = github.calls_to("GET", rf"^/repos/{REPO}/contents/\.github/box\.yml$")
    return [call.query.get("ref") for call in calls]


async def test_valid_file_in_a_bots_pull_request_passes(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "model: gpt-5.4\n", ref=BRANCH)
    open_pull(github_sim, ["README.md", CONFIG])
    await post_pull(app, "opened")  # sent by `box-agent[bot]`
    [check] = config_checks(github_sim)
    assert (check["head_sha"], check["status"], check["conclusion"]) == (
        SHA,
        "completed",
        "success",
    )
    assert check["output"]["title"] == "`.github/box.yml` is valid"
    assert check["annotations"] == []
    assert contents_refs(github_sim) == [SHA]


async def test_each_problem_is_listed_and_annotated_with_its_line(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(
        REPO, CONFIG, "label: box:fix\nmodle: opus\nttl_minutes: soon\n", ref=BRANCH
    )
    open_pull(github_sim, [CONFIG])
    await post_pull(app, "opened")
    [check] = config_checks(github_sim)
    assert (check["head_sha"], check["conclusion"]) == (SHA, "failure")
    assert check["output"]["title"] == "`.github/box.yml` has 2 problems"
    summary = check["output"]["summary"]
    assert "- `.github/box.yml` line 2: unknown key `modle` (did you mean `model`?)" in summary
    assert "- `.github/box.yml` line 3: `ttl_minutes` must be a whole number, not a string" in (
        summary
    )
    assert [
        (a["path"], a["start_line"], a["end_line"], a["annotation_level"], a["message"])
        for a in check["annotations"]
    ] == [
        (CONFIG, 2, 2, "failure", "unknown key `modle` (did you mean `model`?)"),
        (CONFIG, 3, 3, "failure", "`ttl_minutes` must be a whole number, not a string"),
    ]


async def test_a_file_too_large_is_annotated_on_line_1(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, b"#" * 70_000, ref=BRANCH)
    open_pull(github_sim, [CONFIG])
    await post_pull(app, "opened")
    [check] = config_checks(github_sim)
    assert check["conclusion"] == "failure"
    [annotation] = check["annotations"]
    assert (annotation["start_line"], annotation["message"]) == (
        1,
        "file is larger than 64 KiB (70000 bytes); shorten it",
    )


async def test_pull_request_not_touching_the_file_gets_no_check(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "modle: opus\n", ref=BRANCH)
    open_pull(github_sim, ["README.md"])
    await post_pull(app, "opened")
    assert config_checks(github_sim) == []
    assert contents_refs(github_sim) == []


async def test_each_new_head_commit_gets_its_own_check(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "modle: opus\n", ref=BRANCH)
    open_pull(github_sim, [CONFIG])
    await post_pull(app, "opened")
    fixed = "e" * 40
    github_sim.push_branch(REPO, BRANCH, fixed)
    github_sim.set_file(REPO, CONFIG, "model: opus\nprovider: claude-code\n", ref=BRANCH)
    await post_pull(app, "synchronize", sha=fixed)
    checks = {c["head_sha"]: c["conclusion"] for c in config_checks(github_sim)}
    assert checks == {SHA: "failure", fixed: "success"}


async def test_removing_the_file_passes_and_says_so(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "label: box:fix\n")
    open_pull(github_sim, [CONFIG])
    await post_pull(app, "reopened")
    [check] = config_checks(github_sim)
    assert (check["conclusion"], check["output"]["title"]) == (
        "success",
        "`.github/box.yml` is removed",
    )
    assert contents_refs(github_sim) == []


async def test_auto_fix_reviews_problems_are_annotated_in_the_check(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    text = "label: box:fix\nauto_fix_reviews:\n  enabled: true\n  max_rounds: 12\n"
    github_sim.set_file(REPO, CONFIG, text, ref=BRANCH)
    open_pull(github_sim, [CONFIG])
    await post_pull(app, "opened")
    [check] = config_checks(github_sim)
    assert (check["conclusion"], check["output"]["title"]) == (
        "failure",
        "`.github/box.yml` has 1 problem",
    )
    message = "`auto_fix_reviews.max_rounds` must be between 1 and 10, not 12"
    assert f"- `.github/box.yml` line 4: {message}" in check["output"]["summary"]
    assert [(a["start_line"], a["message"]) for a in check["annotations"]] == [(4, message)]
