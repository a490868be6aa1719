"""Operator settings, read once at start from the environment and an optional `.env` file."""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dotenv.parser import parse_stream

from bot.box.box_rules import MACHINE_CHOICES, MAX_SETUP_BYTES, environment_name_ok
from bot.box.catalogue import MODEL_CATALOGUE, PROVIDER_ALIASES

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_BOX_API_BASE = "https://ascii.dev/api/box/v1"
DEFAULT_DATABASE_URL = "sqlite:///box-bot.sqlite3"
MIN_SECRET_LENGTH = 16
MAX_DOLLARS = 1_000_000.0
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
PROVIDERS = ("codex", "claude-code", "claude")
APP_ID_NUMBER = re.compile(r"[1-9][0-9]*")
# Older client IDs are `Iv1.` and 16 hex digits; newer ones like `Iv23li…` are letters and digits.
CLIENT_ID = re.compile(r"Iv1\.[0-9a-f]{16}|Iv[0-9]{2}[A-Za-z0-9]{16}")
APP_ID_KIND, CLIENT_ID_KIND = "app ID", "client ID"
DOTENV_LINE = "{path} line {line} is not KEY=value: fix it (a quote it opens must be closed)"


@dataclass(frozen=True)
class Variable:
    """One environment variable the app reads, as `--help` and the README list it."""

    name: str
    meaning: str
    default: str = ""
    required: bool = False


# Every variable `load_settings` reads, in the order `--help` shows them (a test holds them equal).
VARIABLES = (
    Variable("APP_ID", "the app's ID (a number) or client ID (Iv1.… or Iv23…)", required=True),
    Variable(
        "PRIVATE_KEY", "the app's PEM key (in quotes on several lines, or with \\n)", required=True
    ),
    Variable("PRIVATE_KEY_PATH", "a path to the PEM key file, instead of PRIVATE_KEY"),
    Variable("WEBHOOK_SECRET", "the app's webhook secret (16 characters or more)", required=True),
    Variable("BOX_API_KEY", "the Box API key (box_…)"),
    Variable("BOX_API_BASE", "the Box API", DEFAULT_BOX_API_BASE),
    Variable(
        "GITHUB_API_URL",
        "GitHub's REST API (GitHub Enterprise Server: …/api/v3)",
        DEFAULT_GITHUB_API_URL,
    ),
    Variable(
        "DATABASE_URL",
        "where the inbox and runs are kept: sqlite:///path (one process) or postgresql://…",
        DEFAULT_DATABASE_URL,
    ),
    Variable("DATABASE_POOL_SIZE", "PostgreSQL connections per instance (2 or more)", "10"),
    Variable("HOST", "the address to listen on", "0.0.0.0"),
    Variable("PORT", "the port to listen on", "3000"),
    Variable("LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL", "INFO"),
    Variable("LOG_FORMAT", "text, or json for one JSON object per line", "text"),
    Variable("BOX_TRIGGER_LABEL", "the label that starts a run", "box:fix"),
    Variable(
        "BOX_INBOX_RETENTION_DAYS",
        "days a handled or ignored delivery keeps its payload (failed ones keep theirs)",
        "7",
    ),
    Variable("BOX_PROVIDER", "codex or claude-code", "codex"),
    Variable("BOX_MODEL", "the agent's model (default: the account's)"),
    Variable("BOX_REASONING_EFFORT", "the model's effort (default: the account's)"),
    Variable("BOX_TTL_SECONDS", "a box's time to live", "3600"),
    Variable("BOX_POLL_INTERVAL", "seconds between looks at a working box", "5"),
    Variable(
        "BOX_LEASE_SECONDS",
        "how long a run stays with an instance that stopped answering (renewed every third)",
        "30",
    ),
    Variable("BOX_ON_CLOSE", "archive or delete the box when its PR is merged", "archive"),
    Variable("BOX_SETUP_FILE", "a script new boxes run once up (unless the repository sets one)"),
    Variable("BOX_MACHINE", "small, default or large: the machine of new boxes"),
    Variable("BOX_ENVIRONMENT", "the Box environment new boxes are pinned to"),
    Variable("BOX_MAX_ACTIVE", "active boxes across all installations (unset: no limit)"),
    Variable("BOX_MAX_ACTIVE_PER_INSTALLATION", "active boxes per installation (unset: no limit)"),
    Variable("BOX_MAX_ACTIVE_PER_REPO", "active boxes per repository (unset: no limit)"),
    Variable(
        "BOX_MAX_RUNS_PER_USER_PER_DAY", "runs one person may start in 24 h (unset: no limit)"
    ),
    Variable("BOX_MAX_RUN_MINUTES", "work longer than this is interrupted", "60"),
    Variable("BOX_OUTAGE_MINUTES", "Box not answering this long fails a working run", "30"),
    Variable(
        "GITHUB_CONTENT_PER_MINUTE", "comments, reactions, checks created per installation", "60"
    ),
    Variable("GITHUB_CONTENT_PER_HOUR", "the same, per hour (GitHub allows about 500)", "400"),
    Variable("BOX_MAX_DOLLARS_PER_RUN", "a run's box is stopped at this cost (unset: no limit)"),
    Variable(
        "BOX_MAX_DOLLARS_PER_DAY",
        "no new box once an installation's boxes cost this today (unset: no limit)",
    ),
    Variable("BOX_PAUSED", "1 stops new work: deliveries are still stored", "0"),
)


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable and what to set."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator configures. Secrets are kept out of `repr`."""

    app_id: str
    private_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    box_api_key: str = field(default="", repr=False)
    github_api_url: str = DEFAULT_GITHUB_API_URL
    box_api_base: str = DEFAULT_BOX_API_BASE
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = 10
    inbox_retention_days: int = 7
    host: str = "0.0.0.0"
    port: int = 3000
    log_level: str = "INFO"
    log_format: str = "text"
    trigger_label: str = "box:fix"
    box_ttl_seconds: int = 3600
    box_provider: str = "codex"
    box_model: str | None = None
    box_reasoning_effort: str | None = None
    box_poll_interval: float = 5.0
    lease_seconds: float = 30.0
    box_on_close: str = "archive"
    max_active: int | None = None
    max_active_per_installation: int | None = None
    max_active_per_repo: int | None = None
    max_runs_per_user_per_day: int | None = None
    max_run_minutes: int = 60
    # How long Box may not answer while a box works before the run fails for it.
    box_outage_minutes: float = 30
    paused: bool = False
    # GitHub allows about 80 content-creating requests a minute and 500 an hour per installation.
    github_content_per_minute: int = 60
    github_content_per_hour: int = 400
    box_setup_script: str | None = field(default=None, repr=False)
    box_machine: str | None = None
    box_environment: str | None = None
    max_dollars_per_run: float | None = None
    max_dollars_per_day: float | None = None


