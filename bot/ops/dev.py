"""`box-bot dev`: the real app between the GitHub and Box simulators, on loopback ports.

No credentials and no network: the app key, webhook secret and Box API key are generated,
the database is a temporary SQLite file, and a demo repository with one issue is seeded.
When the scripted agent pushes its branch, the environment opens the pull request a real
agent would and delivers `pull_request.opened`, like GitHub. The comments whose deliveries it
offers (a `/box fix` on the issue, and one on a line of the pull request's diff once it is open)
are written in the GitHub simulator first, as on GitHub, so 👀 and replies land on them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import shlex
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.ingress.server import COMPONENTS, WEBHOOK_PATH, Options, create_app
from bot.ingress.worker import WorkerPolicy
from bot.models import MARKER_TEXT, Run
from bot.ops.send import SendError, SendResult, post_webhook
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.sim.box import BoxSimulator, BoxTimings
from bot.sim.github import GitHubSimulator

log = logging.getLogger(__name__)

Out = Callable[[str], None]
Json = dict[str, Any]

DEMO_REPO = "octocat/hello-world"
DEMO_REPO_ID = 1296269
DEMO_ISSUE = 1
DEMO_TITLE = "Greeting is printed without a trailing newline"
DEMO_BODY = (
    "Running `hello` prints `Hello, World!` with no newline, so the shell prompt follows it."
)
MAINTAINER = "octocat"
AGENT_LOGIN = "box-agent[bot]"
INSTALLATION_ID = 1
TRIGGER_LABEL = "box:fix"
DEFAULT_PORT = 3000
FIX_COMMENT = "/box fix print the greeting with a trailing newline"
REVIEW_PATH = "src/hello.py"
REVIEW_LINE = 2
REVIEW_HUNK = (
    "@@ -1,2 +1,2 @@\n def main():\n"
    '-    print("Hello, World!", end="")\n'
    '+    print("Hello, World!")'
)
REVIEW_COMMENT = "/box fix say hello to the user by name when $USER is set"
RUN_LINE = re.compile(r"Box-Run: (run_[0-9a-f]+)")
ISSUE_BRANCH = re.compile(r"box/issue-(\d+)")
COMMENT_EDIT = re.compile(r"/issues/comments/(\d+)$")
SEPARATOR = "──── tracking comment on {repo}#{number}, version {version} ────"
SEND_COMMAND = "box-bot send {event} {path} --url {url} --secret {secret}"
WELCOME = """\
box-bot dev: the app is running against simulated GitHub and Box on this machine.

  App               {app_url}  (webhooks: {webhook_url})
  GitHub simulator  {github_url}  (app {slug!r}, id {app_id}, installed on {owner})
  Box simulator     {box_url}
  Database          {database}
  Demo issue        {repo}#{number}: {title}

Label the issue with {label} (a signed issues.labeled delivery, as GitHub would send it):

  {command}

or ask for the fix in a comment on it (issue_comment.created, `{comment}`):

  {comment_command}

