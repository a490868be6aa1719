"""A GitHub REST API simulator: a real aiohttp server on a loopback port.

Requests are matched to the operations of GitHub's OpenAPI description (`rest-api-subset.json`)
and their bodies validated against it; answers carry the fields its response schemas require.
The simulator authenticates like GitHub (app JWT, installation tokens scoped to their
installation), keeps repositories, issues, pull requests, comments, reviews and their threads,
reactions, check runs, statuses, files, workflow jobs and the app's webhook delivery log in memory,
sends rate-limit headers, records every call and injects faults (error statuses, secondary rate
limits, latency) on request. Redelivering a logged delivery posts it, signed, to `webhook_url`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import enum
import functools
import hashlib
import hmac
import http
import itertools
import json
import logging
import math
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.sim.openapi import BodyError, OpenAPISpec

log = logging.getLogger(__name__)

T = TypeVar("T")

HTML_BASE = "https://github.com"
DOCS_URL = "https://docs.github.com/rest"
SECONDARY_LIMIT_DOCS = (
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
SUPPORTED_API_VERSIONS = frozenset({"2022-11-28", "2026-03-10"})
DEFAULT_API_VERSION = "2022-11-28"
# https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
JWT_MAX_LIFETIME = 600
JWT_CLOCK_SKEW = 60
COMMENT_MAX_CHARS = 65536
CONTENTS_MAX_BYTES = 1024 * 1024
DEFAULT_PER_PAGE = 30
REDELIVERY_TIMEOUT = 10.0
MAX_PER_PAGE = 100
RATE_LIMIT_WINDOW = 3600.0
DEFAULT_RATE_LIMIT = 5000
ANONYMOUS_RATE_LIMIT = 60
MANIFEST_CODE_LIFETIME = 3600.0
CLASSIC_TOKEN_CHARS = 36
SHUTDOWN_TIMEOUT = 0.1
REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
ROLE_RANK = {"none": 0, "read": 1, "triage": 2, "write": 3, "maintain": 4, "admin": 5}
DEFAULT_PERMISSIONS = {
    "actions": "read",
    "checks": "write",
    "contents": "read",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}
DEFAULT_EVENTS = ("check_run", "issue_comment", "issues", "pull_request", "pull_request_review")

MSG_NOT_FOUND = "Not Found"
MSG_BAD_CREDENTIALS = "Bad credentials"
MSG_REQUIRES_AUTH = "Requires authentication"
MSG_JWT_UNDECODABLE = "A JSON web token could not be decoded"
MSG_JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
MSG_JWT_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
MSG_JWT_IAT = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was "
    "issued"
)
MSG_JWT_ISS = "'Issuer' claim ('iss') must be an Integer"
MSG_NOT_ACCESSIBLE = "Resource not accessible by integration"
MSG_VALIDATION_FAILED = "Validation Failed"
MSG_BODY_TOO_LONG = "Body is too long (maximum is 65536 characters)"
MSG_BAD_JSON = "Problems parsing JSON"
MSG_SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
MSG_PRIMARY_LIMIT = "API rate limit exceeded for {who}."
MSG_PERMISSIONS_NOT_GRANTED = "The permissions requested are not granted to this installation."
MSG_REPOSITORIES_NOT_ACCESSIBLE = (
    "There is at least one repository that does not exist or is not accessible to the parent "
    "installation."
)
MSG_LABEL_MISSING = "Label does not exist"
MSG_UNSUPPORTED_VERSION = "API version '{version}' is not supported."
MSG_CONCLUSION_REQUIRED = "conclusion is required when status is completed or completed_at is set"
MSG_STALE = "stale can only be set by GitHub"
MSG_NO_REPLY_TO_REPLY = "Replies to replies are not supported"
DELIVERY_OK = "OK"
DELIVERY_UNREACHABLE = "failed to connect"
DELIVERY_BAD_STATUS = "Invalid HTTP Response: {status}"

ERROR_RESOURCE = {
    "apps/create-installation-access-token": "InstallationAccessToken",
    "checks/create": "CheckRun",
    "checks/update": "CheckRun",
    "issues/add-labels": "Label",
    "issues/create-comment": "IssueComment",
    "issues/update-comment": "IssueComment",
    "pulls/create-reply-for-review-comment": "PullRequestReviewComment",
    "pulls/update-review-comment": "PullRequestReviewComment",
    "reactions/create-for-issue-comment": "Reaction",
    "reactions/create-for-pull-request-review-comment": "Reaction",
    "repos/create-commit-status": "Status",
}
COMMENTING_OPERATIONS = frozenset(
    {
        "issues/create-comment",
        "issues/update-comment",
        "pulls/create-reply-for-review-comment",
        "pulls/update-review-comment",
    }
)
# (permission, level) an installation token needs for each repository operation.
REQUIRED_PERMISSION: dict[str, tuple[str, str]] = {
    "actions/download-job-logs-for-workflow-run": ("actions", "read"),
    "actions/list-jobs-for-workflow-run": ("actions", "read"),
    "checks/create": ("checks", "write"),
    "checks/get": ("checks", "read"),
    "checks/list-for-ref": ("checks", "read"),
    "checks/update": ("checks", "write"),
    "issues/add-labels": ("issues", "write"),
    "issues/create-comment": ("issues", "write"),
    "issues/get": ("issues", "read"),
    "issues/get-comment": ("issues", "read"),
    "issues/list-comments": ("issues", "read"),
    "issues/remove-label": ("issues", "write"),
    "issues/update-comment": ("issues", "write"),
    "pulls/create-reply-for-review-comment": ("pull_requests", "write"),
    "pulls/get": ("pull_requests", "read"),
    "pulls/get-review": ("pull_requests", "read"),
    "pulls/get-review-comment": ("pull_requests", "read"),
    "pulls/list": ("pull_requests", "read"),
    "pulls/list-comments-for-review": ("pull_requests", "read"),
    "pulls/list-files": ("pull_requests", "read"),
    "pulls/list-review-comments": ("pull_requests", "read"),
    "pulls/list-reviews": ("pull_requests", "read"),
    "pulls/update-review-comment": ("pull_requests", "write"),
    "reactions/create-for-issue-comment": ("issues", "write"),
    "reactions/create-for-pull-request-review-comment": ("pull_requests", "write"),
    "repos/create-commit-status": ("statuses", "write"),
    "repos/get": ("metadata", "read"),
    "repos/get-collaborator-permission-level": ("metadata", "read"),
    "repos/get-content": ("contents", "read"),
}
REPO_URL_PATHS = {
    "archive_url": "/{archive_format}{/ref}",
    "assignees_url": "/assignees{/user}",
    "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}",
    "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}",
    "commits_url": "/commits{/sha}",
    "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}",
    "contributors_url": "/contributors",
    "deployments_url": "/deployments",
    "downloads_url": "/downloads",
    "events_url": "/events",
    "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks",
    "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}",
    "keys_url": "/keys{/key_id}",
    "labels_url": "/labels{/name}",
    "languages_url": "/languages",
    "merges_url": "/merges",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}",
    "stargazers_url": "/stargazers",
    "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "tags_url": "/tags",
    "teams_url": "/teams",
    "trees_url": "/git/trees{/sha}",
}
USER_URL_PATHS = {
    "events_url": "/events{/privacy}",
    "followers_url": "/followers",
    "following_url": "/following{/other_user}",
    "gists_url": "/gists{/gist_id}",
    "organizations_url": "/orgs",
    "received_events_url": "/received_events",
    "repos_url": "/repos",
    "starred_url": "/starred{/owner}{/repo}",
    "subscriptions_url": "/subscriptions",
}
MANIFEST_FORM_PATH = re.compile(r"^(?:/organizations/[^/]+)?/settings/apps/new$")
JOB_LOG_PATH = re.compile(r"^/_sim/job-logs/(\d+)$")


class Auth(enum.Enum):
    """Which credential an operation takes."""

    APP = "app"
    INSTALLATION = "installation"
    NONE = "none"
    ANY = "any"


OPERATION_AUTH = {
    "apps/create-from-manifest": Auth.NONE,
    "apps/create-installation-access-token": Auth.APP,
    "apps/get-authenticated": Auth.APP,
    "apps/get-repo-installation": Auth.APP,
    "apps/get-webhook-delivery": Auth.APP,
    "apps/list-webhook-deliveries": Auth.APP,
    "apps/redeliver-webhook-delivery": Auth.APP,
    "rate-limit/get": Auth.ANY,
}


@dataclass
class Call:
    """One request the simulator answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any | None
    status: int
    installation_id: int | None


@dataclass(frozen=True)
class IssuedToken:
    """An installation access token: `expires_at` is in seconds of the simulator's clock."""

    installation_id: int
    token: str
    expires_at: float
    permissions: Mapping[str, str]
    repositories: frozenset[str] | None = None


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None
    remaining: int
    headers: dict[str, str]
    body: Any
    delay: float


@dataclass
class _Bucket:
    reset: float
    used: int = 0


@dataclass(frozen=True)
class _Principal:
    bucket: str
    installation_id: int | None = None
    token: IssuedToken | None = None


@dataclass
class _Installation:
    id: int
    account: str
    account_type: str
    permissions: dict[str, str]
    created_at: float


@dataclass
class _Repo:
    full_name: str
    id: int
    installation_id: int
    private: bool
    default_branch: str
    created_at: float
    owner_type: str
    branches: dict[str, str] = field(default_factory=dict)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    next_number: int = 1

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/")[1]


@dataclass
class _Review:
    id: int
    user: str
    state: str
    body: str
    submitted_at: float
    commit_id: str


@dataclass
class _ReviewComment:
    """A comment on a line (or range) of a pull request's diff; replies share the root's place."""

    id: int
    full_name: str
    number: int
    user: str
    user_type: str
    body: str
    path: str
    line: int
    start_line: int | None
    side: str
    diff_hunk: str
    commit_id: str
    review_id: int | None
    in_reply_to_id: int | None
    created_at: float
    updated_at: float
    edits: int = 0


@dataclass
class _Delivery:
    """One attempt of GitHub to deliver a webhook to the app."""

    id: int
    guid: str
    event: str
    action: str | None
    status_code: int
    delivered_at: float
    redelivery: bool
    payload: dict[str, Any]
    installation_id: int | None
    repository_id: int | None
    duration: float = 0.01


@dataclass
class _Pull:
    id: int
    head_ref: str
    head_sha: str
    head_repo: str
    base_ref: str
    base_sha: str
    files: list[str]
    merged: bool
    draft: bool
    reviews: list[_Review] = field(default_factory=list)
    review_comments: list[_ReviewComment] = field(default_factory=list)


@dataclass
class _Issue:
    full_name: str
    number: int
    id: int
    title: str
    body: str
    user: str
    user_type: str
    labels: list[str]
    state: str
    created_at: float
    updated_at: float
    closed_at: float | None = None
    pull: _Pull | None = None


