"""Operator settings: read once, refused with one clear line when wrong, secrets hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.github.client import GitHubAppAuth, get_app_info
from bot.runs.timing import Timing
from bot.settings import Settings, SettingsError, load_settings
from bot.sim.github import GitHubSimulator


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))
SECRET = "s3cret-webhook-value-1234"


def env(**overrides: str) -> dict[str, str]:
    base = {"APP_ID": "12345", "PRIVATE_KEY": RSA_PEM, "WEBHOOK_SECRET": SECRET}
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(env(), dotenv=tmp_path / ".env")
    assert settings.github_api_url == "https://api.github.com"
    assert settings.box_api_base == "https://ascii.dev/api/box/v1"
    assert settings.database_url == "sqlite:///box-bot.sqlite3"
    assert (settings.host, settings.port, settings.log_level) == ("0.0.0.0", 3000, "INFO")


@pytest.mark.parametrize(
    "url", ["postgresql://bot:pw@db.internal:5432/boxbot", "postgres://bot:pw@db.internal/boxbot"]
)
def test_postgresql_and_its_pool_and_inbox_retention(tmp_path: Path, url: str) -> None:
    settings = load_settings(
        env(DATABASE_URL=url, DATABASE_POOL_SIZE="4", BOX_INBOX_RETENTION_DAYS="30"),
        dotenv=tmp_path / ".env",
    )
    assert (settings.database_url, settings.database_pool_size) == (url, 4)
    assert settings.inbox_retention_days == 30
    defaults = load_settings(env(), dotenv=tmp_path / ".env")
    assert (defaults.database_pool_size, defaults.inbox_retention_days) == (10, 7)


def test_private_key_with_literal_newlines(tmp_path: Path) -> None:
    escaped = RSA_PEM.replace("\n", "\\n")
    settings = load_settings(env(PRIVATE_KEY=escaped), dotenv=tmp_path / ".env")
    assert settings.private_key.strip() == RSA_PEM.strip()


def test_private_key_path(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(RSA_PEM)
    values = env(PRIVATE_KEY_PATH=str(key_file))
    del values["PRIVATE_KEY"]
    assert load_settings(values, dotenv=tmp_path / ".env").private_key == RSA_PEM


def test_dotenv_fills_what_the_environment_lacks(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f'# app\nexport APP_ID=777\nWEBHOOK_SECRET="{SECRET}"\nPORT=8080\n')
    settings = load_settings({"PRIVATE_KEY": RSA_PEM, "PORT": "9000"}, dotenv=dotenv)
    assert (settings.app_id, settings.webhook_secret, settings.port) == ("777", SECRET, 9000)


async def test_a_pem_pasted_in_quotes_signs_a_jwt_github_accepts(
    tmp_path: Path, github_sim: GitHubSimulator
) -> None:
    pem = github_sim.private_key_pem.strip()
    assert pem.count("\n") > 20
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# box-bot, as pasted from the app's settings page\n"
        "export APP_ID=321   # the app's ID\n"
        f'PRIVATE_KEY="{pem}"\n'
        f"WEBHOOK_SECRET={SECRET} # the webhook secret\n"
        f"GITHUB_API_URL={github_sim.base_url}\n"
    )
    settings = load_settings({}, dotenv)
    assert (settings.app_id, settings.webhook_secret) == ("321", SECRET)
    assert settings.private_key.strip() == pem
    async with aiohttp.ClientSession() as session:
        auth = GitHubAppAuth(
            session,
            app_id=settings.app_id,
            private_key=settings.private_key,
            base_url=settings.github_api_url,
        )
        app = await get_app_info(auth)
    assert (app["id"], app["slug"]) == (321, "box-bot")
    assert [(call.method, call.path) for call in github_sim.calls] == [("GET", "/app")]


def test_a_dotenv_line_that_cannot_be_read_is_named_not_skipped(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    unclosed = RSA_PEM.strip()  # the closing quote is missing
    dotenv.write_text(f'APP_ID=1\nPRIVATE_KEY="{unclosed}\nWEBHOOK_SECRET={SECRET}\n')
    with pytest.raises(SettingsError) as caught:
        load_settings({}, dotenv=dotenv)
    assert str(caught.value) == (
        f"{dotenv} line 2 is not KEY=value: fix it (a quote it opens must be closed)"
    )


def test_dotenv_values_are_taken_literally(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "WEBHOOK_SECRET='quoted # not a comment ${HOME}'\n"
        "BOX_TRIGGER_LABEL=fix#now\n"
        'BOX_MODEL="gpt-5.5"  # a comment after quotes\n'
    )
    settings = load_settings({"APP_ID": "1", "PRIVATE_KEY": RSA_PEM}, dotenv=dotenv)
    assert settings.webhook_secret == "quoted # not a comment ${HOME}"
    assert settings.trigger_label == "fix#now"  # a comment starts after a space
    assert settings.box_model == "gpt-5.5"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"APP_ID": ""}, "APP_ID"),
        ({"APP_ID": "abc"}, "APP_ID"),
        ({"APP_ID": "Iv1.not-hex-digits!"}, "APP_ID"),
        ({"APP_ID": "0123"}, "APP_ID"),
        ({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "   "}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "short"}, "WEBHOOK_SECRET"),
        ({"PRIVATE_KEY": ""}, "PRIVATE_KEY"),
        ({"PRIVATE_KEY": "not a key"}, "PRIVATE_KEY"),
        ({"PRIVATE_KEY": EC_PEM}, "PRIVATE_KEY"),
        ({"PRIVATE_KEY": "", "PRIVATE_KEY_PATH": "/nonexistent/app.pem"}, "PRIVATE_KEY_PATH"),
        ({"PORT": "http"}, "PORT"),
        ({"GITHUB_API_URL": "api.github.com"}, "GITHUB_API_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_POOL_SIZE": "1"}, "DATABASE_POOL_SIZE"),
        ({"DATABASE_POOL_SIZE": "ten"}, "DATABASE_POOL_SIZE"),
        ({"BOX_INBOX_RETENTION_DAYS": "0"}, "BOX_INBOX_RETENTION_DAYS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_setting_names_the_variable(
    tmp_path: Path, overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env(**overrides), dotenv=tmp_path / ".env")
    message = str(caught.value)
    assert message.startswith(variable + " ")
    assert "\n" not in message


@pytest.mark.parametrize("app_id", ["1", "123456", "Iv1.8a61f9b3a7aba766", "Iv23liH4QBPOVMvEmTS8"])
def test_app_ids_and_client_ids_are_accepted(tmp_path: Path, app_id: str) -> None:
    assert load_settings(env(APP_ID=app_id), dotenv=tmp_path / ".env").app_id == app_id


def test_an_app_id_that_is_neither_says_what_to_copy(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env(APP_ID="abc"), dotenv=tmp_path / ".env")
    assert str(caught.value) == (
        "APP_ID is neither an app ID (a number) nor a client ID (Iv1.… or Iv23…):"
        " copy one from the app's settings page on GitHub"
    )


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    settings = load_settings(env(BOX_API_KEY="box_live_abcdefgh12345678"), dotenv=tmp_path / ".env")
    text = repr(settings)
    assert "12345" in text
    for secret in (SECRET, "box_live_abcdefgh12345678", "PRIVATE KEY"):
        assert secret not in text
    assert isinstance(settings, Settings)


def test_serve_refuses_to_start_half_configured(tmp_path: Path) -> None:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "WEBHOOK_SECRET")
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        env={**clean, "APP_ID": "1", "PRIVATE_KEY": RSA_PEM, "WEBHOOK_SECRET": ""},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "box-bot: WEBHOOK_SECRET is not set: set it to the webhook secret configured on the"
        " GitHub App"
    ]


def test_key_file_that_is_not_text_is_one_clear_line(tmp_path: Path) -> None:
    key_file = tmp_path / "app.der"
    key_file.write_bytes(b"\x30\x82\xff\xfe binary")
    values = env(PRIVATE_KEY_PATH=str(key_file))
    del values["PRIVATE_KEY"]
    with pytest.raises(SettingsError, match=r"^PRIVATE_KEY_PATH is not a PEM text file"):
        load_settings(values, dotenv=tmp_path / ".env")


def test_dotenv_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"APP_ID=1\nWEBHOOK_SECRET=caf\xe9-secret-123456\n")
    with pytest.raises(SettingsError, match=r"\.env is not UTF-8 text: save it as UTF-8$"):
        load_settings({"PRIVATE_KEY": RSA_PEM}, dotenv=dotenv)


def test_operator_run_settings(tmp_path: Path) -> None:
    settings = load_settings(
        env(
            BOX_TRIGGER_LABEL="robot-go",
            BOX_TTL_SECONDS="900",
            BOX_MODEL="gpt-5.5",
            BOX_REASONING_EFFORT="high",
            BOX_PROVIDER="codex",
        ),
        dotenv=tmp_path / ".env",
    )
    assert (settings.trigger_label, settings.box_ttl_seconds) == ("robot-go", 900)
    assert (settings.box_model, settings.box_reasoning_effort) == ("gpt-5.5", "high")
    assert settings.box_provider == "codex"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"BOX_MODEL": "gpt-9"}, "BOX_MODEL 'gpt-9' is not a codex model: use one of gpt-5.5,"),
        (
            {"BOX_PROVIDER": "claude-code", "BOX_MODEL": "sonnet", "BOX_REASONING_EFFORT": "max"},
            "BOX_REASONING_EFFORT 'max' is not an effort of any claude-code model sonnet:"
            " use one of high, low, medium",
        ),
        ({"BOX_REASONING_EFFORT": "ultra"}, "BOX_REASONING_EFFORT 'ultra' is not an effort"),
    ],
)
def test_agent_settings_are_checked_against_the_catalogue(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env(**overrides), dotenv=tmp_path / ".env")
    assert str(caught.value).startswith(message)


def test_a_known_model_and_effort_are_accepted(tmp_path: Path) -> None:
    settings = load_settings(
        env(BOX_PROVIDER="claude", BOX_MODEL="opus", BOX_REASONING_EFFORT="max"),
        dotenv=tmp_path / ".env",
    )
    assert (settings.box_model, settings.box_reasoning_effort) == ("opus", "max")


def test_box_setup_and_dollar_settings(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("apt-get install -y jq\n", encoding="utf-8")
    settings = load_settings(
        env(
            BOX_SETUP_FILE=str(script),
            BOX_MACHINE="Large",
            BOX_ENVIRONMENT="web",
            BOX_MAX_DOLLARS_PER_RUN="2.50",
            BOX_MAX_DOLLARS_PER_DAY="$40",
        ),
        dotenv=tmp_path / ".env",
    )
    unset = load_settings(env(), dotenv=tmp_path / ".env")

    assert settings.box_setup_script == "apt-get install -y jq\n"
    assert (settings.box_machine, settings.box_environment) == ("large", "web")
    assert (settings.max_dollars_per_run, settings.max_dollars_per_day) == (2.5, 40.0)
    assert (unset.box_setup_script, unset.box_machine, unset.max_dollars_per_day) == (None,) * 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"BOX_SETUP_FILE": "/no/such/setup.sh"}, "BOX_SETUP_FILE cannot be read"),
        ({"BOX_MACHINE": "xxl"}, "BOX_MACHINE must be one of small, default, large: got 'xxl'"),
        ({"BOX_ENVIRONMENT": "a b"}, "BOX_ENVIRONMENT is not a Box environment name"),
        ({"BOX_MAX_DOLLARS_PER_RUN": "0"}, "BOX_MAX_DOLLARS_PER_RUN is not an amount of dollars"),
        ({"BOX_MAX_DOLLARS_PER_DAY": "lots"}, "BOX_MAX_DOLLARS_PER_DAY is not an amount"),
    ],
)
def test_bad_box_setup_and_dollar_settings(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env(**overrides), dotenv=tmp_path / ".env")
    assert str(caught.value).startswith(message)


def test_a_setup_file_over_64_kib_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_bytes(b"#" * (64 * 1024 + 1))
    with pytest.raises(SettingsError) as caught:
        load_settings(env(BOX_SETUP_FILE=str(script)), dotenv=tmp_path / ".env")
    assert str(caught.value) == (
        "BOX_SETUP_FILE is 65537 bytes: Box takes a setup script of at most 64 KiB"
    )


def test_the_run_lease_sets_how_often_it_is_renewed_and_scanned(tmp_path: Path) -> None:
    settings = load_settings(env(BOX_LEASE_SECONDS="12"), dotenv=tmp_path / ".env")
    timing = Timing.for_poll_interval(settings.box_poll_interval, settings.lease_seconds)
    assert (timing.lease_seconds, timing.lease_renew, timing.lease_scan) == (12.0, 4.0, 2.0)
    default = load_settings(env(), dotenv=tmp_path / ".env")
    assert Timing.for_poll_interval(5.0, default.lease_seconds) == Timing(
        poll_interval=5.0, max_poll_interval=30.0
    )  # 30 s, renewed every 10 s, scanned every 5 s
    with pytest.raises(SettingsError) as refused:
        load_settings(env(BOX_LEASE_SECONDS="2"), dotenv=tmp_path / ".env")
    assert str(refused.value) == "BOX_LEASE_SECONDS is not a whole number from 3 to 3600: got '2'"