def settings_help() -> str:
    """Return the list of variables that `serve --help` and `doctor --help` print."""
    width = max(len(variable.name) for variable in VARIABLES)
    lines = ["settings, from the environment or else from .env in the working directory:"]
    for variable in VARIABLES:
        default = f" (default {variable.default})" if variable.default else ""
        default = " (required)" if variable.required else default
        lines.append(f"  {variable.name:<{width}}  {variable.meaning}{default}")
    return "\n".join(lines)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file with python-dotenv's parser, without expanding `${VAR}` in values.

    Values may be quoted (a double-quoted one may span lines, like a pasted PEM), lines may
    start with `export`, and `# comments` may follow an unquoted value after a space.
    """
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise SettingsError(f"{path} cannot be read ({exc.strerror})") from None
    values: dict[str, str] = {}
    for entry in parse_stream(io.StringIO(text)):
        if entry.error:  # python-dotenv would skip it with a warning; a setting would be lost
            raise SettingsError(DOTENV_LINE.format(path=path, line=entry.original.line))
        if entry.key is not None and entry.value is not None:
            values[entry.key] = entry.value
    return values


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build `Settings` from the environment over `.env`; raise `SettingsError` on a bad value."""
    values, problems = read_settings(environ, dotenv)
    if problems:
        raise SettingsError(problems[0])
    return Settings(**values)


def read_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Read every setting; return the ones that are good and one line per one that is not."""
    try:
        env = {
            **read_dotenv(dotenv or Path.cwd() / ".env"),
            **(os.environ if environ is None else environ),
        }
    except SettingsError as exc:
        return {}, [str(exc)]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, read in _readers(env).items():
        try:
            values[name] = read()
        except SettingsError as exc:
            problems.append(str(exc))
    problems += _agent_problems(values)
    return values, problems


def _agent_problems(values: Mapping[str, Any]) -> list[str]:
    """Check BOX_MODEL and BOX_REASONING_EFFORT against the provider's documented catalogue."""
    provider = PROVIDER_ALIASES.get(values.get("box_provider", ""), values.get("box_provider"))
    models = MODEL_CATALOGUE.get(provider or "")
    model, effort = values.get("box_model"), values.get("box_reasoning_effort")
    if models is None:
        return []
    if model is not None and model not in models:
        return [f"BOX_MODEL {model!r} is not a {provider} model: use one of {', '.join(models)}"]
    efforts = models[model] if model is not None else {e for m in models.values() for e in m}
    if effort is not None and effort not in efforts:
        which = f"{provider} model {model}" if model else f"{provider} model"
        return [
            f"BOX_REASONING_EFFORT {effort!r} is not an effort of any {which}:"
            f" use one of {', '.join(sorted(efforts)) or '(none: leave it unset)'}"
        ]
    return []