@dataclass
class _Comment:
    id: int
    full_name: str
    number: int
    body: str
    user: str
    user_type: str
    by_app: bool
    created_at: float
    updated_at: float
    edits: int = 0


@dataclass
class _Reaction:
    id: int
    comment_id: int
    user: str
    user_type: str
    content: str
    created_at: float


@dataclass
class _CheckRun:
    id: int
    full_name: str
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: str | None
    completed_at: str | None
    details_url: str | None
    external_id: str
    output: dict[str, Any]
    suite_id: int
    annotations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    app: dict[str, Any] | None = None  # None: this app


@dataclass
class _Status:
    id: int
    full_name: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    created_at: float


@dataclass
class _Job:
    id: int
    run_id: int
    full_name: str
    name: str
    status: str
    conclusion: str | None
    head_sha: str
    log: str
    created_at: float


@dataclass
class _Context:
    request: web.Request
    operation_id: str
    params: dict[str, str]
    body: Any
    principal: _Principal
    repo: _Repo | None = None

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    @property
    def number(self) -> int:
        return _int(self.params.get("issue_number") or self.params.get("pull_number"))


Handler = Callable[[_Context], web.Response]


@functools.lru_cache(maxsize=1)
def default_spec() -> OpenAPISpec:
    """Return the packaged GitHub API description, loaded once."""
    return OpenAPISpec.load()


