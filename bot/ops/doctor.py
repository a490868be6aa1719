"""`box-bot doctor`: check the settings, the key, GitHub, Box and the database, one line each.

Every line says what is wrong and what to do, in plain words; secrets are never shown. It
looks without changing anything (no database file is created), asks Box without retrying, and
keeps log lines out of its report.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
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
from bot.settings import Settings, app_id_kind, read_settings
from bot.store.connect import open_store
from bot.store.records import StoreUnavailable
from bot.store.sqlite import sqlite_path

PASSED, FAILED, SKIPPED = "✓", "✗", "–"
TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)
MIN_KEY_BITS = 2048
NOT_CHECKED = "not checked until the settings load"
NO_BOX_KEY = "BOX_API_KEY is not set: create an API key in the Box dashboard and set BOX_API_KEY"
SQLITE_HEADER = b"SQLite format 3\x00"


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
    """Print one line per check, and nothing else; return 0 only if every check passed."""
    with no_log_lines():
        checks = await run_checks(environ, dotenv)
    for check in checks:
        out(check.line())
    return 0 if all(check.ok for check in checks) else 1


@contextlib.contextmanager
def no_log_lines() -> Iterator[None]:
    """Keep the app's and the libraries' log lines out of the report while the checks run."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)


async def run_checks(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> list[Check]:
    """Run every check against the operator's settings (environment over `.env`)."""
    values, problems = read_settings(environ, dotenv)
    if problems:
        return await _checks_without_settings(values, problems)
    settings = Settings(**values)
    key = check_key(settings)
    loaded = f"loaded ({app_id_kind(settings.app_id)} {settings.app_id})"
    checks = [Check("settings", True, loaded), key]
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
    box = BoxClient(session, base, key, max_retries=0)
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
    """Check the database as it is: a SQLite file is looked at, never created or migrated."""
    if urlparse(database_url).scheme == "sqlite":
        return check_sqlite(sqlite_path(database_url))
    return await _ping(database_url)


def check_sqlite(name: str) -> Check:
    """Check that the app can open the SQLite file, or create it where it is to be."""
    where = f"SQLite file {name}"
    if name == ":memory:":
        return Check("database", True, "SQLite in memory: nothing is kept when the app stops")
    path = Path(name)
    folder = path.parent
    if not path.exists():
        if not folder.is_dir():
            return Check(
                "database",
                False,
                f"cannot open {where}: the directory {folder} does not exist: create it, or set"
                " DATABASE_URL to a file in a directory that exists",
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            return Check(
                "database",
                False,
                f"cannot create {where}: this user cannot write to {folder}: make it writable,"
                " or set DATABASE_URL to a file in a directory this user can write",
            )
        return Check("database", True, f"{where} does not exist yet: box-bot serve creates it")
    return _check_sqlite_file(path, where)


def _check_sqlite_file(path: Path, where: str) -> Check:
    if not path.is_file():
        return Check("database", False, f"{where} is not a file: point DATABASE_URL at a file")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        return Check(
            "database",
            False,
            f"this user cannot read and write {where} and its directory (SQLite keeps its"
            " journal beside it): change their owner or mode",
        )
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        return Check(
            "database",
            False,
            f"{where} is not a SQLite database: set DATABASE_URL to the app's database file,"
            " or to a new one",
        )
    return Check("database", True, f"{where} is a SQLite database this user can read and write")


async def _ping(database_url: str) -> Check:
    """Connect to a database server (not SQLite) and ping it."""
    where = describe_database(database_url)
    try:
        store = await open_store(database_url, exclusive=False, migrate=False)  # look only
    except StoreUnavailable as exc:
        return Check("database", False, f"cannot open {where} ({exc}): check DATABASE_URL")
    try:
        await store.ping()
    except StoreUnavailable as exc:
        return Check("database", False, f"{where} does not answer ({exc}): check DATABASE_URL")
    finally:
        await store.close()
    return Check("database", True, f"{where} answers")


def describe_database(url: str) -> str:
    """Name a database server's database without any password the URL carries."""
    parsed = urlparse(url)
    host = parsed.hostname or "localhost"
    return f"{parsed.scheme} database {parsed.path.lstrip('/')} on {host}"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
