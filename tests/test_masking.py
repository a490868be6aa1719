"""Secrets an agent prints never reach a comment, a check run or a log line, and are counted."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from bot.models import RunState
from bot.redact import MASK, redact
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import RunCommand, Say
from bot.sim.github import GitHubSimulator
from tests.conftest import REPO, RunningApp
from tests.flow import commented, wait_for_run

ISSUE = 31
PR = 32
HEAD_SHA = "c" * 40

# One of each kind, as a provider or a cloud hands it out (made-up values of the real shapes).
SECRETS = {
    "openai_key": "sk-" + "Ab1" * 16,
    "openai_project_key": "sk-proj-" + "Zy9_" * 12,
    "anthropic_key": "sk-ant-api03-" + "Qw3-" * 20,
    "aws_access_key": "AKIA" + "ABCDEFGHIJKLMNOP",
    "aws_secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "slack_token": "xoxb-" + "1234567890-" * 3 + "abcdef",
    "gitlab_token": "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0",
    "npm_token": "npm_" + "a1B2c3D4e5" * 3 + "F6g7H8",
    "authorization": "Basic dXNlcjpodW50ZXIy",
}
AGENT_TEXT = (
    f"Keys I found: {SECRETS['openai_key']}, {SECRETS['openai_project_key']} and "
    f"{SECRETS['anthropic_key']}.\n"
    f"AWS: {SECRETS['aws_access_key']} aws_secret_access_key={SECRETS['aws_secret_key']}\n"
    f"Slack {SECRETS['slack_token']}, GitLab {SECRETS['gitlab_token']}, "
    f"npm {SECRETS['npm_token']}\n"
    f"Authorization: {SECRETS['authorization']}"
)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"key={SECRETS['openai_key']}", "key="),
        (f"export ANTHROPIC_API_KEY={SECRETS['anthropic_key']}", "export ANTHROPIC_API_KEY="),
        (f"id {SECRETS['aws_access_key']} ok", "id  ok"),
        (f'"aws_secret_access_key": "{SECRETS["aws_secret_key"]}"', '"aws_secret_access_key": ""'),
        (f"AWS_SECRET_ACCESS_KEY = {SECRETS['aws_secret_key']}", "AWS_SECRET_ACCESS_KEY = "),
        (
            f"curl -H 'Authorization: {SECRETS['authorization']}' x",
            "curl -H 'Authorization: Basic ' x",
        ),
        (f'{{"Authorization": "token {SECRETS["slack_token"]}"}}', '{"Authorization": ""}'),
        (
            f"//registry.npmjs.org/:_authToken={SECRETS['npm_token']}",
            "//registry.npmjs.org/:_authToken=",
        ),
    ],
)
def test_each_kind_of_secret_is_masked_and_its_surroundings_kept(text: str, kept: str) -> None:
    masked = redact(text)

    assert masked.replace(MASK, "") == kept
    assert not any(secret in masked for secret in SECRETS.values())


@pytest.mark.parametrize(
    "text",
    [
        "pip install scikit-learn; see sk-learn docs",
        "AKIA is a prefix; AKIAshort is not a key",
        "the code box_not_archived and xox-nope stay",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


async def test_agent_output_with_secrets_is_masked_in_comment_check_and_logs(
    app: RunningApp,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    github_sim.add_pull(REPO, PR, title="Tidy", head="tidy", head_sha=HEAD_SHA, user="octocat")
    box_sim.scripts["leaky"] = [
        RunCommand(f"aws configure set aws_secret_access_key {SECRETS['aws_secret_key']}"),
        RunCommand(f"echo {SECRETS['openai_key']} > .env"),
        Say(AGENT_TEXT),
    ]
    box_sim.default_script = "leaky"
    before = await masked_by_kind(app)

    await app.post("issue_comment", commented(PR, "/box fix tidy up", pull=True))
    run = await wait_for_run(app, PR, RunState.IDLE)

    comment = next(c["body"] for c in github_sim.comments(REPO, PR) if c["id"] == run.comment_id)
    (check,) = [c for c in github_sim.check_runs(REPO) if c["head_sha"] == HEAD_SHA]
    shown = [comment, *map(str, check["output"].values()), caplog.text]
    for secret in SECRETS.values():
        assert all(secret not in text for text in shown), secret
    assert "Keys I found: [redacted]" in comment
    after = await masked_by_kind(app)
    for kind in (
        "openai_key",
        "anthropic_key",
        "aws_access_key",
        "aws_secret_key",
        "slack_token",
        "gitlab_token",
        "npm_token",
        "authorization_header",
    ):
        assert after.get(kind, 0) > before.get(kind, 0), kind


async def masked_by_kind(app: RunningApp) -> dict[str, Any]:
    """`box_bot_secrets_masked_total` from the app's /metrics, by kind."""
    text = await (await app.client.get("/metrics")).text()
    found = re.findall(r'^box_bot_secrets_masked_total\{kind="([a-z_]+)"\} ([0-9.]+)$', text, re.M)
    return {kind: float(value) for kind, value in found}