def _readers(env: Mapping[str, str]) -> dict[str, Callable[[], Any]]:
    """Map each `Settings` field to how it is read from *env*."""
    return {
        "app_id": lambda: _app_id(env),
        "private_key": lambda: _private_key(env),
        "webhook_secret": lambda: _webhook_secret(env),
        "box_api_key": lambda: env.get("BOX_API_KEY", "").strip(),
        "github_api_url": lambda: _url(env, "GITHUB_API_URL", DEFAULT_GITHUB_API_URL),
        "box_api_base": lambda: _url(env, "BOX_API_BASE", DEFAULT_BOX_API_BASE),
        "database_url": lambda: _database_url(env),
        "database_pool_size": lambda: _int(env, "DATABASE_POOL_SIZE", 10, 2, 100),
        "inbox_retention_days": lambda: _int(env, "BOX_INBOX_RETENTION_DAYS", 7, 1, 3650),
        "host": lambda: env.get("HOST", "0.0.0.0").strip() or "0.0.0.0",
        "port": lambda: _port(env),
        "log_level": lambda: _log_level(env),
        "log_format": lambda: _log_format(env),
        "trigger_label": lambda: env.get("BOX_TRIGGER_LABEL", "").strip() or "box:fix",
        "box_ttl_seconds": lambda: _int(env, "BOX_TTL_SECONDS", 3600, 60, 2_592_000),
        "box_provider": lambda: _choice(env, "BOX_PROVIDER", "codex", PROVIDERS),
        "box_model": lambda: env.get("BOX_MODEL", "").strip() or None,
        "box_reasoning_effort": lambda: env.get("BOX_REASONING_EFFORT", "").strip() or None,
        "box_poll_interval": lambda: float(_int(env, "BOX_POLL_INTERVAL", 5, 1, 300)),
        "lease_seconds": lambda: float(_int(env, "BOX_LEASE_SECONDS", 30, 3, 3600)),
        "box_on_close": lambda: _choice(env, "BOX_ON_CLOSE", "archive", ("archive", "delete")),
        "max_active": lambda: _limit(env, "BOX_MAX_ACTIVE"),
        "max_active_per_installation": lambda: _limit(env, "BOX_MAX_ACTIVE_PER_INSTALLATION"),
        "max_active_per_repo": lambda: _limit(env, "BOX_MAX_ACTIVE_PER_REPO"),
        "max_runs_per_user_per_day": lambda: _limit(env, "BOX_MAX_RUNS_PER_USER_PER_DAY"),
        "max_run_minutes": lambda: _int(env, "BOX_MAX_RUN_MINUTES", 60, 1, 24 * 60),
        "box_outage_minutes": lambda: float(_int(env, "BOX_OUTAGE_MINUTES", 30, 1, 24 * 60)),
        "paused": lambda: _flag(env, "BOX_PAUSED"),
        "github_content_per_minute": lambda: _int(env, "GITHUB_CONTENT_PER_MINUTE", 60, 1, 80),
        "github_content_per_hour": lambda: _int(env, "GITHUB_CONTENT_PER_HOUR", 400, 1, 500),
        "box_setup_script": lambda: _setup_file(env),
        "box_machine": lambda: _machine(env),
        "box_environment": lambda: _environment(env),
        "max_dollars_per_run": lambda: _dollars(env, "BOX_MAX_DOLLARS_PER_RUN"),
        "max_dollars_per_day": lambda: _dollars(env, "BOX_MAX_DOLLARS_PER_DAY"),
    }


def _setup_file(env: Mapping[str, str]) -> str | None:
    """The text of `BOX_SETUP_FILE`, the setup script of boxes whose repository sets none."""
    value = env.get("BOX_SETUP_FILE", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"BOX_SETUP_FILE cannot be read ({exc.strerror}): {value}") from None
    if len(raw) > MAX_SETUP_BYTES:
        raise SettingsError(
            f"BOX_SETUP_FILE is {len(raw)} bytes: Box takes a setup script of at most"
            f" {MAX_SETUP_BYTES // 1024} KiB"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"BOX_SETUP_FILE is not UTF-8 text: {value}") from None
    if not text.strip():
        raise SettingsError(f"BOX_SETUP_FILE is empty: {value}")
    return text


def _machine(env: Mapping[str, str]) -> str | None:
    value = env.get("BOX_MACHINE", "").strip().lower()
    if value and value not in MACHINE_CHOICES:
        raise SettingsError(
            f"BOX_MACHINE must be one of {', '.join(MACHINE_CHOICES)}: got {value!r}"
        )
    return value or None


