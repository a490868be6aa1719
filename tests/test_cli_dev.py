"""`box-bot dev`: the app between the simulators, as an operator runs it from a shell."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.ops.demo import run_demo

PHASES = ["⏳ Starting a box", "📦 Box ready", "🛠️ Working", "✅ Finished", "🗄️ Archived"]
# After the first prompt, the review comment's follow-up goes to the same box.
FOLLOW_UP_PHASES = ["📨 Sending a follow-up", "🛠️ Working", "✅ Finished", "🗄️ Archived"]
SEPARATOR = re.compile(
    r"^──── tracking comment on octocat/hello-world#1, version (\d+) ────$", re.M
)
PR_URL = "https://github.com/octocat/hello-world/pull/2"
COMMAND = [sys.executable, "-m", "bot.cli", "dev"]


def clean_env() -> dict[str, str]:
    """The environment of a fresh machine: no app, GitHub or Box settings."""
    names = ("APP_ID", "PRIVATE_KEY", "WEBHOOK_SECRET", "BOX_API_KEY", "GITHUB_API_URL")
    return {k: v for k, v in os.environ.items() if k not in names}


def versions(output: str) -> list[str]:
    """Split the printed tracking comment versions out of the command's output."""
    parts = SEPARATOR.split(output)
    numbers = [int(n) for n in parts[1::2]]
    assert numbers == list(range(1, len(numbers) + 1))
    return [body.split("\n\n▶")[0].split("\nPull request #")[0] for body in parts[2::2]]


def phase(version: str) -> str:
    return re.search(r"^## (.+)$", version, re.M).group(1)  # type: ignore[union-attr]