Each new version of the tracking comment is printed below. Press Ctrl-C to stop."""
PR_OPENED = "Pull request #{number} opened from {branch}: {url}"
CLOSE_HINT = "Merge it (pull_request.closed) to archive the box:\n\n  {command}\n"
REVIEW_HINT = (
    "Ask for a change on line {line} of {path} in its diff "
    "(pull_request_review_comment.created, `{comment}`); the answer comes in the review "
    "thread:\n\n  {command}\n"
)


def interactive_timings() -> tuple[BoxTimings, Options]:
    """Return timings a person can follow: seconds per step, comment edits a second apart."""
    box = BoxTimings(provisioning=2.0, cloning=1.0, agent_step=0.8, archiving=1.0)
    timing = Timing(ready_timeout=120.0, ready_poll=0.5, poll_interval=0.5, max_poll_interval=2.0)
    worker = WorkerPolicy(idle_poll=0.2, base_delay=0.5, max_delay=5.0)
    return box, Options(
        worker=worker, github_write_interval=0.2, comment_interval=1.0, timing=timing
    )


def demo_timings() -> tuple[BoxTimings, Options]:
    """Return timings that tell the whole story in a few seconds."""
    box = BoxTimings(provisioning=0.2, cloning=0.1, agent_step=0.1, archiving=0.1)
    timing = Timing(ready_timeout=20.0, ready_poll=0.05, poll_interval=0.05, max_poll_interval=0.1)
    worker = WorkerPolicy(idle_poll=0.02, base_delay=0.05, max_delay=0.5)
    return box, Options(
        worker=worker, github_write_interval=0.0, comment_interval=0.0, timing=timing
    )


# -- payloads, built from the simulator's own GitHub-shaped objects ----------------------------


def installation_json(installation_id: int) -> Json:
    """Return the `installation` object a GitHub App delivery carries."""
    node = base64.b64encode(f"023:Integration{installation_id}".encode()).decode()
    return {"id": installation_id, "node_id": node}


def issues_labeled(issue: Json, label: Json, repo: Json, sender: Json, installation: int) -> Json:
    """Return an `issues.labeled` payload."""
    return {
        "action": "labeled",
        "issue": issue,
        "label": label,
        "repository": repo,
        "sender": sender,
        "installation": installation_json(installation),
    }


def comment_payload(
    issue: Json, comment: Json, repo: Json, sender: Json, installation: int
) -> Json:
    """Return an `issue_comment.created` payload."""
    return {
        "action": "created",
        "issue": issue,
        "comment": comment,
        "repository": repo,
        "sender": sender,
        "installation": installation_json(installation),
    }


def review_comment_payload(
    comment: Json, pull: Json, repo: Json, sender: Json, installation: int
) -> Json:
    """Return a `pull_request_review_comment.created` payload."""
    return {
        "action": "created",
        "comment": comment,
        "pull_request": pull,
        "repository": repo,
        "sender": sender,
        "installation": installation_json(installation),
    }


def pull_request_payload(
    action: str, pull: Json, repo: Json, sender: Json, installation: int
) -> Json:
    """Return a `pull_request` payload for *action*."""
    return {
        "action": action,
        "number": pull["number"],
        "pull_request": pull,
        "repository": repo,
        "sender": sender,
        "installation": installation_json(installation),
    }


def closed_pull(pull: Json, merged_by: Json, *, merged: bool) -> Json:
    """Return *pull* as GitHub shows it once closed (and merged)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        **pull,
        "state": "closed",
        "closed_at": now,
        "updated_at": now,
        "merged": merged,
        "merged_at": now if merged else None,
        "merged_by": merged_by if merged else None,
        "mergeable": None,
    }


# -- the environment ---------------------------------------------------------------------------


