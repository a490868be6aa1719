"""`box-bot register`: create the GitHub App from `app.yml` with GitHub's manifest flow.

A local page posts the manifest to GitHub; GitHub sends the browser back with a one-time
code, which is exchanged for the app's id, private key and webhook secret, saved to `.env`.
https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest
"""

from __future__ import annotations

import asyncio
import hmac
import html
import io
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml
from aiohttp import web
from dotenv.parser import parse_stream

from bot.settings import DEFAULT_GITHUB_API_URL, SettingsError, read_dotenv

DEFAULT_GITHUB_URL = "https://github.com"
DEFAULT_PORT = 3000
DEFAULT_TIMEOUT = 600.0
PACKAGED_MANIFEST = Path(__file__).with_name("app.yml")
CALLBACK_PATH = "/callback"
ENV_KEYS = ("APP_ID", "PRIVATE_KEY", "WEBHOOK_SECRET")
MANIFEST_FIELDS = ("name", "url", "description", "public", "default_permissions", "default_events")
TIMEOUT = aiohttp.ClientTimeout(total=30)
FORM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Register {name}</title></head>
<body>
<h1>Register the GitHub App {name}</h1>
<p>GitHub will ask you to confirm the app's name, then send you back here.
Webhooks will be delivered to <code>{webhook}</code>.</p>
<form action="{action}" method="post">
<input type="hidden" name="manifest" value="{manifest}">
<button type="submit">Create the GitHub App on {github}</button>
</form>
</body></html>
"""
DONE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""
USING = "Using the manifest {path}."
OPEN_PAGE = "Open {url} in your browser to create the GitHub App on {github}{where}."
WAITING = (
    "This needs a browser on this machine, and {github} reachable from it. Waiting up to"
    " {within} for GitHub to send the browser back (Ctrl-C cancels)."
)
TIMED_OUT = (
    "GitHub did not send the browser back within {within}: no credentials were written;"
    " run box-bot register again (--timeout gives more time)"
)
CANCELLED = "box-bot register: cancelled; no credentials were written"
REGISTERED = """\
Registered the GitHub App {name!r} (id {id}): {url}
Wrote APP_ID, PRIVATE_KEY and WEBHOOK_SECRET to {env_file}.
Next: install the app on your repositories ({url}/installations/new), set BOX_API_KEY,
then check everything with `box-bot doctor` and start it with `box-bot serve`."""
NO_WEBHOOK_URL = (
    "no webhook URL: pass --webhook-url with your deployment's https://…/api/github/webhooks"
    " (or a https://smee.io channel for local development), or set WEBHOOK_PROXY_URL"
)


class RegisterError(Exception):
    """Registration cannot go on; the message says what to do."""


@dataclass(frozen=True)
class RegisterOptions:
    """What `box-bot register` was asked to do."""

    webhook_url: str
    manifest_path: Path
    env_file: Path
    port: int = DEFAULT_PORT
    org: str | None = None
    name: str | None = None
    force: bool = False
    timeout: float = DEFAULT_TIMEOUT
    github_url: str = DEFAULT_GITHUB_URL
    api_url: str = DEFAULT_GITHUB_API_URL


@dataclass(frozen=True)
class RegisteredApp:
    """The app GitHub created, and where its credentials were written."""

    id: int
    slug: str
    name: str
    html_url: str
    env_file: Path


def environment(dotenv: Path) -> dict[str, str]:
    """Return the process environment over the values in *dotenv*."""
    return {**read_dotenv(dotenv), **os.environ}


def default_manifest_path() -> Path:
    """Return `app.yml` in the working directory, else the copy installed with the package."""
    here = Path.cwd() / "app.yml"
    return here if here.is_file() else PACKAGED_MANIFEST


def duration(seconds: float) -> str:
    """Say how long *seconds* is, in minutes when it is a whole number of them."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def read_app_yml(path: Path) -> dict[str, Any]:
    """Load the Probot-style `app.yml`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegisterError(f"cannot read {path} ({exc.strerror}): pass --manifest") from None
    except yaml.YAMLError as exc:
        raise RegisterError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data.get("name"):
        raise RegisterError(f"{path} does not describe an app: it needs at least a name")
    return data


def build_manifest(
    app_yml: Mapping[str, Any], *, webhook_url: str, redirect_url: str, name: str | None = None
) -> dict[str, Any]:
    """Return the manifest JSON GitHub expects, from `app.yml` and the flow's URLs."""
    manifest = {key: app_yml[key] for key in MANIFEST_FIELDS if key in app_yml}
    manifest.setdefault("public", False)
    manifest.setdefault("url", webhook_url)
    if name:
        manifest["name"] = name
    manifest["hook_attributes"] = {"url": webhook_url, "active": True}
    manifest["redirect_url"] = redirect_url
    return manifest