class GitHubSimulator:
    """GitHub's REST API for one GitHub App, served on a loopback port."""

    def __init__(
        self,
        *,
        app_id: int = 1,
        app_slug: str = "box-bot",
        private_key_pem: str | None = None,
        clock: Callable[[], float] = time.time,
        token_lifetime: float = 3600.0,
    ) -> None:
        self.app_id = app_id
        self.app_slug = app_slug
        self.app_name = app_slug
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.private_key_pem = private_key_pem or _new_private_key()
        self._public_key = _public_key(self.private_key_pem)
        self.public_key_pem = self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        self.client_id = "Iv23li" + secrets.token_hex(7)
        self.client_secret = secrets.token_hex(20)
        self.webhook_secret = secrets.token_hex(20)
        self.app_manifest: dict[str, Any] | None = None
        self.spec = default_spec()
        self.base_url = ""
        self.latency = 0.0
        self.delayed: list[str] = []  # paths of requests held back by latency, as they arrive
        self.rate_limit = DEFAULT_RATE_LIMIT
        self.calls: list[Call] = []
        self.tokens_issued: list[IssuedToken] = []
        self.webhook_url: str | None = None  # where redeliveries are posted
        self.redelivery_requests: list[str] = []  # guids, in the order they were asked for
        self._created_at = clock()
        self._runner: web.AppRunner | None = None
        self._log_key = secrets.token_bytes(16)
        self._ids = itertools.count(1_000_001)
        self._user_ids: dict[str, int] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self._faults: list[_Fault] = []
        self._buckets: dict[str, _Bucket] = {}
        self._manifest_codes: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._installations: dict[int, _Installation] = {}
        self._repos: dict[str, _Repo] = {}
        self._forks: dict[str, _Repo] = {}
        self._issues: dict[tuple[str, int], _Issue] = {}
        self._comments: dict[int, _Comment] = {}
        self._reactions: dict[int, list[_Reaction]] = {}
        self._check_runs: dict[int, _CheckRun] = {}
        self._suites: dict[tuple[str, str], int] = {}
        self._statuses: list[_Status] = []
        self._jobs: dict[int, _Job] = {}
        self._review_comments: dict[int, _ReviewComment] = {}
        self._deliveries: dict[int, _Delivery] = {}
        self._posting: set[asyncio.Task[None]] = set()
        self._handlers = self._operation_handlers()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port) and return the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Close promptly even when a delayed answer is still pending.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def close(self) -> None:
        """Stop serving, after redeliveries still on their way."""
        if self._posting:
            await asyncio.wait(self._posting, timeout=REDELIVERY_TIMEOUT)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GitHubSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def bot_login(self) -> str:
        """Return the login of the app's bot user."""
        return f"{self.app_slug}[bot]"

    # -- seeding state ------------------------------------------------------------------------

    def add_installation(
        self,
        installation_id: int,
        account: str,
        *,
        account_type: str = "User",
        permissions: Mapping[str, str] | None = None,
    ) -> None:
        """Install the app on an account."""
        self._installations[installation_id] = _Installation(
            installation_id,
            account,
            account_type,
            dict(permissions or DEFAULT_PERMISSIONS),
            self.clock(),
        )

    def remove_installation(self, installation_id: int) -> None:
        """Uninstall the app from an account: its tokens stop working."""
        self._installations.pop(installation_id, None)
        self.revoke_tokens(installation_id)

    def revoke_tokens(self, installation_id: int) -> None:
        """Invalidate every token issued for an installation."""
        for token, issued in list(self._tokens.items()):
            if issued.installation_id == installation_id:
                del self._tokens[token]

    def add_repo(
        self,
        full_name: str,
        *,
        installation_id: int,
        private: bool = False,
        default_branch: str = "main",
        repo_id: int | None = None,
    ) -> dict[str, Any]:
        """Create a repository reachable through an installation."""
        installation = self._installations.get(installation_id)
        repo = _Repo(
            full_name,
            repo_id or self._next_id(),
            installation_id,
            private,
            default_branch,
            self.clock(),
            installation.account_type if installation else "User",
        )
        repo.branches[default_branch] = _sha(full_name, default_branch)
        self._repos[full_name.lower()] = repo
        return self._repo_json(repo)

    def add_issue(
        self,
        full_name: str,
        number: int | None = None,
        *,
        title: str,
        body: str = "",
        user: str = "octocat",
        user_type: str = "User",
        labels: Iterable[str] = (),
        state: str = "open",
    ) -> dict[str, Any]:
        """Open (or record as closed) an issue."""
        issue = self._new_issue(full_name, number, title, body, user, user_type, state)
        self._add_labels(issue, labels)
        return self._issue_json(issue)

    def add_pull(
        self,
        full_name: str,
        number: int | None = None,
        *,
        title: str,
        body: str = "",
        head: str,
        base: str = "main",
        head_sha: str | None = None,
        user: str = "octocat",
        user_type: str = "User",
        files: Iterable[str] = (),
        state: str = "open",
        merged: bool = False,
        draft: bool = False,
        head_repo: str | None = None,
    ) -> dict[str, Any]:
        """Open a pull request from `head` (a branch of `head_repo`, by default this repo)."""
        repo = self._repo(full_name)
        issue = self._new_issue(full_name, number, title, body, user, user_type, state)
        sha = head_sha or _sha(full_name, head, str(issue.number))
        source = head_repo or repo.full_name
        if source.lower() == repo.full_name.lower():
            repo.branches[head] = sha
        elif source.lower() not in self._forks:
            self._forks[source.lower()] = _Repo(
                source, self._next_id(), 0, False, "main", self.clock(), "User"
            )
        base_sha = repo.branches.setdefault(base, _sha(full_name, base))
        issue.pull = _Pull(
            self._next_id(), head, sha, source, base, base_sha, list(files), merged, draft
        )
        return self._pull_json(issue)

    def push_branch(self, full_name: str, branch: str, sha: str) -> None:
        """Move a branch to commit *sha*; open pull requests from it follow."""
        repo = self._repo(full_name)
        repo.branches[branch] = sha
        for issue in self._issues.values():
            pull = issue.pull
            if (
                pull is not None
                and issue.full_name.lower() == repo.full_name.lower()
                and pull.head_repo.lower() == repo.full_name.lower()
                and pull.head_ref == branch
            ):
                pull.head_sha = sha

    def add_comment(
        self, full_name: str, number: int, *, body: str, user: str, user_type: str = "User"
    ) -> dict[str, Any]:
        """Post a comment on an issue or pull request as a user."""
        issue = self._issue(full_name, number)
        return self._comment_json(self._new_comment(issue, body, user, user_type, by_app=False))

    def add_review(
        self, full_name: str, number: int, *, user: str, state: str = "COMMENTED", body: str = ""
    ) -> dict[str, Any]:
        """Submit a review on a pull request, on its current head commit."""
        issue = self._issue(full_name, number)
        pull = _require_pull(issue)
        review = _Review(self._next_id(), user, state, body, self.clock(), pull.head_sha)
        pull.reviews.append(review)
        return self._review_json(issue, review)

    def add_review_comment(
        self,
        full_name: str,
        number: int,
        *,
        user: str,
        body: str,
        path: str = "",
        line: int = 1,
        start_line: int | None = None,
        side: str = "RIGHT",
        diff_hunk: str | None = None,
        review_id: int | None = None,
        in_reply_to: int | None = None,
        user_type: str = "User",
    ) -> dict[str, Any]:
        """Comment on a line (or `start_line`..`line`) of a pull request's diff, or reply to one.

        A reply (`in_reply_to`) takes the place of the thread's first comment.
        """
        issue = self._issue(full_name, number)
        pull = _require_pull(issue)
        if in_reply_to is not None:
            root = self._thread_root(self._review_comments[in_reply_to])
            comment = self._new_review_comment(issue, root, body, user, user_type, review_id)
        else:
            now = self.clock()
            comment = _ReviewComment(
                self._next_id(),
                issue.full_name,
                issue.number,
                user,
                user_type,
                body,
                path,
                line,
                start_line,
                side,
                diff_hunk or f"@@ -{line},1 +{line},1 @@",
                pull.head_sha,
                review_id,
                None,
                now,
                now,
            )
            self._store_review_comment(pull, comment)
        return self._review_comment_json(comment)

    def edit_review_comment(
        self, full_name: str, comment_id: int, *, body: str, at: float | None = None
    ) -> dict[str, Any]:
        """Change a review comment's text as its author would (at time *at*, default now)."""
        comment = self._review_comments[comment_id]
        if comment.full_name.lower() != full_name.lower():
            raise KeyError(comment_id)
        comment.body = body
        comment.updated_at = self.clock() if at is None else at
        return self._review_comment_json(comment)

    def record_delivery(
        self,
        guid: str,
        event: str,
        action: str | None,
        status_code: int,
        delivered_at: float | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
        installation_id: int | None = None,
        repository_id: int | None = None,
    ) -> dict[str, Any]:
        """Log a webhook delivery to the app as GitHub's delivery log shows it."""
        delivery = _Delivery(
            self._next_id(),
            guid,
            event,
            action,
            status_code,
            self.clock() if delivered_at is None else delivered_at,
            False,
            dict(payload) if payload is not None else {"action": action},
            installation_id,
            repository_id,
        )
        self._deliveries[delivery.id] = delivery
        return self._delivery_item_json(delivery)

    def set_permission(self, full_name: str, login: str, permission: str) -> None:
        """Give a user a role on a repository: admin, maintain, write, triage, read or none."""
        if permission not in LEGACY_PERMISSION:
            raise ValueError(f"unknown role {permission!r}")
        self._repo(full_name).roles[login.lower()] = permission

    def set_file(
        self, full_name: str, path: str, content: str | bytes, ref: str | None = None
    ) -> None:
        """Store a file's text (or bytes) at a branch (the default branch unless `ref` is given)."""
        repo = self._repo(full_name)
        branch = ref or repo.default_branch
        repo.branches.setdefault(branch, _sha(full_name, branch))
        data = content.encode() if isinstance(content, str) else content
        repo.files[(branch, path.strip("/"))] = data

    def add_workflow_job(
        self,
        full_name: str,
        run_id: int,
        *,
        name: str,
        log: str = "",
        status: str = "completed",
        conclusion: str | None = "failure",
        head_sha: str | None = None,
    ) -> dict[str, Any]:
        """Record a GitHub Actions job of a workflow run, with its log text."""
        repo = self._repo(full_name)
        job = _Job(
            self._next_id(),
            run_id,
            repo.full_name,
            name,
            status,
            conclusion,
            head_sha or repo.branches[repo.default_branch],
            log,
            self.clock(),
        )
        self._jobs[job.id] = job
        return self._job_json(job)

    def add_check_run(
        self,
        full_name: str,
        *,
        name: str,
        head_sha: str,
        conclusion: str,
        app_id: int,
        app_slug: str,
        output: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record a completed check run of another app (a CI service) in that app's suite."""
        repo = self._repo(full_name)
        now = _iso(self.clock())
        suite_id = self._suites.setdefault(
            (f"{repo.full_name}@{app_slug}", head_sha), self._next_id()
        )
        run = _CheckRun(
            self._next_id(),
            repo.full_name,
            name,
            head_sha,
            "completed",
            conclusion,
            now,
            now,
            f"https://ci.example/{app_slug}/{name}",
            "",
            dict(output or {}),
            suite_id,
            app=self._other_app_json(app_id, app_slug),
        )
        self._check_runs[run.id] = run
        return self._check_run_json(run)

    def add_manifest_code(self, code: str) -> None:
        """Accept `code` once at the app-manifest conversion endpoint."""
        self._manifest_codes[code] = (self.clock(), None)

    # -- faults -------------------------------------------------------------------------------

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int | None,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` matching calls with `status` (None: only delay them).

        `method` may be "*"; `path_regex` is searched in the request path.
        """
        self._faults.append(
            _Fault(
                method.upper(),
                re.compile(path_regex),
                status,
                times,
                {k.lower(): v for k, v in (headers or {}).items()},
                body,
                delay,
            )
        )

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()

    # -- state for assertions -----------------------------------------------------------------

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        """Return the recorded calls with this method whose path matches the regex."""
        pattern = re.compile(path_regex)
        return [
            c for c in self.calls if method.upper() in ("*", c.method) and pattern.search(c.path)
        ]

    def issue(self, full_name: str, number: int) -> dict[str, Any]:
        """Return an issue (or pull request) as the issues API shows it."""
        return self._issue_json(self._issue(full_name, number))

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """Return the comments of an issue or pull request, oldest first."""
        return [
            self._comment_json(c)
            for c in self._comments.values()
            if (c.full_name.lower(), c.number) == (full_name.lower(), number)
        ]

    def comment_edits(self, comment_id: int) -> int:
        """Return how many times a comment was updated through the API."""
        return self._comments[comment_id].edits

    def reactions(self, full_name: str, comment_id: int) -> list[dict[str, Any]]:
        """Return the reactions on an issue comment or a review comment."""
        comment = self._comments.get(comment_id) or self._review_comments[comment_id]
        if comment.full_name.lower() != full_name.lower():
            return []
        return [self._reaction_json(r) for r in self._reactions.get(comment_id, [])]

    def review_thread(self, full_name: str, comment_id: int) -> list[dict[str, Any]]:
        """Return the review thread a review comment belongs to, oldest first."""
        root = self._thread_root(self._review_comments[comment_id])
        if root.full_name.lower() != full_name.lower():
            return []
        return [
            self._review_comment_json(c)
            for c in self._review_comments.values()
            if root.id in (c.id, c.in_reply_to_id)
        ]

    def deliveries(self) -> list[dict[str, Any]]:
        """Return the delivery log, newest first."""
        return [self._delivery_item_json(d) for d in self._newest_deliveries()]

    def check_runs(self, full_name: str) -> list[dict[str, Any]]:
        """Return a repository's check runs as the API shows them, plus actions and annotations."""
        return [
            {**self._check_run_json(run), "actions": run.actions, "annotations": run.annotations}
            for run in self._check_runs.values()
            if run.full_name.lower() == full_name.lower()
        ]

    def statuses(self, full_name: str, sha: str | None = None) -> list[dict[str, Any]]:
        """Return the commit statuses created on a repository (for one commit if `sha` is set)."""
        return [
            self._status_json(s)
            for s in self._statuses
            if s.full_name.lower() == full_name.lower() and sha in (None, s.sha)
        ]

    # -- request handling ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, parsed = _parse_json(raw)
        fault = self._take_fault(request.method, request.path)
        delay = self.latency + (fault.delay if fault else 0.0)
        if delay > 0:
            self.delayed.append(request.path)
            await asyncio.sleep(delay)
        if fault is not None and fault.status is not None:
            response, installation_id = _fault_response(fault), self._installation_of(request)
        else:
            response, installation_id = await self._respond(request, body, parsed)
        response.headers.setdefault("date", formatdate(self.clock(), usegmt=True))
        response.headers.setdefault("x-github-request-id", secrets.token_hex(8).upper())
        self.calls.append(
            Call(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                response.status,
                installation_id,
            )
        )
        log.debug("github-sim %s %s -> %s", request.method, request.path, response.status)
        return response

    def _installation_of(self, request: web.Request) -> int | None:
        credential = request.headers.get("authorization", "").partition(" ")[2].strip()
        issued = self._tokens.get(credential)
        return issued.installation_id if issued else None

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _respond(
        self, request: web.Request, body: Any, parsed: bool
    ) -> tuple[web.Response, int | None]:
        web_response = await self._web_route(request)
        if web_response is not None:
            return web_response, None
        version = request.headers.get("x-github-api-version", DEFAULT_API_VERSION)
        if version not in SUPPORTED_API_VERSIONS:
            return _error(400, MSG_UNSUPPORTED_VERSION.format(version=version), DOCS_URL), None
        matched = self.spec.match(request.method, request.raw_path)
        if matched is None:
            return _error(404, MSG_NOT_FOUND, DOCS_URL), None
        operation_id, params = matched
        principal = self._authenticate(request, operation_id)
        if isinstance(principal, web.Response):
            self._count(_Principal("anonymous"), principal)
            return principal, None
        ctx = _Context(request, operation_id, params, body, principal)
        # GET /rate_limit neither counts against the primary limit nor is refused by it.
        counted = operation_id != "rate-limit/get"
        response = (counted and self._rate_limited(principal)) or self._run(ctx, parsed)
        response = _conditional(request, response)
        response.headers["x-github-api-version-selected"] = version
        if counted:
            self._count(principal, response)
        return response, principal.installation_id

    def _run(self, ctx: _Context, parsed: bool) -> web.Response:
        if not parsed:
            return _error(400, MSG_BAD_JSON, self.spec.documentation_url(ctx.operation_id))
        if "owner" in ctx.params:
            ctx.repo = self._visible_repo(ctx)
            if ctx.repo is None:
                return self._not_found(ctx)
            if not self._permitted(ctx):
                docs = self.spec.documentation_url(ctx.operation_id)
                return _error(403, MSG_NOT_ACCESSIBLE, docs)
        errors = self._body_errors(ctx)
        if errors:
            return self._validation_failed(ctx, errors)
        try:
            return self._handlers[ctx.operation_id](ctx)
        except LookupError:
            return self._not_found(ctx)

    async def _web_route(self, request: web.Request) -> web.Response | None:
        if MANIFEST_FORM_PATH.match(request.path) and request.method == "POST":
            return await self._manifest_form(request)
        logs = JOB_LOG_PATH.match(request.path)
        if logs and request.method == "GET":
            return self._job_log_text(int(logs.group(1)), request.query.get("sig", ""))
        return None

    # -- authentication and limits ------------------------------------------------------------

    def _authenticate(self, request: web.Request, operation_id: str) -> _Principal | web.Response:
        auth = OPERATION_AUTH.get(operation_id, Auth.INSTALLATION)
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if auth is Auth.NONE or (auth is Auth.ANY and not credential):
            return _Principal("anonymous")
        if not credential:
            return _error(401, MSG_REQUIRES_AUTH, DOCS_URL)
        if auth is Auth.APP or (auth is Auth.ANY and credential.startswith("eyJ")):
            # JWTs are only accepted with the Bearer scheme.
            problem = (
                self._jwt_problem(credential) if scheme.lower() == "bearer" else MSG_JWT_UNDECODABLE
            )
            return _error(401, problem, DOCS_URL) if problem else _Principal("app")
        issued = self._tokens.get(credential)
        if scheme.lower() not in ("token", "bearer") or issued is None:
            return _error(401, MSG_BAD_CREDENTIALS, DOCS_URL)
        if issued.expires_at <= self.clock():
            return _error(401, MSG_BAD_CREDENTIALS, DOCS_URL)
        return _Principal(f"installation:{issued.installation_id}", issued.installation_id, issued)

    def _jwt_problem(self, token: str) -> str | None:
        """Return GitHub's complaint about an app JWT, or None if it is acceptable."""
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_iss": False,
                    "require": ["iat", "exp", "iss"],
                },
            )
        except jwt.PyJWTError:
            return MSG_JWT_UNDECODABLE
        issuer, issued, expires = claims["iss"], claims["iat"], claims["exp"]
        if str(issuer) not in (str(self.app_id), self.client_id):
            return MSG_JWT_UNDECODABLE if str(issuer).isdigit() else MSG_JWT_ISS
        now = self.clock()
        if not isinstance(issued, int | float) or issued > now + JWT_CLOCK_SKEW:
            return MSG_JWT_IAT
        if not isinstance(expires, int | float) or expires <= now:
            return MSG_JWT_EXPIRED
        if expires - issued > JWT_MAX_LIFETIME:
            return MSG_JWT_TOO_FAR
        return None

    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.reset <= self.clock():
            bucket = self._buckets[key] = _Bucket(reset=self.clock() + RATE_LIMIT_WINDOW)
        return bucket

    def _limit(self, key: str) -> int:
        return ANONYMOUS_RATE_LIMIT if key == "anonymous" else self.rate_limit

    def _rate_limited(self, principal: _Principal) -> web.Response | None:
        bucket = self._bucket(principal.bucket)
        if bucket.used < self._limit(principal.bucket):
            return None
        who = (
            f"installation ID {principal.installation_id}"
            if principal.installation_id is not None
            else "this client"
        )
        # https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api
        return _error(403, MSG_PRIMARY_LIMIT.format(who=who), DOCS_URL)

    def _count(self, principal: _Principal, response: web.Response) -> None:
        bucket = self._bucket(principal.bucket)
        limit = self._limit(principal.bucket)
        if response.status != 304 and bucket.used < limit:
            bucket.used += 1
        response.headers.update(self._rate_headers(bucket, limit))

    def _rate_headers(self, bucket: _Bucket, limit: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - bucket.used)),
            "x-ratelimit-reset": str(math.ceil(bucket.reset)),
            "x-ratelimit-used": str(bucket.used),
            "x-ratelimit-resource": "core",
        }

    def _visible_repo(self, ctx: _Context) -> _Repo | None:
        repo = self._repos.get(f"{ctx.params['owner']}/{ctx.params['repo']}".lower())
        if repo is None or repo.installation_id not in self._installations:
            return None
        token = ctx.principal.token
        if token is None:
            return repo
        if repo.installation_id != token.installation_id:
            return None
        if token.repositories is not None and repo.full_name.lower() not in token.repositories:
            return None
        return repo

    def _permitted(self, ctx: _Context) -> bool:
        token = ctx.principal.token
        needed = REQUIRED_PERMISSION.get(ctx.operation_id)
        if token is None or needed is None:
            return True
        names = [needed[0]]
        if needed[0] == "issues" and self._targets_pull(ctx):
            names.append("pull_requests")
        return any(_grants(token.permissions.get(name), needed[1]) for name in names)

    def _targets_pull(self, ctx: _Context) -> bool:
        assert ctx.repo is not None
        if "comment_id" in ctx.params:
            comment = self._comments.get(_int(ctx.params["comment_id"]))
            if comment is None:
                return False
            key = (comment.full_name.lower(), comment.number)
        else:
            key = (ctx.repo.full_name.lower(), _int(ctx.params.get("issue_number")))
        issue = self._issues.get(key)
        return issue is not None and issue.pull is not None

    # -- validation ---------------------------------------------------------------------------

    def _body_errors(self, ctx: _Context) -> list[BodyError]:
        body = ctx.body
        if ctx.operation_id == "issues/add-labels" and isinstance(body, list):
            body = ctx.body = {"labels": body}
        path = ctx.request.raw_path
        errors = self.spec.body_errors(ctx.request.method, path, body)
        if errors or not isinstance(body, dict):
            return errors
        commenting = ctx.operation_id in COMMENTING_OPERATIONS
        if commenting and len(body["body"]) > COMMENT_MAX_CHARS:
            return [BodyError("data", "unprocessable", MSG_BODY_TOO_LONG)]
        if ctx.operation_id in ("checks/create", "checks/update"):
            return _check_run_errors(body)
        return []

    def _validation_failed(self, ctx: _Context, errors: list[BodyError]) -> web.Response:
        resource = ERROR_RESOURCE.get(ctx.operation_id, "Request")
        return _json(
            422,
            {
                "message": MSG_VALIDATION_FAILED,
                "errors": [
                    {"resource": resource, "code": e.code, "field": e.field, "message": e.message}
                    for e in errors
                ],
                "documentation_url": self.spec.documentation_url(ctx.operation_id),
                "status": "422",
            },
        )

    def _not_found(self, ctx: _Context) -> web.Response:
        return _error(404, MSG_NOT_FOUND, self.spec.documentation_url(ctx.operation_id))

    # -- operations ---------------------------------------------------------------------------

    def _operation_handlers(self) -> dict[str, Handler]:
        return {
            "actions/download-job-logs-for-workflow-run": self._download_job_logs,
            "actions/list-jobs-for-workflow-run": self._list_jobs,
            "apps/create-from-manifest": self._convert_manifest,
            "apps/create-installation-access-token": self._create_token,
            "apps/get-authenticated": lambda ctx: _json(200, self._app_json()),
            "apps/get-repo-installation": self._get_repo_installation,
            "checks/create": self._create_check_run,
            "checks/get": lambda ctx: _json(200, self._check_run_json(self._check_run(ctx))),
            "checks/list-for-ref": self._list_check_runs,
            "checks/update": self._update_check_run,
            "issues/add-labels": self._add_labels_op,
            "issues/create-comment": self._create_comment,
            "issues/get": lambda ctx: _json(200, self._issue_json(self._ctx_issue(ctx))),
            "issues/get-comment": lambda ctx: _json(200, self._comment_json(self._comment(ctx))),
            "issues/list-comments": self._list_comments,
            "issues/remove-label": self._remove_label,
            "issues/update-comment": self._update_comment,
            "pulls/create-reply-for-review-comment": self._create_reply,
            "pulls/get": lambda ctx: _json(200, self._pull_json(self._ctx_pull(ctx))),
            "pulls/get-review": self._get_review,
            "pulls/get-review-comment": lambda ctx: _json(
                200, self._review_comment_json(self._review_comment(ctx))
            ),
            "pulls/list": self._list_pulls,
            "pulls/list-comments-for-review": self._list_comments_for_review,
            "pulls/list-files": self._list_files,
            "pulls/list-review-comments": self._list_review_comments,
            "pulls/list-reviews": self._list_reviews,
            "pulls/update-review-comment": self._update_review_comment,
            "apps/get-webhook-delivery": lambda ctx: _json(
                200, self._delivery_json(self._deliveries[_int(ctx.params["delivery_id"])])
            ),
            "apps/list-webhook-deliveries": self._list_deliveries,
            "apps/redeliver-webhook-delivery": self._redeliver,
            "rate-limit/get": self._get_rate_limit,
            "reactions/create-for-issue-comment": self._create_reaction,
            "reactions/create-for-pull-request-review-comment": self._create_review_reaction,
            "repos/create-commit-status": self._create_status,
            "repos/get": lambda ctx: _json(200, self._repo_json(_repo_of(ctx))),
            "repos/get-collaborator-permission-level": self._get_permission,
            "repos/get-content": self._get_content,
        }

    def _convert_manifest(self, ctx: _Context) -> web.Response:
        entry = self._manifest_codes.pop(ctx.params["code"], None)
        if entry is None or entry[0] + MANIFEST_CODE_LIFETIME <= self.clock():
            return self._not_found(ctx)
        if entry[1] is not None:
            self.app_manifest = entry[1]
            self.app_name = str(entry[1].get("name") or self.app_name)
        return _json(
            201,
            {
                **self._app_json(),
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "webhook_secret": self.webhook_secret,
                "pem": self.private_key_pem,
            },
        )

    def _create_token(self, ctx: _Context) -> web.Response:
        installation = self._installations.get(_int(ctx.params["installation_id"]))
        if installation is None:
            return self._not_found(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        permissions = dict(body.get("permissions") or installation.permissions)
        if not all(_grants(installation.permissions.get(k), v) for k, v in permissions.items()):
            return _error(
                422, MSG_PERMISSIONS_NOT_GRANTED, self.spec.documentation_url(ctx.operation_id)
            )
        try:
            repositories = self._token_repositories(installation, body)
        except LookupError:
            return _error(
                422, MSG_REPOSITORIES_NOT_ACCESSIBLE, self.spec.documentation_url(ctx.operation_id)
            )
        stateless = ctx.request.headers.get("x-github-stateless-s2s-token", "enabled")
        issued = IssuedToken(
            installation.id,
            self._new_token(stateless != "disabled"),
            self.clock() + self.token_lifetime,
            permissions,
            repositories,
        )
        self._tokens[issued.token] = issued
        self.tokens_issued.append(issued)
        return _json(201, self._token_json(issued))

    def _token_repositories(
        self, installation: _Installation, body: Mapping[str, Any]
    ) -> frozenset[str] | None:
        """Return the repositories a token is narrowed to (None: all of the installation's)."""
        names = {n.lower() for n in body.get("repositories") or []}
        ids = set(body.get("repository_ids") or [])
        if not names and not ids:
            return None
        mine = [r for r in self._repos.values() if r.installation_id == installation.id]
        chosen = [r for r in mine if r.name.lower() in names or r.id in ids]
        if len(chosen) != len(names) + len(ids):
            raise LookupError("a repository is not part of the installation")
        return frozenset(r.full_name.lower() for r in chosen)

    def _get_repo_installation(self, ctx: _Context) -> web.Response:
        return _json(
            200, self._installation_json(self._installations[_repo_of(ctx).installation_id])
        )

    def _get_rate_limit(self, ctx: _Context) -> web.Response:
        key = ctx.principal.bucket
        bucket = self._bucket(key)
        core = self._rate_json(bucket, self._limit(key))
        idle = self._rate_json(_Bucket(reset=self.clock() + 60), 30)
        response = _json(
            200,
            {
                "resources": {"core": core, "search": idle, "graphql": core},
                "rate": core,
            },
        )
        response.headers.update(self._rate_headers(bucket, self._limit(key)))
        return response

    def _get_permission(self, ctx: _Context) -> web.Response:
        repo = _repo_of(ctx)
        login = ctx.params["username"]
        role = self._role(repo, login)
        if role is None:
            return self._not_found(ctx)
        user = {
            **self._user(login),
            "role_name": role,
            "permissions": {
                "admin": ROLE_RANK[role] >= ROLE_RANK["admin"],
                "maintain": ROLE_RANK[role] >= ROLE_RANK["maintain"],
                "push": ROLE_RANK[role] >= ROLE_RANK["write"],
                "triage": ROLE_RANK[role] >= ROLE_RANK["triage"],
                "pull": ROLE_RANK[role] >= ROLE_RANK["read"],
            },
        }
        return _json(200, {"permission": LEGACY_PERMISSION[role], "role_name": role, "user": user})

    def _role(self, repo: _Repo, login: str) -> str | None:
        """Return a user's role; public repos report `read` for anyone else, private ones 404."""
        role = repo.roles.get(login.lower())
        if role is not None:
            return role
        if login.lower() == repo.owner.lower() and repo.owner_type == "User":
            return "admin"
        return None if repo.private else "read"

    def _get_content(self, ctx: _Context) -> web.Response:
        repo = _repo_of(ctx)
        path = ctx.params["path"].strip("/")
        ref = ctx.query.get("ref") or repo.default_branch
        branch = self._branch_of(repo, ref)
        data = repo.files.get((branch, path))
        if data is not None:
            if "raw" in ctx.request.headers.get("accept", ""):
                return web.Response(status=200, body=data, content_type="text/plain")
            return _json(200, self._content_json(repo, path, ref, data))
        entries = sorted(p for (b, p) in repo.files if b == branch and p.startswith(path + "/"))
        if not entries:
            return self._not_found(ctx)
        return _json(200, self._directory_json(repo, branch, path, ref, entries))

    def _branch_of(self, repo: _Repo, ref: str) -> str:
        ref = ref.removeprefix("refs/heads/").removeprefix("heads/")
        if ref in repo.branches:
            return ref
        named = [name for name, sha in repo.branches.items() if sha == ref]
        return named[0] if named else ref

    def _ctx_issue(self, ctx: _Context) -> _Issue:
        return self._issues[(_repo_of(ctx).full_name.lower(), ctx.number)]

    def _ctx_pull(self, ctx: _Context) -> _Issue:
        issue = self._ctx_issue(ctx)
        if issue.pull is None:
            raise LookupError(ctx.number)
        return issue

    def _comment(self, ctx: _Context) -> _Comment:
        comment = self._comments[_int(ctx.params["comment_id"])]
        if comment.full_name.lower() != _repo_of(ctx).full_name.lower():
            raise LookupError(comment.id)
        return comment

    def _create_comment(self, ctx: _Context) -> web.Response:
        issue = self._ctx_issue(ctx)
        comment = self._new_comment(issue, ctx.body["body"], self.bot_login, "Bot", by_app=True)
        data = self._comment_json(comment)
        return _json(201, data, headers={"location": data["url"]})

    def _update_comment(self, ctx: _Context) -> web.Response:
        comment = self._comment(ctx)
        comment.body = ctx.body["body"]
        comment.updated_at = self.clock()
        comment.edits += 1
        return _json(200, self._comment_json(comment))

    def _list_comments(self, ctx: _Context) -> web.Response:
        issue = self._ctx_issue(ctx)
        since = _parse_time(ctx.query.get("since"))
        found = [
            c
            for c in self._comments.values()
            if (c.full_name, c.number) == (issue.full_name, issue.number)
            and (since is None or c.updated_at >= since)
        ]
        return self._paginated(ctx, [self._comment_json(c) for c in found])

    def _create_reaction(self, ctx: _Context) -> web.Response:
        return self._react(self._comment(ctx).id, ctx.body["content"])

    def _create_review_reaction(self, ctx: _Context) -> web.Response:
        return self._react(self._review_comment(ctx).id, ctx.body["content"])

    def _react(self, comment_id: int, content: str) -> web.Response:
        """Add the bot's reaction once: 201 the first time, 200 with the same one after."""
        existing = self._reactions.setdefault(comment_id, [])
        for reaction in existing:
            if (reaction.user, reaction.content) == (self.bot_login, content):
                return _json(200, self._reaction_json(reaction))
        reaction = _Reaction(
            self._next_id(), comment_id, self.bot_login, "Bot", content, self.clock()
        )
        existing.append(reaction)
        return _json(201, self._reaction_json(reaction))

    def _review_comment(self, ctx: _Context) -> _ReviewComment:
        comment = self._review_comments[_int(ctx.params["comment_id"])]
        if comment.full_name.lower() != _repo_of(ctx).full_name.lower():
            raise LookupError(comment.id)
        return comment

    def _update_review_comment(self, ctx: _Context) -> web.Response:
        comment = self._review_comment(ctx)
        comment.body = ctx.body["body"]
        comment.updated_at = self.clock()
        comment.edits += 1
        return _json(200, self._review_comment_json(comment))

    def _create_reply(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        parent = self._review_comment(ctx)
        if parent.number != issue.number:
            raise LookupError(parent.id)
        if parent.in_reply_to_id is not None:
            docs = self.spec.documentation_url(ctx.operation_id)
            return _error(422, MSG_NO_REPLY_TO_REPLY, docs)
        reply = self._new_review_comment(issue, parent, ctx.body["body"], self.bot_login, "Bot")
        data = self._review_comment_json(reply)
        return _json(201, data, headers={"location": data["url"]})

    def _get_review(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        return _json(200, self._review_json(issue, self._ctx_review(ctx, issue)))

    def _ctx_review(self, ctx: _Context, issue: _Issue) -> _Review:
        review_id = _int(ctx.params["review_id"])
        for review in _require_pull(issue).reviews:
            if review.id == review_id:
                return review
        raise LookupError(review_id)

    def _list_comments_for_review(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        review = self._ctx_review(ctx, issue)
        found = [c for c in _require_pull(issue).review_comments if c.review_id == review.id]
        return self._paginated(ctx, [self._review_comment_json(c) for c in found])

    def _list_deliveries(self, ctx: _Context) -> web.Response:
        wanted = ctx.query.get("status")
        found = [
            d
            for d in self._newest_deliveries()
            if wanted is None or _delivery_outcome(d.status_code) == wanted
        ]
        cursor = ctx.query.get("cursor")
        if cursor:
            found = [d for d in found if d.id <= _int(cursor)]
        per_page = min(MAX_PER_PAGE, max(1, _int(ctx.query.get("per_page"), DEFAULT_PER_PAGE)))
        page, rest = found[:per_page], found[per_page:]
        headers = {}
        if rest:
            query = urlencode({**ctx.query, "per_page": per_page, "cursor": rest[0].id})
            headers["link"] = f'<{self.base_url}{ctx.request.path}?{query}>; rel="next"'
        return _json(200, [self._delivery_item_json(d) for d in page], headers=headers)

    def _redeliver(self, ctx: _Context) -> web.Response:
        delivery = self._deliveries[_int(ctx.params["delivery_id"])]
        self.redelivery_requests.append(delivery.guid)
        if self.webhook_url is not None:
            task = asyncio.get_running_loop().create_task(self._post_again(delivery))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
        return _json(202, {})

    async def _post_again(self, original: _Delivery) -> None:
        """Post a logged delivery to `webhook_url` as GitHub would and log the attempt."""
        assert self.webhook_url is not None
        body = json.dumps(original.payload).encode()
        signature = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": original.event,
            "X-GitHub-Delivery": original.guid,
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
            "X-Hub-Signature-256": f"sha256={signature}",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/sim",
        }
        started = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=REDELIVERY_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.webhook_url, data=body, headers=headers) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        attempt = _Delivery(
            self._next_id(),
            original.guid,
            original.event,
            original.action,
            status,
            self.clock(),
            True,
            original.payload,
            original.installation_id,
            original.repository_id,
            round(time.monotonic() - started, 3),
        )
        self._deliveries[attempt.id] = attempt

    def _newest_deliveries(self) -> list[_Delivery]:
        return sorted(self._deliveries.values(), key=lambda d: d.id, reverse=True)

    def _add_labels_op(self, ctx: _Context) -> web.Response:
        issue = self._ctx_issue(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        names = [item if isinstance(item, str) else item["name"] for item in body.get("labels", [])]
        self._add_labels(issue, names)
        issue.updated_at = self.clock()
        return _json(200, [self._label_json(_repo_of(ctx), name) for name in issue.labels])

    def _remove_label(self, ctx: _Context) -> web.Response:
        issue = self._ctx_issue(ctx)
        name = ctx.params["name"]
        matching = [label for label in issue.labels if label.lower() == name.lower()]
        if not matching:
            return _error(404, MSG_LABEL_MISSING, self.spec.documentation_url(ctx.operation_id))
        issue.labels.remove(matching[0])
        issue.updated_at = self.clock()
        return _json(200, [self._label_json(_repo_of(ctx), label) for label in issue.labels])

    def _list_pulls(self, ctx: _Context) -> web.Response:
        repo = _repo_of(ctx)
        state = ctx.query.get("state", "open")
        head, base = ctx.query.get("head"), ctx.query.get("base")
        pulls = [
            i
            for i in self._issues.values()
            if i.full_name == repo.full_name
            and i.pull is not None
            and state in ("all", i.state)
            and (head is None or ":" not in head or self._head_label(i).lower() == head.lower())
            and (base is None or i.pull.base_ref == base)
        ]
        key = "updated_at" if ctx.query.get("sort") == "updated" else "number"
        pulls.sort(key=lambda i: getattr(i, key), reverse=ctx.query.get("direction") != "asc")
        return self._paginated(ctx, [self._pull_json(i, simple=True) for i in pulls])

    def _list_files(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        return self._paginated(
            ctx, [self._diff_entry_json(issue, name) for name in _require_pull(issue).files]
        )

    def _list_reviews(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        return self._paginated(
            ctx, [self._review_json(issue, review) for review in _require_pull(issue).reviews]
        )

    def _list_review_comments(self, ctx: _Context) -> web.Response:
        issue = self._ctx_pull(ctx)
        return self._paginated(
            ctx,
            [
                self._review_comment_json(comment)
                for comment in _require_pull(issue).review_comments
            ],
        )

    def _create_check_run(self, ctx: _Context) -> web.Response:
        repo, body = _repo_of(ctx), ctx.body
        now = _iso(self.clock())
        conclusion = body.get("conclusion")
        run = _CheckRun(
            self._next_id(),
            repo.full_name,
            body["name"],
            body["head_sha"],
            "completed" if conclusion else body.get("status", "queued"),
            conclusion,
            body.get("started_at", now),
            body.get("completed_at", now) if conclusion else None,
            body.get("details_url", self._app_external_url()),
            body.get("external_id", ""),
            {},
            self._suites.setdefault((repo.full_name, body["head_sha"]), self._next_id()),
        )
        self._apply_check_run_output(run, body)
        self._check_runs[run.id] = run
        return _json(201, self._check_run_json(run))

    def _update_check_run(self, ctx: _Context) -> web.Response:
        run, body = self._check_run(ctx), ctx.body
        for name in ("name", "details_url", "external_id", "started_at", "status"):
            if name in body:
                setattr(run, name, body[name])
        if body.get("conclusion"):
            run.status, run.conclusion = "completed", body["conclusion"]
            run.completed_at = body.get("completed_at", _iso(self.clock()))
        self._apply_check_run_output(run, body)
        return _json(200, self._check_run_json(run))

    def _apply_check_run_output(self, run: _CheckRun, body: Mapping[str, Any]) -> None:
        output = body.get("output")
        if output:
            run.output.update({k: output[k] for k in ("title", "summary", "text") if k in output})
            run.annotations.extend(output.get("annotations", []))
        if "actions" in body:
            run.actions = list(body["actions"])

    def _check_run(self, ctx: _Context) -> _CheckRun:
        run = self._check_runs[_int(ctx.params["check_run_id"])]
        if run.full_name != _repo_of(ctx).full_name:
            raise LookupError(run.id)
        return run

    def _list_check_runs(self, ctx: _Context) -> web.Response:
        repo = _repo_of(ctx)
        ref = ctx.params["ref"]
        sha = repo.branches.get(ref.removeprefix("heads/"), ref)
        runs = [
            r
            for r in self._check_runs.values()
            if r.full_name == repo.full_name
            and r.head_sha == sha
            and ctx.query.get("check_name") in (None, r.name)
            and ctx.query.get("status") in (None, r.status)
        ]
        runs.sort(key=lambda r: r.id, reverse=True)
        if ctx.query.get("filter", "latest") == "latest":
            latest: dict[str, _CheckRun] = {}
            for run in runs:
                latest.setdefault(run.name, run)
            runs = list(latest.values())
        page, headers = self._page(ctx, runs)
        return _json(
            200,
            {
                "total_count": len(runs),
                "check_runs": [self._check_run_json(r) for r in page],
            },
            headers=headers,
        )

    def _create_status(self, ctx: _Context) -> web.Response:
        body = ctx.body
        status = _Status(
            self._next_id(),
            _repo_of(ctx).full_name,
            ctx.params["sha"],
            body["state"],
            body.get("context", "default"),
            body.get("description"),
            body.get("target_url"),
            self.clock(),
        )
        self._statuses.append(status)
        data = self._status_json(status)
        return _json(201, data, headers={"location": data["url"]})

    def _list_jobs(self, ctx: _Context) -> web.Response:
        repo = _repo_of(ctx)
        run_id = _int(ctx.params["run_id"])
        jobs = [
            j for j in self._jobs.values() if j.full_name == repo.full_name and j.run_id == run_id
        ]
        page, headers = self._page(ctx, jobs)
        return _json(
            200,
            {"total_count": len(jobs), "jobs": [self._job_json(j) for j in page]},
            headers=headers,
        )

    def _download_job_logs(self, ctx: _Context) -> web.Response:
        job = self._jobs[_int(ctx.params["job_id"])]
        if job.full_name != _repo_of(ctx).full_name:
            raise LookupError(job.id)
        location = f"{self.base_url}/_sim/job-logs/{job.id}?sig={self._log_signature(job.id)}"
        return web.Response(status=302, headers={"location": location})

    def _job_log_text(self, job_id: int, signature: str) -> web.Response:
        job = self._jobs.get(job_id)
        if job is None or not hmac.compare_digest(signature, self._log_signature(job_id)):
            return web.Response(status=403, text="AuthenticationFailed")
        return web.Response(status=200, text=job.log, content_type="text/plain")

    def _log_signature(self, job_id: int) -> str:
        return hmac.new(self._log_key, str(job_id).encode(), hashlib.sha256).hexdigest()

    async def _manifest_form(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            manifest = json.loads(str(form.get("manifest", "")))
            redirect_url = str(manifest["redirect_url"])
        except (ValueError, KeyError, TypeError):
            return _json(422, {"message": "Invalid manifest", "documentation_url": DOCS_URL})
        code = secrets.token_hex(10)
        self._manifest_codes[code] = (self.clock(), manifest)
        query = {
            "code": code,
            **({"state": request.query["state"]} if "state" in request.query else {}),
        }
        separator = "&" if "?" in redirect_url else "?"
        return web.Response(
            status=302, headers={"location": f"{redirect_url}{separator}{urlencode(query)}"}
        )

    # -- shared mutations ---------------------------------------------------------------------

    def _new_issue(
        self,
        full_name: str,
        number: int | None,
        title: str,
        body: str,
        user: str,
        user_type: str,
        state: str,
    ) -> _Issue:
        repo = self._repo(full_name)
        number = number or repo.next_number
        repo.next_number = max(repo.next_number, number + 1)
        now = self.clock()
        issue = _Issue(
            repo.full_name,
            number,
            self._next_id(),
            title,
            body,
            user,
            user_type,
            [],
            state,
            now,
            now,
            now if state == "closed" else None,
        )
        self._issues[(repo.full_name.lower(), number)] = issue
        return issue

    def _thread_root(self, comment: _ReviewComment) -> _ReviewComment:
        if comment.in_reply_to_id is None:
            return comment
        return self._review_comments[comment.in_reply_to_id]

    def _new_review_comment(
        self,
        issue: _Issue,
        root: _ReviewComment,
        body: str,
        user: str,
        user_type: str,
        review_id: int | None = None,
    ) -> _ReviewComment:
        now = self.clock()
        reply = _ReviewComment(
            self._next_id(),
            issue.full_name,
            issue.number,
            user,
            user_type,
            body,
            root.path,
            root.line,
            root.start_line,
            root.side,
            root.diff_hunk,
            root.commit_id,
            review_id,
            root.id,
            now,
            now,
        )
        self._store_review_comment(_require_pull(issue), reply)
        issue.updated_at = now
        return reply

    def _store_review_comment(self, pull: _Pull, comment: _ReviewComment) -> None:
        pull.review_comments.append(comment)
        self._review_comments[comment.id] = comment

    def _new_comment(
        self, issue: _Issue, body: str, user: str, user_type: str, *, by_app: bool
    ) -> _Comment:
        now = self.clock()
        comment = _Comment(
            self._next_id(), issue.full_name, issue.number, body, user, user_type, by_app, now, now
        )
        self._comments[comment.id] = comment
        issue.updated_at = now
        return comment

    def _add_labels(self, issue: _Issue, names: Iterable[str]) -> None:
        repo = self._repo(issue.full_name)
        for name in names:
            known = {label.lower(): label for label in repo.labels}
            canonical = known.get(name.lower(), name)
            repo.labels.setdefault(canonical, self._next_id())
            if canonical not in issue.labels:
                issue.labels.append(canonical)

    def _new_token(self, stateless: bool) -> str:
        # https://github.blog/changelog/2026-05-15-github-app-installation-tokens-per-request-override-header/
        if not stateless:
            alphabet = string.ascii_letters + string.digits
            return "ghs_" + "".join(secrets.choice(alphabet) for _ in range(CLASSIC_TOKEN_CHARS))
        segments = (secrets.token_urlsafe(n) for n in (27, 300, 64))
        return f"ghs_{self.app_id}_" + ".".join(segments)

    def _next_id(self) -> int:
        return next(self._ids)

    def _repo(self, full_name: str) -> _Repo:
        return self._repos[full_name.lower()]

    def _issue(self, full_name: str, number: int) -> _Issue:
        return self._issues[(full_name.lower(), number)]

    def _paginated(self, ctx: _Context, items: list[Any]) -> web.Response:
        page, headers = self._page(ctx, items)
        return _json(200, page, headers=headers)

    def _page(self, ctx: _Context, items: list[T]) -> tuple[list[T], dict[str, str]]:
        """Slice `items` by `per_page`/`page` and build GitHub's `Link` header."""
        per_page = min(MAX_PER_PAGE, max(1, _int(ctx.query.get("per_page"), DEFAULT_PER_PAGE)))
        page = max(1, _int(ctx.query.get("page"), 1))
        last = max(1, math.ceil(len(items) / per_page))
        rels = []
        if page < last:
            rels += [("next", page + 1), ("last", last)]
        if page > 1:
            rels += [("first", 1), ("prev", page - 1)]
        links = [
            f"<{self.base_url}{ctx.request.path}?"
            f'{urlencode({**ctx.query, "per_page": per_page, "page": n})}>; rel="{rel}"'
            for rel, n in rels
        ]
        headers = {"link": ", ".join(links)} if links else {}
        return items[(page - 1) * per_page : page * per_page], headers

    # -- rendering ----------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _user_id(self, login: str) -> int:
        return self._user_ids.setdefault(login.lower(), 100_000 + len(self._user_ids) * 7 + 1)

    def _user(self, login: str, user_type: str = "User") -> dict[str, Any]:
        user_id = self._user_id(login)
        url = self._api(f"/users/{quote(login)}")
        html = (
            f"{HTML_BASE}/apps/{login.removesuffix('[bot]')}"
            if user_type == "Bot"
            else f"{HTML_BASE}/{login}"
        )
        return {
            "login": login,
            "id": user_id,
            "node_id": _node_id("U_kgDO", user_id),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
            "gravatar_id": "",
            "url": url,
            "html_url": html,
            **{key: url + suffix for key, suffix in USER_URL_PATHS.items()},
            "type": user_type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _app_external_url(self) -> str:
        if self.app_manifest and self.app_manifest.get("url"):
            return str(self.app_manifest["url"])
        return f"https://{self.app_slug}.example.com"

    def _app_json(self) -> dict[str, Any]:
        manifest = self.app_manifest or {}
        return {
            "id": self.app_id,
            "slug": self.app_slug,
            "node_id": _node_id("A_kwHO", self.app_id),
            "client_id": self.client_id,
            "owner": self._user(f"{self.app_slug}-dev", "Organization"),
            "name": self.app_name,
            "description": manifest.get("description", ""),
            "external_url": self._app_external_url(),
            "html_url": f"{HTML_BASE}/apps/{self.app_slug}",
            "created_at": _iso(self._created_at),
            "updated_at": _iso(self._created_at),
            "permissions": dict(manifest.get("default_permissions") or DEFAULT_PERMISSIONS),
            "events": list(manifest.get("default_events") or DEFAULT_EVENTS),
            "installations_count": len(self._installations),
        }

    def _other_app_json(self, app_id: int, slug: str) -> dict[str, Any]:
        return {
            **self._app_json(),
            "id": app_id,
            "slug": slug,
            "name": slug,
            "node_id": _node_id("A_kwHO", app_id),
            "client_id": f"Iv1.{slug}",
            "owner": self._user(slug, "Organization"),
            "description": "",
            "external_url": f"https://{slug}.example",
            "html_url": f"{HTML_BASE}/apps/{slug}",
        }

    def _installation_json(self, installation: _Installation) -> dict[str, Any]:
        account = self._user(installation.account, installation.account_type)
        html = (
            f"{HTML_BASE}/organizations/{installation.account}/settings/installations/"
            f"{installation.id}"
            if installation.account_type == "Organization"
            else f"{HTML_BASE}/settings/installations/{installation.id}"
        )
        return {
            "id": installation.id,
            "client_id": self.client_id,
            "account": account,
            "repository_selection": "selected",
            "access_tokens_url": self._api(f"/app/installations/{installation.id}/access_tokens"),
            "repositories_url": self._api("/installation/repositories"),
            "html_url": html,
            "app_id": self.app_id,
            "app_slug": self.app_slug,
            "target_id": account["id"],
            "target_type": installation.account_type,
            "permissions": dict(installation.permissions),
            "events": list(DEFAULT_EVENTS),
            "created_at": _iso(installation.created_at),
            "updated_at": _iso(installation.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def _token_json(self, issued: IssuedToken) -> dict[str, Any]:
        data: dict[str, Any] = {
            "token": issued.token,
            "expires_at": _iso(issued.expires_at),
            "permissions": dict(issued.permissions),
            "repository_selection": "selected",
        }
        if issued.repositories is not None:
            data["repositories"] = [
                self._repo_json(self._repos[name]) for name in sorted(issued.repositories)
            ]
        return data

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        api = self._api(f"/repos/{repo.full_name}")
        html = f"{HTML_BASE}/{repo.full_name}"
        open_issues = sum(
            1 for i in self._issues.values() if i.full_name == repo.full_name and i.state == "open"
        )
        created = _iso(repo.created_at)
        return {
            "id": repo.id,
            "node_id": _node_id("R_kgDO", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self._user(repo.owner, repo.owner_type),
            "html_url": html,
            "description": None,
            "fork": repo.installation_id == 0,
            "url": api,
            **{key: api + suffix for key, suffix in REPO_URL_PATHS.items()},
            "created_at": created,
            "updated_at": created,
            "pushed_at": created,
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": True,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "topics": [],
            "visibility": "private" if repo.private else "public",
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": repo.default_branch,
            "network_count": 0,
            "subscribers_count": 0,
        }

    def _label_json(self, repo: _Repo, name: str) -> dict[str, Any]:
        label_id = repo.labels[name]
        return {
            "id": label_id,
            "node_id": _node_id("LA_kwDO", label_id),
            "url": self._api(f"/repos/{repo.full_name}/labels/{quote(name)}"),
            "name": name,
            "color": hashlib.sha1(name.encode()).hexdigest()[:6],
            "default": False,
            "description": "",
        }

    def _association(self, full_name: str, login: str, user_type: str = "User") -> str:
        repo = self._repo(full_name)
        if user_type == "Bot":
            return "NONE"
        if login.lower() == repo.owner.lower():
            return "OWNER"
        role = repo.roles.get(login.lower(), "none")
        if ROLE_RANK[role] >= ROLE_RANK["write"] and repo.owner_type == "Organization":
            return "MEMBER"
        return "COLLABORATOR" if ROLE_RANK[role] >= ROLE_RANK["triage"] else "NONE"

    def _comment_count(self, issue: _Issue) -> int:
        return sum(
            1
            for c in self._comments.values()
            if (c.full_name, c.number) == (issue.full_name, issue.number)
        )

    def _reaction_rollup(self, url: str, reactions: list[_Reaction]) -> dict[str, Any]:
        counts = {content: 0 for content in REACTION_CONTENTS}
        for reaction in reactions:
            counts[reaction.content] += 1
        return {"url": url, "total_count": len(reactions), **counts}

    def _issue_json(self, issue: _Issue) -> dict[str, Any]:
        repo = self._repo(issue.full_name)
        api = self._api(f"/repos/{issue.full_name}/issues/{issue.number}")
        kind = "pull" if issue.pull else "issues"
        data: dict[str, Any] = {
            "url": api,
            "repository_url": self._api(f"/repos/{issue.full_name}"),
            "labels_url": api + "/labels{/name}",
            "comments_url": api + "/comments",
            "events_url": api + "/events",
            "html_url": f"{HTML_BASE}/{issue.full_name}/{kind}/{issue.number}",
            "id": issue.id,
            "node_id": _node_id("I_kwDO", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self._user(issue.user, issue.user_type),
            "labels": [self._label_json(repo, name) for name in issue.labels],
            "state": issue.state,
            "state_reason": "completed" if issue.state == "closed" else None,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": self._comment_count(issue),
            "created_at": _iso(issue.created_at),
            "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at) if issue.closed_at else None,
            "author_association": self._association(issue.full_name, issue.user, issue.user_type),
            "active_lock_reason": None,
            "body": issue.body,
            "reactions": self._reaction_rollup(api + "/reactions", []),
            "timeline_url": api + "/timeline",
            "performed_via_github_app": None,
        }
        if issue.pull is not None:
            html = data["html_url"]
            data["draft"] = issue.pull.draft
            data["pull_request"] = {
                "url": self._api(f"/repos/{issue.full_name}/pulls/{issue.number}"),
                "html_url": html,
                "diff_url": html + ".diff",
                "patch_url": html + ".patch",
                "merged_at": _iso(issue.updated_at) if issue.pull.merged else None,
            }
        return data

    def _comment_json(self, comment: _Comment) -> dict[str, Any]:
        issue = self._issue(comment.full_name, comment.number)
        kind = "pull" if issue.pull else "issues"
        api = self._api(f"/repos/{comment.full_name}/issues/comments/{comment.id}")
        return {
            "url": api,
            "html_url": f"{HTML_BASE}/{comment.full_name}/{kind}/{comment.number}"
            f"#issuecomment-{comment.id}",
            "issue_url": self._api(f"/repos/{comment.full_name}/issues/{comment.number}"),
            "id": comment.id,
            "node_id": _node_id("IC_kwDO", comment.id),
            "user": self._user(comment.user, comment.user_type),
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "author_association": self._association(
                comment.full_name, comment.user, comment.user_type
            ),
            "body": comment.body,
            "reactions": self._reaction_rollup(
                api + "/reactions", self._reactions.get(comment.id, [])
            ),
            "performed_via_github_app": self._app_json() if comment.by_app else None,
        }

    def _reaction_json(self, reaction: _Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": _node_id("REA_lADO", reaction.id),
            "user": self._user(reaction.user, reaction.user_type),
            "content": reaction.content,
            "created_at": _iso(reaction.created_at),
        }

    def _head_label(self, issue: _Issue) -> str:
        pull = _require_pull(issue)
        return f"{pull.head_repo.split('/')[0]}:{pull.head_ref}"

    def _pull_json(self, issue: _Issue, *, simple: bool = False) -> dict[str, Any]:
        pull = _require_pull(issue)
        repo = self._repo(issue.full_name)
        head_repo = self._repos.get(pull.head_repo.lower()) or self._forks[pull.head_repo.lower()]
        api = self._api(f"/repos/{issue.full_name}/pulls/{issue.number}")
        issue_api = self._api(f"/repos/{issue.full_name}/issues/{issue.number}")
        html = f"{HTML_BASE}/{issue.full_name}/pull/{issue.number}"
        statuses = self._api(f"/repos/{issue.full_name}/statuses/{pull.head_sha}")
        links = {
            "self": api,
            "html": html,
            "issue": issue_api,
            "comments": issue_api + "/comments",
            "review_comments": api + "/comments",
            "review_comment": self._api(f"/repos/{issue.full_name}/pulls/comments{{/number}}"),
            "commits": api + "/commits",
            "statuses": statuses,
        }
        data: dict[str, Any] = {
            "url": api,
            "id": pull.id,
            "node_id": _node_id("PR_kwDO", pull.id),
            "html_url": html,
            "diff_url": html + ".diff",
            "patch_url": html + ".patch",
            "issue_url": issue_api,
            "commits_url": api + "/commits",
            "review_comments_url": api + "/comments",
            "review_comment_url": links["review_comment"],
            "comments_url": issue_api + "/comments",
            "statuses_url": statuses,
            "number": issue.number,
            "state": issue.state,
            "locked": False,
            "title": issue.title,
            "user": self._user(issue.user, issue.user_type),
            "body": issue.body,
            "labels": [self._label_json(repo, name) for name in issue.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": _iso(issue.created_at),
            "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at) if issue.closed_at else None,
            "merged_at": _iso(issue.updated_at) if pull.merged else None,
            "merge_commit_sha": _sha(issue.full_name, str(issue.number), "merge"),
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._pull_side(head_repo, pull.head_ref, pull.head_sha),
            "base": self._pull_side(repo, pull.base_ref, pull.base_sha),
            "_links": {name: {"href": href} for name, href in links.items()},
            "author_association": self._association(issue.full_name, issue.user, issue.user_type),
            "auto_merge": None,
            "draft": pull.draft,
        }
        if simple:
            return data
        additions = len(pull.files)
        return {
            **data,
            "merged": pull.merged,
            "mergeable": None if issue.state == "closed" else True,
            "rebaseable": True,
            "mergeable_state": "clean",
            "merged_by": self._user(repo.owner, repo.owner_type) if pull.merged else None,
            "comments": self._comment_count(issue),
            "review_comments": len(pull.review_comments),
            "maintainer_can_modify": False,
            "commits": 1,
            "additions": additions,
            "deletions": 0,
            "changed_files": len(pull.files),
        }

    def _pull_side(self, repo: _Repo, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self._user(repo.owner, repo.owner_type),
            "repo": self._repo_json(repo),
        }

    def _diff_entry_json(self, issue: _Issue, filename: str) -> dict[str, Any]:
        pull = _require_pull(issue)
        return {
            "sha": _blob_sha(filename.encode()),
            "filename": filename,
            "status": self._diff_status(issue, filename),
            "additions": 1,
            "deletions": 0,
            "changes": 1,
            "blob_url": f"{HTML_BASE}/{issue.full_name}/blob/{pull.head_sha}/{filename}",
            "raw_url": f"{HTML_BASE}/{issue.full_name}/raw/{pull.head_sha}/{filename}",
            "contents_url": self._api(
                f"/repos/{issue.full_name}/contents/{filename}?ref={pull.head_sha}"
            ),
            "patch": "@@ -1 +1,2 @@\n line\n+added line",
        }

    def _diff_status(self, issue: _Issue, filename: str) -> str:
        """`added` or `removed` when the file is stored on one side of the PR only."""
        pull, repo = _require_pull(issue), self._repo(issue.full_name)
        same_repo = pull.head_repo.lower() == repo.full_name.lower()
        at_head = same_repo and (pull.head_ref, filename) in repo.files
        at_base = (pull.base_ref, filename) in repo.files
        if at_head == at_base:
            return "modified"
        return "added" if at_head else "removed"

    def _review_json(self, issue: _Issue, review: _Review) -> dict[str, Any]:
        html = f"{HTML_BASE}/{issue.full_name}/pull/{issue.number}#pullrequestreview-{review.id}"
        pull_url = self._api(f"/repos/{issue.full_name}/pulls/{issue.number}")
        return {
            "id": review.id,
            "node_id": _node_id("PRR_kwDO", review.id),
            "user": self._user(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": html,
            "pull_request_url": pull_url,
            "author_association": self._association(issue.full_name, review.user),
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
            "submitted_at": _iso(review.submitted_at),
            "commit_id": review.commit_id,
        }

    def _review_comment_json(self, comment: _ReviewComment) -> dict[str, Any]:
        full_name, number = comment.full_name, comment.number
        api = self._api(f"/repos/{full_name}/pulls/comments/{comment.id}")
        html = f"{HTML_BASE}/{full_name}/pull/{number}#discussion_r{comment.id}"
        pull_url = self._api(f"/repos/{full_name}/pulls/{number}")
        data: dict[str, Any] = {
            "url": api,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": _node_id("PRRC_kwDO", comment.id),
            "diff_hunk": comment.diff_hunk,
            "path": comment.path,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.commit_id,
            "user": self._user(comment.user, comment.user_type),
            "body": comment.body,
            "created_at": _iso(comment.created_at),
            "updated_at": _iso(comment.updated_at),
            "html_url": html,
            "pull_request_url": pull_url,
            "author_association": self._association(full_name, comment.user, comment.user_type),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "pull_request": {"href": pull_url},
            },
            "start_line": comment.start_line,
            "original_start_line": comment.start_line,
            "start_side": comment.side if comment.start_line is not None else None,
            "line": comment.line,
            "original_line": comment.line,
            "side": comment.side,
            "position": _hunk_lines(comment.diff_hunk),
            "original_position": _hunk_lines(comment.diff_hunk),
            "subject_type": "line",
            "reactions": self._reaction_rollup(
                api + "/reactions", self._reactions.get(comment.id, [])
            ),
        }
        if comment.in_reply_to_id is not None:
            data["in_reply_to_id"] = comment.in_reply_to_id
        return data

    def _delivery_item_json(self, delivery: _Delivery) -> dict[str, Any]:
        status = delivery.status_code
        return {
            "id": delivery.id,
            "guid": delivery.guid,
            "delivered_at": _iso(delivery.delivered_at),
            "redelivery": delivery.redelivery,
            "duration": delivery.duration,
            "status": (
                DELIVERY_UNREACHABLE
                if status == 0
                else DELIVERY_OK
                if 200 <= status < 300
                else DELIVERY_BAD_STATUS.format(status=status)
            ),
            "status_code": status,
            "event": delivery.event,
            "action": delivery.action,
            "installation_id": delivery.installation_id,
            "repository_id": delivery.repository_id,
            "throttled_at": None,
        }

    def _delivery_json(self, delivery: _Delivery) -> dict[str, Any]:
        return {
            **self._delivery_item_json(delivery),
            "url": self.webhook_url or self._app_external_url() + "/api/github/webhooks",
            "request": {
                "headers": {
                    "X-GitHub-Delivery": delivery.guid,
                    "X-GitHub-Event": delivery.event,
                    "Content-Type": "application/json",
                    "User-Agent": "GitHub-Hookshot/sim",
                },
                "payload": delivery.payload,
            },
            "response": {"headers": {}, "payload": None},
        }

    def _check_run_json(self, run: _CheckRun) -> dict[str, Any]:
        api = self._api(f"/repos/{run.full_name}/check-runs/{run.id}")
        pulls = [
            i
            for i in self._issues.values()
            if i.full_name == run.full_name
            and i.pull is not None
            and i.state == "open"
            and i.pull.head_sha == run.head_sha
        ]
        return {
            "id": run.id,
            "name": run.name,
            "node_id": _node_id("CR_kwDO", run.id),
            "head_sha": run.head_sha,
            "external_id": run.external_id,
            "url": api,
            "html_url": f"{HTML_BASE}/{run.full_name}/runs/{run.id}",
            "details_url": run.details_url,
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": run.started_at,
            "completed_at": run.completed_at,
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": len(run.annotations),
                "annotations_url": api + "/annotations",
            },
            "check_suite": {"id": run.suite_id},
            "app": run.app or self._app_json(),
            "pull_requests": [self._pull_minimal_json(i) for i in pulls],
        }

    def _pull_minimal_json(self, issue: _Issue) -> dict[str, Any]:
        pull = _require_pull(issue)
        repo = self._repo(issue.full_name)
        brief = {"id": repo.id, "url": self._api(f"/repos/{repo.full_name}"), "name": repo.name}
        return {
            "id": pull.id,
            "number": issue.number,
            "url": self._api(f"/repos/{issue.full_name}/pulls/{issue.number}"),
            "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": brief},
            "base": {"ref": pull.base_ref, "sha": pull.base_sha, "repo": brief},
        }

    def _status_json(self, status: _Status) -> dict[str, Any]:
        creator = self._user(self.bot_login, "Bot")
        return {
            "url": self._api(f"/repos/{status.full_name}/statuses/{status.sha}"),
            "avatar_url": creator["avatar_url"],
            "id": status.id,
            "node_id": _node_id("SC_kwDO", status.id),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": _iso(status.created_at),
            "updated_at": _iso(status.created_at),
            "creator": creator,
        }

    def _job_json(self, job: _Job) -> dict[str, Any]:
        repo = self._repo(job.full_name)
        created = _iso(job.created_at)
        return {
            "id": job.id,
            "run_id": job.run_id,
            "run_url": self._api(f"/repos/{job.full_name}/actions/runs/{job.run_id}"),
            "run_attempt": 1,
            "node_id": _node_id("CR_kwDO", job.id),
            "head_sha": job.head_sha,
            "head_branch": repo.default_branch,
            "url": self._api(f"/repos/{job.full_name}/actions/jobs/{job.id}"),
            "html_url": f"{HTML_BASE}/{job.full_name}/actions/runs/{job.run_id}/job/{job.id}",
            "status": job.status,
            "conclusion": job.conclusion,
            "created_at": created,
            "started_at": created,
            "completed_at": created if job.status == "completed" else None,
            "name": job.name,
            "steps": [],
            "check_run_url": self._api(f"/repos/{job.full_name}/check-runs/{job.id}"),
            "labels": ["ubuntu-latest"],
            "runner_id": 1,
            "runner_name": "GitHub Actions 1",
            "runner_group_id": 1,
            "runner_group_name": "GitHub Actions",
            "workflow_name": "CI",
        }

    def _content_entry(self, repo: _Repo, path: str, ref: str, kind: str) -> dict[str, Any]:
        api = self._api(f"/repos/{repo.full_name}/contents/{quote(path)}?ref={quote(ref)}")
        data = repo.files.get((self._branch_of(repo, ref), path), b"")
        sha = _blob_sha(data) if kind == "file" else _sha(repo.full_name, ref, path)
        git = self._api(
            f"/repos/{repo.full_name}/git/{'blobs' if kind == 'file' else 'trees'}/{sha}"
        )
        html = f"{HTML_BASE}/{repo.full_name}/{'blob' if kind == 'file' else 'tree'}/{ref}/{path}"
        download = (
            f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}"
            if kind == "file"
            else None
        )
        return {
            "type": kind,
            "size": len(data) if kind == "file" else 0,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": api,
            "git_url": git,
            "html_url": html,
            "download_url": download,
            "_links": {"self": api, "git": git, "html": html},
        }

    def _content_json(self, repo: _Repo, path: str, ref: str, data: bytes) -> dict[str, Any]:
        if len(data) > CONTENTS_MAX_BYTES:
            # https://docs.github.com/rest/repos/contents#get-repository-content (files of 1-100 MB)
            return {
                **self._content_entry(repo, path, ref, "file"),
                "encoding": "none",
                "content": "",
            }
        encoded = base64.b64encode(data).decode()
        lines = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
        return {
            **self._content_entry(repo, path, ref, "file"),
            "encoding": "base64",
            "content": "\n".join(lines) + "\n",
        }

    def _directory_json(
        self, repo: _Repo, branch: str, path: str, ref: str, files: list[str]
    ) -> list[dict[str, Any]]:
        children: dict[str, str] = {}
        for name in files:
            child, _, rest = name[len(path) + 1 :].partition("/")
            children.setdefault(f"{path}/{child}", "dir" if rest else "file")
        return [self._content_entry(repo, p, ref, kind) for p, kind in sorted(children.items())]

    def _rate_json(self, bucket: _Bucket, limit: int) -> dict[str, int]:
        return {
            "limit": limit,
            "used": bucket.used,
            "remaining": max(0, limit - bucket.used),
            "reset": math.ceil(bucket.reset),
        }


# -- module helpers ---------------------------------------------------------------------------


def _new_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_key(private_key_pem: str) -> rsa.RSAPublicKey:
    # The key is the simulator's own; validating it would cost ~50 ms per simulator.
    key = serialization.load_pem_private_key(
        private_key_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the app's private key must be an RSA key")
    return key.public_key()


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, True
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


def _json(status: int, data: Any, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        charset="utf-8",
        headers=dict(headers or {}),
    )


def _error(status: int, message: str, documentation_url: str) -> web.Response:
    return _json(
        status, {"message": message, "documentation_url": documentation_url, "status": str(status)}
    )


def _fault_response(fault: _Fault) -> web.Response:
    assert fault.status is not None
    body = fault.body
    if body is None:
        if fault.status in (403, 429):
            body = {"message": MSG_SECONDARY_LIMIT, "documentation_url": SECONDARY_LIMIT_DOCS}
        else:
            body = {"message": http.HTTPStatus(fault.status).phrase, "documentation_url": DOCS_URL}
    return _json(fault.status, body, headers=fault.headers)


def _conditional(request: web.Request, response: web.Response) -> web.Response:
    """Add a weak ETag to successful GETs and answer 304 when the client already has it."""
    if request.method != "GET" or response.status != 200 or not isinstance(response.body, bytes):
        return response
    etag = f'W/"{hashlib.sha256(response.body).hexdigest()[:40]}"'
    response.headers["etag"] = etag
    wanted = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in wanted or etag.removeprefix("W/") in wanted:
        return web.Response(status=304, headers={"etag": etag})
    return response


def _check_run_errors(body: Mapping[str, Any]) -> list[BodyError]:
    # https://docs.github.com/rest/checks/runs#create-a-check-run (conclusion rules)
    completing = body.get("status") == "completed" or "completed_at" in body
    if completing and not body.get("conclusion"):
        return [BodyError("conclusion", "missing_field", MSG_CONCLUSION_REQUIRED)]
    if body.get("conclusion") == "stale":
        return [BodyError("conclusion", "invalid", MSG_STALE)]
    return []


def _delivery_outcome(status_code: int) -> str:
    """GitHub's `status` filter: success for 200-399, failure otherwise."""
    return "success" if 200 <= status_code < 400 else "failure"


def _hunk_lines(diff_hunk: str) -> int:
    """The comment's `position`: lines below the hunk's first `@@` header."""
    return max(1, len(diff_hunk.splitlines()) - 1)


def _grants(granted: str | None, needed: str) -> bool:
    order = {"read": 1, "write": 2, "admin": 3}
    return granted is not None and order.get(granted, 0) >= order.get(needed, 9)


def _require_pull(issue: _Issue) -> _Pull:
    if issue.pull is None:
        raise LookupError(issue.number)
    return issue.pull


def _repo_of(ctx: _Context) -> _Repo:
    assert ctx.repo is not None
    return ctx.repo


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _sha(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _node_id(prefix: str, number: int) -> str:
    return prefix + base64.urlsafe_b64encode(str(number).encode()).decode().rstrip("=")
