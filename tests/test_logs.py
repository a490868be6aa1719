"""Log lines: the work's ids on each line, JSON when asked, secrets never."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logs import ContextFilter, JSONFormatter, RedactingFormatter, bind
from bot.models import RunState
from bot.sim.github import GitHubSimulator
from tests.conftest import REPO, RunningApp
from tests.flow import labeled, wait_for_run

TOKEN = "ghs_" + "A1b2C3d4" * 8
DESKTOP = "https://desktop.example/stream.html?token=s3cretDesktopToken"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream, handler


def test_json_lines_carry_the_bound_ids_and_no_secrets(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JSONFormatter())
    with bind(delivery="d-1", installation=42, repo="o/r"), bind(run="run_abc", box="bx_1"):
        logger.info("token %s and desktop %s", TOKEN, DESKTOP)
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("delivery", "installation", "repo", "run", "box")} == {
        "delivery": "d-1",
        "installation": 42,
        "repo": "o/r",
        "run": "run_abc",
        "box": "bx_1",
    }
    assert TOKEN not in first["message"] and "s3cretDesktopToken" not in first["message"]
    assert "delivery" not in second


def test_text_lines_end_with_the_bound_ids(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    with bind(delivery="d-2", run=None):
        logger.warning("Authorization: Bearer %s", TOKEN)
    assert stream.getvalue().strip() == "WARNING Authorization: Bearer [redacted] [delivery=d-2]"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_runs_lines_name_the_run_not_the_delivery_that_started_it(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    keep, bot_logger = _Keep(), logging.getLogger("bot")
    level = bot_logger.level
    bot_logger.addHandler(keep)
    bot_logger.setLevel(logging.INFO)
    try:
        github_sim.add_issue(REPO, 71, title="Log me")
        await app.post("issues", labeled(71), delivery_id="log-1")
        run = await wait_for_run(app, 71, RunState.IDLE)
    finally:
        bot_logger.removeHandler(keep)
        bot_logger.setLevel(level)
    [create] = [r for r in keep.records if r.getMessage().startswith("Box API POST /boxes ")]
    context = create.context  # type: ignore[attr-defined]
    assert context["run"] == run.id and context["repo"] == REPO
    assert "delivery" not in context
    handled = [r for r in keep.records if "delivery=log-1" in r.getMessage()]
    assert handled and all(r.context.get("delivery") == "log-1" for r in handled)  # type: ignore[attr-defined]