def form_action(github_url: str, org: str | None, state: str) -> str:
    """Return where the manifest is posted: a user's or an organization's new-app page."""
    owner = f"/organizations/{quote(org, safe='')}" if org else ""
    return f"{github_url.rstrip('/')}{owner}/settings/apps/new?state={quote(state)}"


def taken_keys(env_file: Path) -> list[str]:
    """Return which of APP_ID, PRIVATE_KEY and WEBHOOK_SECRET *env_file* already sets."""
    values = read_dotenv(env_file)
    return [key for key in ENV_KEYS if values.get(key, "").strip()]


def check_env_file(env_file: Path, force: bool) -> None:
    """Refuse to go on when `.env` already holds app credentials and *force* is not set."""
    taken = taken_keys(env_file)
    if taken and not force:
        raise RegisterError(
            f"{env_file} already sets {', '.join(taken)}: pass --force to replace them"
        )


def env_values(app: Mapping[str, Any]) -> dict[str, str]:
    """Return the `.env` values for a converted app: the PEM on one line, `\\n` escaped."""
    pem = str(app["pem"]).strip().replace("\r\n", "\n").replace("\n", "\\n")
    return {
        "APP_ID": str(app["id"]),
        "PRIVATE_KEY": pem,
        "WEBHOOK_SECRET": str(app["webhook_secret"]),
    }


def write_env(env_file: Path, values: Mapping[str, str], force: bool) -> None:
    """Set *values* in *env_file*, keeping its other lines; replace old ones only if *force*."""
    check_env_file(env_file, force)
    text = env_file.read_text(encoding="utf-8") if env_file.is_file() else ""
    # Whole entries are dropped, so a PEM that spans lines in quotes goes with its key.
    kept = "".join(
        entry.original.string
        for entry in parse_stream(io.StringIO(text))
        if entry.key not in values
    )
    if kept and not kept.endswith("\n"):
        kept += "\n"
    added = "".join(f"{key}={value}\n" for key, value in values.items())
    env_file.touch(mode=0o600, exist_ok=True)
    env_file.chmod(0o600)  # secrets: readable by this user only, before they are written
    env_file.write_text(kept + added, encoding="utf-8")


async def exchange_code(session: aiohttp.ClientSession, api_url: str, code: str) -> dict[str, Any]:
    """Trade the one-time *code* for the app's configuration, key and secrets."""
    url = f"{api_url.rstrip('/')}/app-manifests/{quote(code, safe='')}/conversions"
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "box-bot"}
    try:
        async with session.post(url, headers=headers) as response:
            data = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RegisterError(f"cannot exchange the code at {api_url}: {exc}") from None
    if status != 201 or not isinstance(data, dict):
        message = data.get("message") if isinstance(data, dict) else None
        raise RegisterError(
            f"GitHub answered {status} to the code exchange ({message or 'no message'}):"
            " the code is valid once, for an hour; run box-bot register again"
        )
    return data


