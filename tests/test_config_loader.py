"""The config loader against the GitHub simulator: sizes, encodings, 304s and the org file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import gidgethub
import pytest

import bot.config.loader
from bot.config.loader import ConfigLoader
from bot.config.repo import Defaults, RepoConfigError
from bot.github.client import GitHubAppAuth
from bot.models import RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import INSTALLATION_ID, REPO, RunningApp
from tests.flow import commented, pull_request_event, wait_for_run

ORG_REPO = "Codertocat/.github"
CONFIG = ".github/box.yml"
NOT_ACCESSIBLE = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest/repos/contents#get-repository-content",
}


@pytest.fixture
async def loader(github_sim: GitHubSimulator) -> AsyncIterator[ConfigLoader]:
    async with aiohttp.ClientSession() as session:
        auth = GitHubAppAuth(
            session,
            app_id="321",
            private_key=github_sim.private_key_pem,
            base_url=github_sim.base_url,
            write_interval=0.0,
        )
        yield ConfigLoader(auth, Defaults())


async def problems_of(loader: ConfigLoader) -> list[tuple[int | None, str]]:
    with pytest.raises(RepoConfigError) as caught:
        await loader.load(INSTALLATION_ID, REPO, "master")
    return [(problem.line, problem.message) for problem in caught.value.problems]


def contents_calls(github: GitHubSimulator, repo: str = REPO) -> list[Any]:
    return github.calls_to("GET", rf"^/repos/{repo}/contents/\.github/box\.yml$")


# -- what reaches the parser ---------------------------------------------------------------


async def test_a_file_over_64_kib_is_refused_not_cut(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    text = "instructions: " + "x" * 70_000 + "\n"
    github_sim.set_file(REPO, CONFIG, text)
    assert await problems_of(loader) == [
        (None, f"file is larger than 64 KiB ({len(text)} bytes); shorten it")
    ]


async def test_invalid_utf8_is_reported_with_its_line(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, b"label: box:fix\ninstructions: caf\xe9\n")
    assert await problems_of(loader) == [(2, "file is not valid UTF-8 text")]


async def test_a_file_github_sends_without_content_is_too_large(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    size = 1024 * 1024 + 10
    github_sim.set_file(REPO, CONFIG, b"#" * size)
    assert await problems_of(loader) == [
        (None, f"file is larger than 64 KiB ({size} bytes); shorten it")
    ]
    [call] = contents_calls(github_sim)
    assert call.status == 200


async def test_ref_is_url_encoded(loader: ConfigLoader, github_sim: GitHubSimulator) -> None:
    github_sim.set_file(REPO, CONFIG, "label: box:branch\n", ref="odd#branch&ref=x")
    config = await loader.load(INSTALLATION_ID, REPO, "odd#branch&ref=x")
    assert config.label == "box:branch"
    [call] = contents_calls(github_sim)
    assert call.query == {"ref": "odd#branch&ref=x"}


# -- conditional requests ------------------------------------------------------------------


async def test_unchanged_file_comes_from_a_304_and_is_not_parsed_again(
    loader: ConfigLoader, github_sim: GitHubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_parse = bot.config.loader.parse_repo_config

    def counting_parse(text: str | bytes, source: str) -> Any:
        parsed.append(source)
        return real_parse(text, source)

    monkeypatch.setattr(bot.config.loader, "parse_repo_config", counting_parse)
    github_sim.set_file(REPO, CONFIG, "label: box:first\n")
    first = await loader.load(INSTALLATION_ID, REPO, "master")
    second = await loader.load(INSTALLATION_ID, REPO, "master")
    assert (first.label, second.label) == ("box:first", "box:first")
    calls = contents_calls(github_sim)
    assert [call.status for call in calls] == [200, 304]
    assert "if-none-match" not in calls[0].headers and "if-none-match" in calls[1].headers
    assert parsed == [CONFIG]

    github_sim.set_file(REPO, CONFIG, "label: box:second\n")
    third = await loader.load(INSTALLATION_ID, REPO, "master")
    assert third.label == "box:second"
    assert [call.status for call in contents_calls(github_sim)] == [200, 304, 200]
    assert parsed == [CONFIG, CONFIG]


# -- the organisation's file ---------------------------------------------------------------


async def test_org_file_applies_under_the_repository_file(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    github_sim.add_repo(ORG_REPO, installation_id=INSTALLATION_ID)
    github_sim.set_file(ORG_REPO, CONFIG, "label: box:org\ninstructions: Org rule.\n")
    github_sim.set_file(REPO, CONFIG, "label: box:repo\n")
    config = await loader.load(INSTALLATION_ID, REPO, "master")
    assert (config.label, config.instructions) == ("box:repo", "Org rule.")


async def test_absent_org_repository_leaves_the_repository_file(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "label: box:repo\n")
    config = await loader.load(INSTALLATION_ID, REPO, "master")
    assert config.label == "box:repo"
    [org_call] = contents_calls(github_sim, ORG_REPO)
    assert org_call.status == 404


async def test_forbidden_org_repository_leaves_the_repository_file(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    github_sim.add_repo(ORG_REPO, installation_id=INSTALLATION_ID)
    github_sim.set_file(ORG_REPO, CONFIG, "label: box:org\n")
    github_sim.set_file(REPO, CONFIG, "instructions: Repo rule.\n")
    github_sim.inject_fault(
        "GET", rf"^/repos/{ORG_REPO}/contents/", status=403, body=NOT_ACCESSIBLE
    )
    config = await loader.load(INSTALLATION_ID, REPO, "master")
    assert (config.label, config.instructions) == ("box:fix", "Repo rule.")
    [org_call] = contents_calls(github_sim, ORG_REPO)
    assert org_call.status == 403


async def test_forbidden_repository_file_is_an_error_not_a_default(
    loader: ConfigLoader, github_sim: GitHubSimulator
) -> None:
    github_sim.set_file(REPO, CONFIG, "label: box:repo\n")
    github_sim.inject_fault("GET", rf"^/repos/{REPO}/contents/", status=403, body=NOT_ACCESSIBLE)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await loader.load(INSTALLATION_ID, REPO, "master")
    assert caught.value.status_code == 403


# -- a pull request's copy -----------------------------------------------------------------


async def test_a_pull_requests_box_yml_is_never_used_for_a_run(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO, CONFIG, "provider: claude-code\nmodel: haiku\ninstructions: Default rule.\n"
    )
    github_sim.add_pull(
        REPO, 31, title="Try a bigger model", head="bigger", head_sha="c" * 40, files=[CONFIG]
    )
    github_sim.set_file(
        REPO, CONFIG, "provider: claude-code\nmodel: opus\ninstructions: PR rule.\n", ref="bigger"
    )
    opened = pull_request_event("pull_request.opened.1", 31, head="bigger", sha="c" * 40)
    await app.post("pull_request", opened, delivery_id="pr-31")
    await app.wait_for("pr-31")
    await app.post("issue_comment", commented(31, "/box fix it", pull=True))
    await wait_for_run(app, 31, RunState.IDLE)
    [sent] = [r.json for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]
    assert (sent["provider"], sent["model"]) == ("claude-code", "haiku")
    assert "Default rule." in sent["prompt"] and "PR rule." not in sent["prompt"]
    # The PR's copy is read at its head for the `Box config` check, and only there.
    assert {call.query.get("ref") for call in contents_calls(github_sim)} == {"master", "c" * 40}
    [check] = [c for c in github_sim.check_runs(REPO) if c["name"] == "Box config"]
    assert (check["head_sha"], check["conclusion"]) == ("c" * 40, "success")