class DevEnvironment:
    """The simulators, the seeded demo, and the real app serving on a loopback port."""

    def __init__(
        self,
        workdir: Path,
        out: Out,
        *,
        port: int,
        box: BoxTimings,
        options: Options,
        hints: bool = False,
    ) -> None:
        self.workdir = workdir
        self.out = out
        self.port = port
        self.options = options
        self.hints = hints
        self.secret = secrets.token_hex(20)
        self.github = GitHubSimulator(app_id=1, app_slug="box-bot")
        self.box = BoxSimulator("box_live_dev" + secrets.token_hex(12), timings=box)
        self.box.on_agent_event = self._on_agent_event
        self.repo: Json = {}
        self.issue: Json = {}
        self.fix_comment: Json = {}
        self.pulls: dict[int, Json] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.app_url + WEBHOOK_PATH

    @property
    def database(self) -> Path:
        return self.workdir / "box-bot.sqlite3"

    async def start(self) -> None:
        """Start both simulators, seed the demo, then serve the app."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.github.start()
        await self.box.start()
        self._seed()
        self._runner = web.AppRunner(
            create_app(self._settings(), self.options), access_log=None, shutdown_timeout=5.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop the app first (it finishes its work against the simulators), then the rest."""
        if self._runner is not None:
            await self._runner.cleanup()
        await self.box.close()
        await self.github.close()
        if self._session is not None:
            await self._session.close()

    def _seed(self) -> None:
        self.github.add_installation(INSTALLATION_ID, MAINTAINER)
        self.repo = self.github.add_repo(
            DEMO_REPO, installation_id=INSTALLATION_ID, repo_id=DEMO_REPO_ID
        )
        self.github.set_permission(DEMO_REPO, MAINTAINER, "admin")
        # Recorded as it is once labelled: GitHub sends the issue's labels after the change.
        self.issue = self.github.add_issue(
            DEMO_REPO,
            DEMO_ISSUE,
            title=DEMO_TITLE,
            body=DEMO_BODY,
            user=MAINTAINER,
            labels=[TRIGGER_LABEL],
        )
        self.fix_comment = self.github.add_comment(
            DEMO_REPO, DEMO_ISSUE, body=FIX_COMMENT, user=MAINTAINER
        )
        self.box.add_repo(DEMO_REPO, github_id=DEMO_REPO_ID)

    def _settings(self) -> Settings:
        return Settings(
            app_id=str(self.github.app_id),
            private_key=self.github.private_key_pem,
            webhook_secret=self.secret,
            box_api_key=self.box.api_key,
            github_api_url=self.github.base_url,
            box_api_base=self.box.base_url,
            database_url=f"sqlite:///{self.database}",
            host="127.0.0.1",
            port=self.port,
            trigger_label=TRIGGER_LABEL,
        )

    # -- deliveries --------------------------------------------------------------------------

    def labeled_payload(self) -> Json:
        """Return the delivery of the maintainer adding the trigger label to the demo issue."""
        label = self.issue["labels"][0]
        return issues_labeled(self.issue, label, self.repo, self.issue["user"], INSTALLATION_ID)

    def fix_comment_payload(self) -> Json:
        """Return the delivery of the maintainer's `/box fix` comment on the demo issue."""
        sender = self.issue["user"]
        return comment_payload(self.issue, self.fix_comment, self.repo, sender, INSTALLATION_ID)

    def review_comment_payload(self, number: int) -> Json:
        """Comment `/box fix` on a line of the pull request for issue *number*; return it."""
        pull = self.pulls[number]
        comment = self.github.add_review_comment(
            DEMO_REPO,
            pull["number"],
            user=MAINTAINER,
            body=REVIEW_COMMENT,
            path=REVIEW_PATH,
            line=REVIEW_LINE,
            diff_hunk=REVIEW_HUNK,
        )
        sender = self.issue["user"]
        return review_comment_payload(comment, pull, self.repo, sender, INSTALLATION_ID)

    def closed_payload(self, number: int) -> Json:
        """Return the delivery of the maintainer merging pull request *number*."""
        sender = self.issue["user"]
        pull = closed_pull(self.pulls[number], sender, merged=True)
        return pull_request_payload("closed", pull, self.repo, sender, INSTALLATION_ID)

    def write_payload(self, name: str, data: Json) -> Path:
        """Write *data* as `<name>.json` in the work directory; return its path."""
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path

    def send_command(self, event: str, path: Path) -> str:
        """Return the `box-bot send` command line that delivers the payload at *path*."""
        return SEND_COMMAND.format(
            event=event, path=shlex.quote(str(path)), url=self.webhook_url, secret=self.secret
        )

    async def send(self, event: str, data: Json) -> SendResult:
        """Sign and post one delivery to the app."""
        assert self._session is not None, "start() first"
        body = json.dumps(data).encode()
        return await post_webhook(self._session, self.webhook_url, event, body, self.secret)

    def welcome(self, payload: Path, comment: Path) -> str:
        """Return what to do next: the URLs, and the commands that start the story."""
        return WELCOME.format(
            app_url=self.app_url,
            webhook_url=self.webhook_url,
            github_url=self.github.base_url,
            slug=self.github.app_slug,
            app_id=self.github.app_id,
            owner=MAINTAINER,
            box_url=self.box.base_url,
            database=self.database,
            repo=DEMO_REPO,
            number=DEMO_ISSUE,
            title=DEMO_TITLE,
            label=TRIGGER_LABEL,
            command=self.send_command("issues", payload),
            comment=FIX_COMMENT,
            comment_command=self.send_command("issue_comment", comment),
        )

    # -- the agent's pull request ------------------------------------------------------------

    async def _on_agent_event(self, box_id: str, event: Json) -> None:
        """Open the pull request when the agent first pushes a `box/issue-N` branch."""
        data = event.get("data") or {}
        if event.get("type") != "git_checkpoint" or not data.get("pushed"):
            return
        branch = ISSUE_BRANCH.fullmatch(str(data.get("branch", "")))
        if branch is None or int(branch.group(1)) in self.pulls:
            return
        prompt = self.box.boxes[box_id].runs[event["taskId"]].prompt
        pull = self._open_pull(int(branch.group(1)), branch.group(0), data["commitSha"], prompt)
        try:
            await self.send(
                "pull_request",
                pull_request_payload("opened", pull, self.repo, pull["user"], INSTALLATION_ID),
            )
        except SendError as exc:
            log.warning("pull_request.opened not delivered: %s", exc)

    def _open_pull(self, issue: int, branch: str, sha: str, prompt: str) -> Json:
        run = RUN_LINE.search(prompt)
        body = f"Fixes #{issue}" + (f"\n\nBox-Run: {run.group(1)}" if run else "")
        pull = self.github.add_pull(
            DEMO_REPO,
            title=f"Fix #{issue}: {DEMO_TITLE}" if issue == DEMO_ISSUE else f"Fix #{issue}",
            body=body,
            head=branch,
            head_sha=sha,
            user=AGENT_LOGIN,
            user_type="Bot",
            files=["src/hello.py", "tests/test_hello.py"],
        )
        self.pulls[issue] = pull
        self.out(PR_OPENED.format(number=pull["number"], branch=branch, url=pull["html_url"]))
        if self.hints:
            review = self.write_payload(
                "pull_request_review_comment.created", self.review_comment_payload(issue)
            )
            self.out(
                REVIEW_HINT.format(
                    line=REVIEW_LINE,
                    path=REVIEW_PATH,
                    comment=REVIEW_COMMENT,
                    command=self.send_command("pull_request_review_comment", review),
                )
            )
            path = self.write_payload("pull_request.closed", self.closed_payload(issue))
            self.out(CLOSE_HINT.format(command=self.send_command("pull_request", path)))
        return pull

    # -- what the app did --------------------------------------------------------------------

    async def latest_run(self, number: int = DEMO_ISSUE) -> Run | None:
        """Return the app's newest run on issue *number*."""
        assert self._runner is not None, "start() first"
        store = self._runner.app[COMPONENTS].store
        return await store.latest_run(DEMO_REPO_ID, number)

    def tracking_versions(self, number: int = DEMO_ISSUE) -> Iterator[str]:
        """Yield every body the app gave its tracking comment on *number*, oldest first."""
        ids = {c["id"] for c in self.github.comments(DEMO_REPO, number)}
        created = f"/repos/{DEMO_REPO}/issues/{number}/comments"
        for call in list(self.github.calls):
            body = (call.json or {}).get("body") if isinstance(call.json, dict) else None
            if call.status >= 300 or not isinstance(body, str) or MARKER_TEXT not in body:
                continue
            edit = COMMENT_EDIT.search(call.path)
            if (call.method == "POST" and call.path == created) or (
                call.method == "PATCH" and edit is not None and int(edit.group(1)) in ids
            ):
                yield body


