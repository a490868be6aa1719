"""`box-bot register`: GitHub's manifest flow, driven like a browser against the simulator."""

from __future__ import annotations

import asyncio
import html
import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.ops.register import api_url_for, run_register
from bot.settings import load_settings
from bot.sim.github import GitHubSimulator

APP_YML = Path(__file__).parents[1] / "app.yml"
PACKAGED = Path(__file__).parents[1] / "bot" / "ops" / "app.yml"
HOOK_URL = "https://smee.io/box-bot-test-channel"
FORM_ACTION = re.compile(r'<form action="([^"]+)" method="post">')
MANIFEST_FIELD = re.compile(r'<input type="hidden" name="manifest" value="([^"]*)">')

Lines = list[str]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_sim: GitHubSimulator) -> Path:
    """A working directory whose environment points GitHub (web and API) at the simulator."""
    monkeypatch.chdir(tmp_path)
    for name in ("WEBHOOK_PROXY_URL", "APP_ID", "PRIVATE_KEY", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_URL", github_sim.base_url)
    monkeypatch.setenv("GITHUB_API_URL", github_sim.base_url)
    return tmp_path


async def start(**options: Any) -> tuple[asyncio.Task[int], Lines, str]:
    """Start `box-bot register` on a free port; return it, its output and its page's URL."""
    lines: Lines = []
    task = asyncio.create_task(
        run_register(lines.append, port=0, manifest=APP_YML, **{"webhook_url": HOOK_URL, **options})
    )
    async with asyncio.timeout(5):
        while not any(line.startswith("Open ") for line in lines):
            assert not task.done(), lines
            await asyncio.sleep(0.01)
    page_url = re.search(r"Open (\S+) in your browser", lines[1]).group(1)  # type: ignore[union-attr]
    return task, lines, page_url


async def read_form(browser: aiohttp.ClientSession, page_url: str) -> tuple[str, str]:
    """Open the local page; return the form's action and its manifest field."""
    async with browser.get(page_url) as page:
        assert page.status == 200
        text = await page.text()
    action = html.unescape(FORM_ACTION.search(text).group(1))  # type: ignore[union-attr]
    return action, html.unescape(MANIFEST_FIELD.search(text).group(1))  # type: ignore[union-attr]


async def submit(browser: aiohttp.ClientSession, action: str, manifest: str) -> str:
    """Post the form to GitHub like a browser; return where GitHub redirects."""
    async with browser.post(action, data={"manifest": manifest}, allow_redirects=False) as answer:
        assert answer.status == 302
        return answer.headers["Location"]


async def register_in_browser(**options: Any) -> tuple[int, Lines, dict[str, Any]]:
    """Run the whole flow; return the exit code, the output and the manifest GitHub got."""
    task, lines, page_url = await start(**options)
    async with aiohttp.ClientSession() as browser:
        action, manifest = await read_form(browser, page_url)
        callback = await submit(browser, action, manifest)
        async with browser.get(callback) as done:
            assert done.status == 200
            assert "Registered" in await done.text()
    return await asyncio.wait_for(task, 5), lines, json.loads(manifest)


async def text_of(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


async def test_register_creates_the_app_and_writes_its_credentials(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    env_file = workdir / ".env"
    await asyncio.to_thread(env_file.write_text, "# my settings\nBOX_API_KEY=box_live_keepme123\n")

    code, lines, manifest = await register_in_browser()

    assert code == 0
    app_yml = yaml.safe_load(await text_of(APP_YML))
    local = lines[1].split()[1].rstrip("/")
    assert manifest == {
        "name": "box-bot",
        "url": app_yml["url"],
        "description": app_yml["description"],
        "public": False,
        "default_permissions": app_yml["default_permissions"],
        "default_events": app_yml["default_events"],
        "hook_attributes": {"url": HOOK_URL, "active": True},
        "redirect_url": f"{local}/callback",
    }
    assert github_sim.app_manifest == manifest
    assert lines[:3] == [
        f"Using the manifest {APP_YML}.",
        f"Open {local}/ in your browser to create the GitHub App on {github_sim.base_url}.",
        f"This needs a browser on this machine, and {github_sim.base_url} reachable from it."
        " Waiting up to 10 min for GitHub to send the browser back (Ctrl-C cancels).",
    ]
    assert lines[3].startswith(
        "Registered the GitHub App 'box-bot' (id 321): https://github.com/apps/box-bot\n"
        f"Wrote APP_ID, PRIVATE_KEY and WEBHOOK_SECRET to {env_file}."
    )
    assert github_sim.private_key_pem not in "\n".join(lines)

    written = (await text_of(env_file)).splitlines()
    assert written[:2] == ["# my settings", "BOX_API_KEY=box_live_keepme123"]
    assert [line.split("=")[0] for line in written[2:]] == [
        "APP_ID",
        "PRIVATE_KEY",
        "WEBHOOK_SECRET",
    ]
    settings = load_settings({}, env_file)
    assert settings.app_id == "321"
    assert settings.private_key.strip() == github_sim.private_key_pem.strip()
    assert settings.webhook_secret == github_sim.webhook_secret
    assert settings.box_api_key == "box_live_keepme123"
    assert (await asyncio.to_thread(env_file.stat)).st_mode & 0o777 == 0o600


async def test_existing_credentials_are_kept_unless_forced(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    env_file = workdir / ".env"
    before = "LOG_LEVEL=DEBUG\nexport APP_ID=99\nWEBHOOK_SECRET=old-secret-old-secret\n"
    await asyncio.to_thread(env_file.write_text, before)
    lines: Lines = []

    code = await run_register(lines.append, webhook_url=HOOK_URL, port=0, manifest=APP_YML)

    assert code == 1
    assert lines == [
        f"box-bot register: {env_file} already sets APP_ID, WEBHOOK_SECRET:"
        " pass --force to replace them"
    ]
    assert await text_of(env_file) == before
    assert github_sim.calls == []

    code, _lines, _manifest = await register_in_browser(force=True)
    assert code == 0
    written = (await text_of(env_file)).splitlines()
    assert written[0] == "LOG_LEVEL=DEBUG"
    assert [line.split("=")[0] for line in written[1:]] == [
        "APP_ID",
        "PRIVATE_KEY",
        "WEBHOOK_SECRET",
    ]
    assert load_settings({}, env_file).app_id == "321"


async def test_forced_credentials_replace_a_pem_pasted_on_several_lines(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    env_file = workdir / ".env"
    old_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    before = (
        "# my settings\n"
        "export APP_ID=99  # the old app\n"
        f'PRIVATE_KEY="{old_pem.decode().strip()}"\n'
        "BOX_API_KEY=box_live_keepme123\n"
    )
    await asyncio.to_thread(env_file.write_text, before)

    code, _lines, _manifest = await register_in_browser(force=True)

    assert code == 0
    written = (await text_of(env_file)).splitlines()
    assert written[:2] == ["# my settings", "BOX_API_KEY=box_live_keepme123"]
    assert [line.split("=")[0] for line in written[2:]] == [
        "APP_ID",
        "PRIVATE_KEY",
        "WEBHOOK_SECRET",
    ]
    settings = load_settings({}, env_file)
    assert settings.app_id == "321"
    assert settings.private_key.strip() == github_sim.private_key_pem.strip()


async def test_organization_flow_uses_the_proxy_url_and_the_given_name(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    await asyncio.to_thread(
        (workdir / ".env").write_text, "WEBHOOK_PROXY_URL=https://smee.io/from-dotenv\n"
    )
    task, lines, page_url = await start(webhook_url=None, org="octo-org", name="octo-box")
    async with aiohttp.ClientSession() as browser:
        action, manifest = await read_form(browser, page_url)
        parts = urlsplit(action)
        assert f"{parts.scheme}://{parts.netloc}" == github_sim.base_url
        assert parts.path == "/organizations/octo-org/settings/apps/new"
        state = parse_qs(parts.query)["state"][0]
        assert len(state) >= 32
        assert json.loads(manifest)["hook_attributes"]["url"] == "https://smee.io/from-dotenv"
        assert json.loads(manifest)["name"] == "octo-box"
        callback = await submit(browser, action, manifest)
        assert parse_qs(urlsplit(callback).query)["state"] == [state]
        async with browser.get(callback) as done:
            assert done.status == 200
    assert await asyncio.wait_for(task, 5) == 0
    assert lines[1].endswith(f"on {github_sim.base_url} for the organization octo-org.")


async def test_a_callback_with_the_wrong_state_changes_nothing(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    task, _lines, page_url = await start()
    callback = page_url.rstrip("/") + "/callback"
    async with aiohttp.ClientSession() as browser:
        async with browser.get(callback, params={"code": "abc", "state": "forged"}) as answer:
            assert answer.status == 400
        async with browser.get(callback, params={"code": "abc"}) as answer:
            assert answer.status == 400
        assert not task.done()
        action, manifest = await read_form(browser, page_url)
        async with browser.get(await submit(browser, action, manifest)) as done:
            assert done.status == 200
    assert await asyncio.wait_for(task, 5) == 0
    assert github_sim.calls_to("POST", r"/app-manifests/abc/") == []


async def test_a_refused_code_exchange_explains_and_exits_1(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    task, lines, page_url = await start()
    async with aiohttp.ClientSession() as browser:
        action, _manifest = await read_form(browser, page_url)
        state = parse_qs(urlsplit(action).query)["state"][0]
        callback = page_url.rstrip("/") + "/callback"
        async with browser.get(callback, params={"code": "expired", "state": state}) as answer:
            assert answer.status == 502
    assert await asyncio.wait_for(task, 5) == 1
    assert lines[-1].startswith("box-bot register: GitHub answered 404 to the code exchange")
    assert "run box-bot register again" in lines[-1]
    assert not await asyncio.to_thread((workdir / ".env").exists)


async def test_no_webhook_url_says_what_to_pass(workdir: Path) -> None:
    lines: Lines = []
    assert await run_register(lines.append, webhook_url=None, port=0, manifest=APP_YML) == 1
    assert lines == [
        "box-bot register: no webhook URL: pass --webhook-url with your deployment's"
        " https://…/api/github/webhooks (or a https://smee.io channel for local development),"
        " or set WEBHOOK_PROXY_URL"
    ]


async def test_an_unreadable_dotenv_is_one_line_and_left_as_it_is(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    env_file = workdir / ".env"
    before = 'LOG_LEVEL=DEBUG\nWEBHOOK_PROXY_URL="https://smee.io/unclosed\n'
    await asyncio.to_thread(env_file.write_text, before)
    lines: Lines = []
    assert await run_register(lines.append, webhook_url=None, port=0, manifest=APP_YML) == 1
    assert lines == [
        f"box-bot register: {env_file} line 2 is not KEY=value:"
        " fix it (a quote it opens must be closed)"
    ]
    assert await text_of(env_file) == before
    assert github_sim.calls == []


async def test_a_busy_port_is_one_line(workdir: Path) -> None:
    lines: Lines = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = await run_register(lines.append, webhook_url=HOOK_URL, port=port, manifest=APP_YML)
    assert code == 1
    assert lines == [
        f"box-bot register: cannot listen on 127.0.0.1:{port} (Address already in use):"
        " pass --port with a free port, or --port 0 to pick one"
    ]


async def test_no_answer_in_time_says_so_and_writes_nothing(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    task, lines, _page_url = await start(wait_seconds=0.5)
    assert await asyncio.wait_for(task, 5) == 1
    assert lines[2].startswith("This needs a browser on this machine")
    assert lines[2].endswith(
        " Waiting up to 0.5 s for GitHub to send the browser back (Ctrl-C cancels)."
    )
    assert lines[3:] == [
        "box-bot register: GitHub did not send the browser back within 0.5 s: no credentials"
        " were written; run box-bot register again (--timeout gives more time)"
    ]
    assert not await asyncio.to_thread((workdir / ".env").exists)
    assert github_sim.calls == []


async def test_an_answer_that_came_in_time_is_seen_through(
    workdir: Path, github_sim: GitHubSimulator
) -> None:
    github_sim.inject_fault("POST", r"^/app-manifests/[^/]+/conversions$", status=None, delay=1.0)
    task, lines, page_url = await start(wait_seconds=0.5)
    async with aiohttp.ClientSession() as browser:
        action, manifest = await read_form(browser, page_url)
        async with browser.get(await submit(browser, action, manifest)) as done:
            assert done.status == 200  # answered after the 0.5 s deadline had passed
    assert await asyncio.wait_for(task, 5) == 0
    assert lines[3].startswith("Registered the GitHub App 'box-bot' (id 321)")
    assert load_settings({}, workdir / ".env").app_id == "321"


async def test_ctrl_c_cancels_with_one_line(workdir: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "register",
        "--webhook-url",
        HOOK_URL,
        "--port",
        "0",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(30):
        while not seen or "Ctrl-C" not in seen[-1]:
            line = await process.stdout.readline()
            assert line, seen
            seen.append(line.decode().rstrip("\n"))
    # From another directory, the manifest installed with the package is the one used.
    assert seen[0] == f"Using the manifest {PACKAGED}."
    process.send_signal(signal.SIGINT)
    rest, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    assert rest.decode().splitlines() == [
        "box-bot register: cancelled; no credentials were written"
    ]
    assert stderr.decode() == ""
    assert not await asyncio.to_thread((workdir / ".env").exists)


def test_the_installed_manifest_is_the_one_at_the_root() -> None:
    assert PACKAGED.read_bytes() == APP_YML.read_bytes()


@pytest.mark.parametrize(
    ("github_url", "api_url"),
    [
        ("https://github.com", "https://api.github.com"),
        ("https://github.com/", "https://api.github.com"),
        ("https://ghe.example.com", "https://ghe.example.com/api/v3"),
        ("https://ghe.example.com/", "https://ghe.example.com/api/v3"),
    ],
)
def test_enterprise_server_api_follows_github_url(github_url: str, api_url: str) -> None:
    assert api_url_for(github_url) == api_url