class ManifestFlow:
    """The local page that starts the flow and the callback that finishes it."""

    def __init__(self, options: RegisterOptions, app_yml: Mapping[str, Any]) -> None:
        self.options = options
        self.app_yml = app_yml
        self.state = secrets.token_urlsafe(24)
        self.manifest: dict[str, Any] = {}
        self.url = ""
        self._result: asyncio.Future[RegisteredApp] = asyncio.get_running_loop().create_future()
        self._answered = False  # GitHub sent the browser back: its code is being exchanged
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        """Serve the page on loopback; return its URL."""
        app = web.Application()
        app.router.add_get("/", self._form)
        app.router.add_get(CALLBACK_PATH, self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.options.port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.manifest = build_manifest(
            self.app_yml,
            webhook_url=self.options.webhook_url,
            redirect_url=self.url + CALLBACK_PATH,
            name=self.options.name,
        )
        self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self.url + "/"

    async def wait(self, seconds: float) -> RegisteredApp:
        """Return the registered app once the callback has saved its credentials.

        Raise `TimeoutError` if GitHub has not sent the browser back within *seconds*; an
        answer that came in time is seen through, so credentials are never half written.
        """
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(self._result)
        except TimeoutError:
            if not self._answered:
                raise
        return await self._result

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _form(self, request: web.Request) -> web.Response:
        page = FORM_PAGE.format(
            name=html.escape(str(self.manifest["name"])),
            webhook=html.escape(self.options.webhook_url),
            action=html.escape(form_action(self.options.github_url, self.options.org, self.state)),
            manifest=html.escape(json.dumps(self.manifest)),
            github=html.escape(self.options.github_url),
        )
        return web.Response(text=page, content_type="text/html")

    async def _callback(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.query.get("state", ""), self.state):
            return _page(400, "Wrong state", "This link did not come from this registration.")
        if self._answered:
            return _page(409, "Already registered", "Go back to your terminal.")
        self._answered = True
        try:
            app = await self._finish(request.query.get("code", ""))
        except RegisterError as exc:
            self._result.set_exception(exc)
            return _page(502, "Registration failed", str(exc))
        self._result.set_result(app)
        return _page(200, "Registered", f"{app.name} is registered. Go back to your terminal.")

    async def _finish(self, code: str) -> RegisteredApp:
        if not code:
            raise RegisterError("GitHub sent no code back: run box-bot register again")
        assert self._session is not None, "start() first"
        data = await exchange_code(self._session, self.options.api_url, code)
        write_env(self.options.env_file, env_values(data), self.options.force)
        return RegisteredApp(
            int(data["id"]),
            str(data.get("slug", "")),
            str(data.get("name", "")),
            str(data.get("html_url", "")),
            self.options.env_file,
        )


def _page(status: int, title: str, text: str) -> web.Response:
    body = DONE_PAGE.format(title=html.escape(title), text=html.escape(text))
    return web.Response(status=status, text=body, content_type="text/html")


async def run_register(
    out: Callable[[str], None],
    *,
    webhook_url: str | None,
    port: int = DEFAULT_PORT,
    org: str | None = None,
    name: str | None = None,
    manifest: Path | None = None,
    force: bool = False,
    wait_seconds: float = DEFAULT_TIMEOUT,
    env_file: Path | None = None,
) -> int:
    """Run the manifest flow from the terminal; return the exit code."""
    env_file = env_file or Path.cwd() / ".env"
    try:
        env = environment(env_file)
    except SettingsError as exc:
        out(f"box-bot register: {exc}")
        return 1
    github_url = env.get("GITHUB_URL", "").strip().rstrip("/") or DEFAULT_GITHUB_URL
    options = RegisterOptions(
        webhook_url=webhook_url or env.get("WEBHOOK_PROXY_URL", "").strip(),
        manifest_path=manifest or default_manifest_path(),
        env_file=env_file,
        port=port,
        org=org,
        name=name,
        force=force,
        timeout=wait_seconds,
        github_url=github_url,
        api_url=env.get("GITHUB_API_URL", "").strip() or api_url_for(github_url),
    )
    try:
        app = await register(options, out)
    except RegisterError as exc:
        out(f"box-bot register: {exc}")
        return 1
    out(REGISTERED.format(name=app.name, id=app.id, url=app.html_url, env_file=app.env_file))
    return 0


def api_url_for(github_url: str) -> str:
    """Return the REST API of a GitHub site: api.github.com, or Enterprise Server's `/api/v3`.

    https://docs.github.com/en/enterprise-server@latest/rest/quickstart
    """
    if github_url.rstrip("/") == DEFAULT_GITHUB_URL:
        return DEFAULT_GITHUB_API_URL
    return github_url.rstrip("/") + "/api/v3"


async def register(options: RegisterOptions, out: Callable[[str], None]) -> RegisteredApp:
    """Check the inputs, serve the page, and wait until GitHub sent the browser back."""
    if not options.webhook_url:
        raise RegisterError(NO_WEBHOOK_URL)
    check_env_file(options.env_file, options.force)
    flow = ManifestFlow(options, read_app_yml(options.manifest_path))
    try:
        try:
            url = await flow.start()
        except OSError as exc:
            raise RegisterError(
                f"cannot listen on 127.0.0.1:{options.port}"
                f" ({os.strerror(exc.errno) if exc.errno else exc}):"
                " pass --port with a free port, or --port 0 to pick one"
            ) from None
        where = f" for the organization {options.org}" if options.org else ""
        within = duration(options.timeout)
        out(USING.format(path=options.manifest_path))
        out(OPEN_PAGE.format(url=url, github=options.github_url, where=where))
        out(WAITING.format(github=options.github_url, within=within))
        try:
            return await flow.wait(options.timeout)
        except TimeoutError:
            raise RegisterError(TIMED_OUT.format(within=within)) from None
    finally:
        await flow.close()