async def test_demo_tells_the_whole_story_and_exits_0(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "--demo",
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    output = stdout.decode()
    assert process.returncode == 0, output + stderr.decode()

    shown = versions(output)
    assert len(shown) == len(set(shown)), "a version was printed twice"
    phases = [phase(v) for v in shown]
    assert phases[0] == PHASES[0]
    assert phases[-2:] == PHASES[-2:]
    # The first prompt, then the review follow-up in the same box, each in order.
    first, follow_up = split_after(phases, "✅ Finished")
    for part, order in ((first, PHASES), (follow_up, FOLLOW_UP_PHASES)):
        assert PHASES[2] in part
        assert part == sorted(part, key=order.index), phases
    assert follow_up[0] == FOLLOW_UP_PHASES[0]
    finished = shown[phases.index("✅ Finished")]
    assert f" · Pull request {PR_URL}\n" in finished and finished.count(PR_URL) == 1
    assert "- ✅ `pytest -q` (exit 0)" in finished
    assert "🗄️ Box archived: pull request #2 was merged. The box was up for " in shown[-1]
    assert "<!--" not in output  # the hidden marker is for GitHub, not for a person

    lines = output.splitlines()
    assert lines[0].startswith("A simulated GitHub and a simulated Box, on this machine")
    assert lines[1] == "▶ octocat adds the label box:fix to octocat/hello-world#1 (issues.labeled)"
    assert f"Pull request #2 opened from box/issue-1: {PR_URL}" in lines
    story = [line for line in lines if line.startswith(("▶", "✓"))]
    assert re.fullmatch(
        r"▶ Box bx_\w+ finished the prompt; pull request #2 is linked to run run_[0-9a-f]+",
        story[1],
    )
    assert re.fullmatch(r"▶ Check run 'Box' on [0-9a-f]{7}: completed, success", story[2])
    assert story[3] == (
        "▶ octocat comments on line 2 of src/hello.py in pull request #2: /box fix say hello to"
        " the user by name when $USER is set (pull_request_review_comment.created)"
    )
    assert story[4] == "▶ The app answers in the review thread:"
    answer = lines[lines.index(story[4]) + 1 : lines.index(story[5])]
    assert answer[:3] == ["  ✅ Done.", "", "  Commits made for this:"]
    assert re.fullmatch(
        r"  - \[`[0-9a-f]{7}`\]\(https://github.com/octocat/hello-world/commit/[0-9a-f]{40}\)"
        r" Fix the reported problem on `box/issue-1` \(pushed\)",
        answer[3],
    )
    assert story[5] == "▶ octocat merges pull request #2 (pull_request.closed)"
    assert re.fullmatch(r"▶ Box bx_\w+ is archived", story[6])
    assert re.fullmatch(r"✓ The demo completed in [\d.]+ s\.", story[7])
    assert lines[-1].startswith("Next: `box-bot dev` keeps the app and both simulators running")
    # Nothing is left behind in the working directory.
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


async def test_demo_that_does_not_finish_in_time_exits_1() -> None:
    lines: list[str] = []
    code = await run_demo(lines.append, within=0.3)
    assert code == 1
    assert lines[-1] == "✗ The demo did not complete: it took longer than 0.3 s"
    assert "⏳ Starting a box" in "\n".join(lines)


async def test_dev_runs_until_sigterm_and_takes_the_printed_send_command(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "--port",
        "0",
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        seen = await read_until(process.stdout, "Press Ctrl-C to stop.")
        assert re.search(r"App {15}http://127\.0\.0\.1:\d+ ", seen)
        assert re.search(r"GitHub simulator  http://127\.0\.0\.1:\d+ ", seen)
        assert re.search(r"Box simulator     http://127\.0\.0\.1:\d+/api/box/v1", seen)
        commands = [line.strip() for line in seen.splitlines() if "box-bot send" in line]
        [command] = [line for line in commands if line.startswith("box-bot send issues ")]
        argv = shlex.split(command)
        assert argv[:3] == ["box-bot", "send", "issues"]
        payload = Path(argv[3])
        assert await asyncio.to_thread(payload.is_file)

        assert await asyncio.to_thread(main, argv[1:]) == 0
        await read_until(process.stdout, "## ⏳ Starting a box")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().splitlines()[-1] == "box-bot dev stopped."
    assert not await asyncio.to_thread(payload.exists)  # the temporary directory is gone


async def test_dev_prints_send_lines_for_a_fix_comment_and_a_review_comment(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "--port",
        "0",
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        seen = await read_until(process.stdout, "Press Ctrl-C to stop.")
        assert "or ask for the fix in a comment on it (issue_comment.created, `/box fix" in seen
        argv = send_line(seen, "issue_comment")
        assert await asyncio.to_thread(main, argv[1:]) == 0
        seen = await read_until(process.stdout, "Merge it (pull_request.closed)")
        assert "Ask for a change on line 2 of src/hello.py in its diff" in seen
        argv = send_line(seen, "pull_request_review_comment")
        await read_until(process.stdout, "## ✅ Finished")
        assert await asyncio.to_thread(main, argv[1:]) == 0
        # The same box takes the follow-up: the tracking comment starts over, then finishes.
        await read_until(process.stdout, "## 🛠️ Working")
        await read_until(process.stdout, "## ✅ Finished")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0


def send_line(output: str, event: str) -> list[str]:
    """The arguments of the one printed `box-bot send` line for *event*."""
    [line] = [
        line.strip()
        for line in output.splitlines()
        if line.strip().startswith(f"box-bot send {event} ")
    ]
    return shlex.split(line)


def split_after(items: list[str], item: str) -> tuple[list[str], list[str]]:
    """Split *items* after the first *item*."""
    cut = items.index(item) + 1
    return items[:cut], items[cut:]


async def read_until(stream: asyncio.StreamReader, text: str) -> str:
    """Read lines until one contains *text*; return everything read."""
    seen = ""
    async with asyncio.timeout(30):
        while text not in seen:
            line = await stream.readline()
            assert line, f"output ended before {text!r}:\n{seen}"
            seen += line.decode()
    return seen


async def run_command(*argv: str, cwd: Path) -> tuple[int | None, str, str]:
    """Run `box-bot ARGV…` that must exit by itself; return its code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND[:-1],
        *argv,
        cwd=cwd,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_dev_on_a_busy_port_says_how_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stdout, stderr = await run_command("dev", "--port", str(port), cwd=tmp_path)
    assert code == 1
    assert stdout.splitlines() == [
        f"box-bot dev: cannot listen on 127.0.0.1:{port} (Address already in use):"
        " pass --port with a free port, or --port 0 to pick one"
    ]
    assert stderr == ""


@pytest.mark.parametrize("port", ["70000", "-1"])
async def test_dev_on_a_port_that_is_not_one_is_one_line(tmp_path: Path, port: str) -> None:
    for argv in (["dev", "--port", port], ["dev", "--demo", "--port", port]):
        code, stdout, stderr = await run_command(*argv, cwd=tmp_path)
        assert code == 2
        assert stdout == ""
        assert stderr.splitlines() == [
            f"box-bot dev: --port {port} is not a TCP port: use 1 to 65535, or 0 for a free one"
        ]


@pytest.mark.parametrize("argv", [["dev", "--port", "x"], ["dev", "--log-level", "LOUD"]])
def test_bad_options_are_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