def for_terminal(body: str) -> str:
    """Return a comment as a person reads it: without the hidden marker or Markdown escapes."""
    lines = [line for line in body.splitlines() if not line.startswith("<!-- box-bot:")]
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>~])", r"\1", "\n".join(lines))


class CommentPrinter:
    """Prints each distinct version of a tracking comment once, under a separator."""

    def __init__(self, env: DevEnvironment, out: Out, number: int = DEMO_ISSUE) -> None:
        self.env = env
        self.out = out
        self.number = number
        self.seen: list[str] = []

    def flush(self) -> None:
        """Print the versions not printed yet."""
        for body in self.env.tracking_versions(self.number):
            if body in self.seen:
                continue
            self.seen.append(body)
            header = SEPARATOR.format(repo=DEMO_REPO, number=self.number, version=len(self.seen))
            self.out(f"{header}\n{for_terminal(body)}\n")

    async def follow(self, interval: float) -> None:
        """Print new versions as they appear, until cancelled."""
        while True:
            self.flush()
            await asyncio.sleep(interval)


# -- `box-bot dev` -----------------------------------------------------------------------------


async def until_stopped() -> None:
    """Return when the process gets SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        await stop.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def run_dev(out: Out, *, port: int = DEFAULT_PORT) -> int:
    """Run the app against the simulators until SIGINT or SIGTERM; return the exit code."""
    with tempfile.TemporaryDirectory(prefix="box-bot-dev-") as workdir:
        box, options = interactive_timings()
        env = DevEnvironment(Path(workdir), out, port=port, box=box, options=options, hints=True)
        try:
            await env.start()
        except OSError as exc:
            await env.close()
            out(
                f"box-bot dev: cannot listen on 127.0.0.1:{port}"
                f" ({os.strerror(exc.errno) if exc.errno else exc}):"
                " pass --port with a free port, or --port 0 to pick one"
            )
            return 1
        follower = asyncio.create_task(CommentPrinter(env, out).follow(0.2))
        try:
            labeled = env.write_payload("issues.labeled", env.labeled_payload())
            comment = env.write_payload("issue_comment.created", env.fix_comment_payload())
            out(env.welcome(labeled, comment))
            await until_stopped()
            out("Stopping…")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await env.close()
    out("box-bot dev stopped.")
    return 0
