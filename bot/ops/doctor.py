"""`box-bot doctor`: check the settings, the key, GitHub, Box and the database, one line each.

Every line says what is wrong and what to do, in plain words; secrets are never shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import gidgethub
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError, BoxAuthError, BoxUnavailableError
from bot.github.client import GitHubAppAuth, get_app_info
from bot.redact import redact
from bot.settings import Settings, read_settings
from bot.store.connect import open_store
from bot.store.records import StoreUnavailable

PASSED, FAILED, SKIPPED = "✓", "✗", "–"
TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)
MIN_KEY_BITS = 2048
NOT_CHECKED = "not checked until the settings load"
NO_BOX_KEY = "BOX_API_KEY is not set: create an API key in the Box dashboard and set BOX_API_KEY"


@dataclass(frozen=True)
class Check:
    """The outcome of one check; `ok` None means it was not run."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        """Return the line the command prints, with anything secret-looking masked."""
        mark = SKIPPED if self.ok is None else PASSED if self.ok else FAILED
        return f"{mark} {self.name}: {redact(self.detail)}"


KEY_FIRST = Check("GitHub", None, "not checked until the private key is fixed")


async def run_doctor(
    out: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = None,
) -> int:
    """Print one line per check; return 0 only if every check passed."""
    checks = await run_checks(environ, dotenv)
    for check in checks:
        out(check.line())
    return 0 if all(check.ok for check in checks) else 1


async def run_checks(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> list[Check]:
    """Run every check against the operator's settings (environment over `.env`)."""
    values, problems = read_settings(environ, dotenv)
    if problems:
        return await _checks_without_settings(values, problems)
    settings = Settings(**values)
    key = check_key(settings)
    checks = [Check("settings", True, f"loaded (APP_ID {settings.app_id})"), key]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        github = await check_github(session, settings) if key.ok else KEY_FIRST
        checks += [github, await check_box(session, settings.box_api_base, settings.box_api_key)]
    checks.append(await check_database(settings.database_url))
    return checks


async def _checks_without_settings(values: Mapping[str, Any], problems: list[str]) -> list[Check]:
    """List every bad setting, and still check what does not depend on them (Box, database)."""
    checks = [Check("settings", False, problem) for problem in problems]
    checks += [Check(name, None, NOT_CHECKED) for name in ("private key", "GitHub")]
    if "box_api_base" in values:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            checks.append(await check_box(session, values["box_api_base"], values["box_api_key"]))
    else:
        checks.append(Check("Box", None, "not checked until BOX_API_BASE is fixed"))
    if "database_url" in values:
        checks.append(await check_database(values["database_url"]))
    else:
        checks.append(Check("database", None, "not checked until DATABASE_URL is fixed"))
    return checks


def check_key(settings: Settings) -> Check:
    """Check that the app key is an RSA key strong enough for GitHub."""
    key = load_pem_private_key(settings.private_key.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)  # load_settings accepts RSA keys only
    if key.key_size < MIN_KEY_BITS:
        return Check(
            "private key",
            False,
            f"the RSA key has {key.key_size} bits: generate a new private key on the app's"
            " GitHub settings page",
        )
    return Check("private key", True, f"RSA, {key.key_size} bits")


async def check_github(session: aiohttp.ClientSession, settings: Settings) -> Check:
    """Ask GitHub who the app is (`GET /app`), signed with the app's JWT."""
    auth = GitHubAppAuth(
        session,
        app_id=settings.app_id,
        private_key=settings.private_key,
        base_url=settings.github_api_url,
    )
    try:
        app = await get_app_info(auth)
    except gidgethub.BadRequest as exc:
        return Check("GitHub", False, _github_refusal(exc))
    except gidgethub.GitHubException as exc:
        return Check(
            "GitHub", False, f"GitHub answered with an error ({exc}): try again in a few minutes"
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Check(
            "GitHub",
            False,
            f"cannot reach {settings.github_api_url} ({_reason(exc)}):"
            " check GITHUB_API_URL and this machine's network",
        )
    count = app.get("installations_count")
    installed = f", installed on {count} account(s)" if count is not None else ""
    return Check(
        "GitHub", True, f"signed in as the app {app['slug']!r} (id {app['id']}){installed}"
    )


def _github_refusal(exc: gidgethub.BadRequest) -> str:
    status = exc.status_code
    if status == 401:
        return (
            f"GitHub refused the app's JWT (401 {exc}): check that APP_ID is this app's ID"
            " and PRIVATE_KEY is one of its current private keys"
        )
    if status == 404:
        return "GitHub knows no such app (404): check APP_ID and GITHUB_API_URL"
    return f"GitHub answered {int(status)} ({exc}): check APP_ID and PRIVATE_KEY"


async def check_box(session: aiohttp.ClientSession, base: str, key: str) -> Check:
    """Ask Box whose key this is (`GET /me`) and whether boxes can start (`GET /limits`)."""
    if not key:
        return Check("Box", False, NO_BOX_KEY)
    box = BoxClient(session, base, key, max_retries=1, retry_budget_seconds=5)
    try:
        user = await box.me()
        limits = await box.limits()
    except BoxAuthError as exc:
        return Check(
            "Box", False, f"Box refused BOX_API_KEY ({exc}): create a new API key and set it"
        )
    except BoxUnavailableError as exc:
        return Check(
            "Box",
            False,
            f"cannot reach {base} ({exc}): check BOX_API_BASE and the network",
        )
    except BoxAPIError as exc:
        return Check("Box", False, f"Box answered with an error ({exc}): try again later")
    usage = f"{limits.active_boxes} of {limits.max_active_boxes} boxes active"
    if not limits.can_start:
        return Check(
            "Box",
            False,
            f"signed in as {user.login}, but no box can start now ({usage}, billing"
            f" {limits.billing_status or 'unknown'}): add credit or archive boxes in the Box"
            " dashboard",
        )
    return Check("Box", True, f"signed in as {user.login}; boxes can start ({usage})")


async def check_database(database_url: str) -> Check:
    """Open the database (creating and migrating it if needed) and ping it."""
    where = describe_database(database_url)
    try:
        store = await open_store(database_url)
    except StoreUnavailable as exc:
        return Check(
            "database",
            False,
            f"cannot open {where} ({exc}): check DATABASE_URL; a SQLite file must be in a"
            " directory that exists and that this user can write",
        )
    try:
        await store.ping()
    except StoreUnavailable as exc:
        return Check("database", False, f"{where} does not answer ({exc}): check DATABASE_URL")
    finally:
        await store.close()
    return Check("database", True, f"{where} answers")


def describe_database(url: str) -> str:
    """Name the database without any password the URL carries."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return "SQLite file " + (
            url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
        )
    host = parsed.hostname or "localhost"
    return f"{parsed.scheme} database {parsed.path.lstrip('/')} on {host}"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
