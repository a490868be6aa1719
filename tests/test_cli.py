"""The `box-bot` command's own answers: its version, and the settings `--help` lists."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import bot.settings
from bot.settings import VARIABLES, load_settings

README = Path(__file__).parents[1] / "README.md"
KEY = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
REQUIRED = {"APP_ID": "12345", "PRIVATE_KEY": KEY, "WEBHOOK_SECRET": "a-webhook-secret-0123"}
# How the settings module reads a variable: env.get("X"…), env["X"], or a helper's (env, "X"…).
READ = re.compile(r'env(?:\.get\(|\[|, )"([A-Z][A-Z0-9_]+)"')


def box_bot(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_is_the_installed_package_version() -> None:
    result = box_bot("--version")
    assert result.returncode == 0
    assert result.stdout == f"box-bot {metadata.version('box-bot')}\n"
    assert metadata.version("box-bot") == "0.1.0"


@pytest.mark.parametrize("command", ["serve", "doctor"])
def test_help_lists_every_setting_it_reads(command: str) -> None:
    result = box_bot(command, "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "settings, from the environment or else from .env in the working directory:" in text
    listed = re.findall(r"^  ([A-Z][A-Z0-9_]+) ", text, re.M)
    assert listed == [variable.name for variable in VARIABLES]
    assert re.search(
        r"^  APP_ID +the app's ID \(a number\) or client ID .+ \(required\)$", text, re.M
    )
    assert re.search(r"^  PORT +the port to listen on \(default 3000\)$", text, re.M)


def test_the_table_names_exactly_the_variables_the_settings_read() -> None:
    read = set(READ.findall(inspect.getsource(bot.settings)))
    assert "BOX_MAX_RUNS_PER_USER_PER_DAY" in read  # the pattern sees the helpers' arguments
    assert {variable.name for variable in VARIABLES} == read


@pytest.mark.parametrize(
    "variable", [v for v in VARIABLES if v.default and not v.required], ids=lambda v: v.name
)
def test_each_listed_default_is_the_one_used(
    variable: bot.settings.Variable, tmp_path: Path
) -> None:
    unset = load_settings(REQUIRED, dotenv=tmp_path / ".env")
    given = load_settings({**REQUIRED, variable.name: variable.default}, dotenv=tmp_path / ".env")
    assert given == unset


def test_the_readme_documents_every_setting() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [v.name for v in VARIABLES if not re.search(rf"`{v.name}[`=]", text)]
    assert missing == []