def _environment(env: Mapping[str, str]) -> str | None:
    value = env.get("BOX_ENVIRONMENT", "").strip()
    if value and not environment_name_ok(value):
        raise SettingsError(
            "BOX_ENVIRONMENT is not a Box environment name (letters, digits, `.`, `_`, `-`,"
            f" at most 64): got {value!r}"
        )
    return value or None


def _dollars(env: Mapping[str, str], name: str) -> float | None:
    """An optional amount of dollars above 0; unset means no limit."""
    value = env.get(name, "").strip().removeprefix("$")
    if not value:
        return None
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if not 0 < amount <= MAX_DOLLARS:
        raise SettingsError(f"{name} is not an amount of dollars above 0: got {value!r}")
    return amount


def _limit(env: Mapping[str, str], name: str) -> int | None:
    """An optional non-negative limit; unset means no limit."""
    if not env.get(name, "").strip():
        return None
    return _int(env, name, 0, 0, 1_000_000)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0: got {value!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise SettingsError(f"{name} is not a whole number from {low} to {high}: got {value!r}")
    return int(value)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}: got {value!r}")
    return "claude-code" if value == "claude" else value


def app_id_kind(app_id: str) -> str | None:
    """Say whether *app_id* is an app ID or a client ID (both sign the app's JWT), or neither."""
    if APP_ID_NUMBER.fullmatch(app_id):
        return APP_ID_KIND
    if CLIENT_ID.fullmatch(app_id):
        return CLIENT_ID_KIND
    return None


def _app_id(env: Mapping[str, str]) -> str:
    value = env.get("APP_ID", "").strip()
    if not value:
        raise SettingsError(
            "APP_ID is not set: set it to your GitHub App's numeric ID or client ID"
        )
    if app_id_kind(value) is None:
        raise SettingsError(
            "APP_ID is neither an app ID (a number) nor a client ID (Iv1.… or Iv23…):"
            " copy one from the app's settings page on GitHub"
        )
    return value


def _private_key(env: Mapping[str, str]) -> str:
    text = env.get("PRIVATE_KEY", "").strip()
    name = "PRIVATE_KEY"
    if not text and env.get("PRIVATE_KEY_PATH", "").strip():
        name = "PRIVATE_KEY_PATH"
        path = Path(env["PRIVATE_KEY_PATH"].strip()).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                f"PRIVATE_KEY_PATH cannot be read ({exc.strerror}): point it at the app's .pem file"
            ) from None
        except UnicodeDecodeError:
            raise SettingsError(
                "PRIVATE_KEY_PATH is not a PEM text file: point it at the app's .pem file"
            ) from None
    if not text:
        raise SettingsError(
            "PRIVATE_KEY is not set: set PRIVATE_KEY to the app's PEM key"
            " or PRIVATE_KEY_PATH to its file"
        )
    text = text.replace("\\n", "\n")
    check_rsa_private_key(text, name)
    return text


def check_rsa_private_key(pem: str, name: str = "PRIVATE_KEY") -> None:
    """Raise `SettingsError` unless *pem* is an RSA private key in PEM form."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError(
            f"{name} is not a PEM RSA private key: use the .pem file GitHub generated for the app"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SettingsError(f"{name} is not an RSA key: GitHub Apps sign with RSA (RS256)")


def _webhook_secret(env: Mapping[str, str]) -> str:
    value = env.get("WEBHOOK_SECRET", "")
    if not value.strip():
        raise SettingsError(
            "WEBHOOK_SECRET is not set: set it to the webhook secret configured on the GitHub App"
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise SettingsError(
            "WEBHOOK_SECRET is too short: use a random secret of at least"
            f" {MIN_SECRET_LENGTH} characters"
        )
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not value.startswith(("https://", "http://")):
        raise SettingsError(f"{name} is not an http(s) URL: set it like {default}")
    return value.rstrip("/")


def _database_url(env: Mapping[str, str]) -> str:
    value = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise SettingsError(
            "DATABASE_URL is not supported: use sqlite:///path/to/file.sqlite3 for one"
            " process, or postgresql://user:password@host/database for several"
        )
    return value


def _port(env: Mapping[str, str]) -> int:
    value = env.get("PORT", "").strip() or "3000"
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SettingsError("PORT is not a TCP port: set a number from 1 to 65535")
    return int(value)


def _log_level(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if value not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL is not a level: use one of {', '.join(LOG_LEVELS)}")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_FORMAT", "").strip() or "text").lower()
    if value not in ("text", "json"):
        raise SettingsError("LOG_FORMAT is not known: use text or json")
    return value
