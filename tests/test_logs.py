"""Log lines: the work's ids on each line, JSON when asked, secrets never."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logs import ContextFilter, JSONFormatter, RedactingFormatter, bind

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
