"""`box-bot send`: a payload file signed and posted like GitHub, at the real app."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest

from bot.cli import main
from bot.ingress.webhook import verify_signature
from bot.ops.send import webhook_headers
from tests.conftest import SECRET, RunningApp, load_payload

EXACT_BYTES = b'{\n  "action": "labeled",  "zen": "Keep it logically awesome."\n}\n'


@pytest.fixture
def body() -> bytes:
    """A real payload laid out as a person might save it: the bytes must arrive unchanged."""
    return json.dumps(load_payload("issues.labeled.1"), indent=4).encode() + b"\n"


@pytest.fixture
def payload(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "issues.labeled.json"
    path.write_bytes(body)
    return path


def url(app: RunningApp) -> str:
    return str(app.client.make_url("/api/github/webhooks"))


async def send(*argv: str) -> int:
    """Run `box-bot send …` the way a shell would (its own event loop)."""
    return await asyncio.to_thread(main, ["send", *argv])


def test_headers_are_the_ones_github_sends() -> None:
    headers = webhook_headers("issues", EXACT_BYTES, SECRET, "d-1")
    assert headers == {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": headers["X-Hub-Signature-256"],
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/box-bot-send",
    }
    assert verify_signature(SECRET, EXACT_BYTES, headers["X-Hub-Signature-256"])


async def test_the_app_accepts_and_stores_the_exact_file_bytes(
    app: RunningApp, payload: Path, body: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await send(
        "issues", str(payload), "--url", url(app), "--secret", SECRET, "--delivery", "replayed-1"
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("202 Accepted (delivery replayed-1)\n")
    assert json.loads(out.splitlines()[1]) == {
        "ok": True,
        "delivery": "replayed-1",
        "stored": True,
        "duplicate": False,
    }
    stored = await app.wait_for("replayed-1")
    assert (stored.event, stored.action, stored.payload) == (
        "issues",
        "labeled",
        body,
    )


async def test_each_send_is_a_new_delivery_unless_one_is_given(
    app: RunningApp, payload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        assert await send("issues", str(payload), "--url", url(app), "--secret", SECRET) == 0
    first, second = (
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    )
    assert first["delivery"] != second["delivery"]
    uuid.UUID(first["delivery"])
    assert (
        await send(
            "issues",
            str(payload),
            "--url",
            url(app),
            "--secret",
            SECRET,
            "--delivery",
            first["delivery"],
        )
        == 0
    )
    assert '"duplicate": true' in capsys.readouterr().out


async def test_wrong_secret_prints_the_refusal_and_exits_1(
    app: RunningApp, payload: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await send("issues", str(payload), "--url", url(app), "--secret", "not-the-secret")
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("401 Unauthorized")
    assert "invalid X-Hub-Signature-256" in out


async def test_secret_comes_from_dotenv_when_not_given(
    app: RunningApp,
    payload: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"# local app\nWEBHOOK_SECRET='{SECRET}'\n")
    assert await send("issues", str(payload), "--url", url(app)) == 0
    assert capsys.readouterr().out.startswith("202 Accepted")


async def test_environment_secret_wins_over_dotenv(
    app: RunningApp,
    payload: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("WEBHOOK_SECRET=an-old-secret-that-is-wrong\n")
    assert await send("issues", str(payload), "--url", url(app)) == 0
    assert capsys.readouterr().out.startswith("202 Accepted")


def test_an_unreadable_dotenv_is_one_line(
    payload: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f'WEBHOOK_SECRET="{SECRET}\n')
    assert main(["send", "issues", str(payload)]) == 1
    assert capsys.readouterr().err == (
        f"box-bot send: {tmp_path / '.env'} line 1 is not KEY=value:"
        " fix it (a quote it opens must be closed)\n"
    )


def test_missing_secret_file_or_server_exit_1_with_a_reason(
    payload: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["send", "issues", str(payload)]) == 1
    assert "no webhook secret: pass --secret or set WEBHOOK_SECRET" in capsys.readouterr().err

    missing = tmp_path / "nope.json"
    assert main(["send", "issues", str(missing), "--secret", SECRET]) == 1
    assert f"cannot read {missing}" in capsys.readouterr().err

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/api/github/webhooks"
    assert main(["send", "issues", str(payload), "--url", closed, "--secret", SECRET]) == 1
    assert f"cannot reach {closed}" in capsys.readouterr().err
