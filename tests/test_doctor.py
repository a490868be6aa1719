"""`box-bot doctor`: one line per check, against the real simulators and real files."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.ops.doctor import run_doctor
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from tests.conftest import BOX_KEY, INSTALLATION_ID, SECRET
from tests.databases import PG_SERVER, SKIPPED, database_url

Env = dict[str, str]


@pytest.fixture
def env(tmp_path: Path, github_sim: GitHubSimulator, box_sim: BoxSimulator) -> Env:
    """A working configuration: both simulators and a SQLite file."""
    return {
        "APP_ID": "321",
        "PRIVATE_KEY": github_sim.private_key_pem.replace("\n", "\\n"),
        "WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": github_sim.base_url,
        "BOX_API_BASE": box_sim.base_url,
        "BOX_API_KEY": BOX_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'box-bot.sqlite3'}",
    }


async def doctor(env: Env, tmp_path: Path) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await run_doctor(lines.append, env, tmp_path / "no.env")
    return code, lines


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def line_of(lines: list[str], name: str) -> str:
    [line] = [line for line in lines if line[2:].startswith(f"{name}:")]
    return line


async def test_everything_passes_against_both_simulators(
    env: Env, tmp_path: Path, github_sim: GitHubSimulator
) -> None:
    github_sim.add_installation(INSTALLATION_ID + 1, "octo-org", account_type="Organization")
    code, lines = await doctor(env, tmp_path)
    assert lines == [
        "✓ settings: loaded (app ID 321)",
        "✓ private key: RSA, 2048 bits",
        "✓ GitHub: signed in as the app 'box-bot' (id 321), installed on 2 account(s)",
        "✓ Box: signed in as box-bot-dev; boxes can start (0 of 20 boxes active)",
        f"✓ database: SQLite file {tmp_path / 'box-bot.sqlite3'} does not exist yet:"
        " box-bot serve creates it",
    ]
    assert code == 0
    assert not (tmp_path / "box-bot.sqlite3").exists()
    output = "\n".join(lines)
    for secret in (SECRET, BOX_KEY, "PRIVATE KEY"):
        assert secret not in output


async def test_settings_come_from_dotenv_too(env: Env, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    lines: list[str] = []
    assert await run_doctor(lines.append, {}, dotenv) == 0
    assert all(line.startswith("✓") for line in lines)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("not a key", "PRIVATE_KEY is not a PEM RSA private key"),
        (pem(ec.generate_private_key(ec.SECP256R1())), "PRIVATE_KEY is not an RSA key"),
    ],
)
async def test_a_bad_key_is_reported_and_nothing_else_is_tried(
    env: Env, tmp_path: Path, github_sim: GitHubSimulator, key: str, expected: str
) -> None:
    code, lines = await doctor({**env, "PRIVATE_KEY": key}, tmp_path)
    assert code == 1
    assert lines[0].startswith(f"✗ settings: {expected}: ")
    assert lines[1:3] == [
        "– private key: not checked until the settings load",
        "– GitHub: not checked until the settings load",
    ]
    # Box and the database do not need the key: they are still checked.
    assert lines[3].startswith("✓ Box: signed in as ")
    assert lines[4].startswith("✓ database: SQLite file ")
    assert len(lines) == 5
    assert github_sim.calls == []


async def test_an_empty_environment_lists_every_missing_setting(
    tmp_path: Path, box_sim: BoxSimulator
) -> None:
    code, lines = await doctor({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}, tmp_path)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [
        "✗ settings",
        "✗ settings",
        "✗ settings",
        "– private key",
        "– GitHub",
        "✗ Box",
        "✓ database",
    ]
    assert lines[0].startswith("✗ settings: APP_ID is not set")
    assert lines[1].startswith("✗ settings: PRIVATE_KEY is not set")
    assert lines[2].startswith("✗ settings: WEBHOOK_SECRET is not set")
    assert lines[5] == (
        "✗ Box: BOX_API_KEY is not set: create an API key in the Box dashboard and set BOX_API_KEY"
    )


async def test_a_short_rsa_key_is_refused(env: Env, tmp_path: Path) -> None:
    weak = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    code, lines = await doctor({**env, "PRIVATE_KEY": weak}, tmp_path)
    assert code == 1
    assert line_of(lines, "private key").startswith("✗ private key: the RSA key has 1024 bits")
    assert line_of(lines, "GitHub") == "– GitHub: not checked until the private key is fixed"


async def test_github_refusing_the_jwt_says_which_settings_to_check(
    env: Env, tmp_path: Path
) -> None:
    other = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    code, lines = await doctor({**env, "PRIVATE_KEY": other}, tmp_path)
    assert code == 1
    line = line_of(lines, "GitHub")
    assert line.startswith("✗ GitHub: GitHub refused the app's JWT (401 ")
    assert line.endswith(
        "check that APP_ID is this app's ID and PRIVATE_KEY is one of its current private keys"
    )
    assert line_of(lines, "Box").startswith("✓")
    assert line_of(lines, "database").startswith("✓")


async def test_unreachable_github_names_the_url(env: Env, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, lines = await doctor({**env, "GITHUB_API_URL": url}, tmp_path)
    assert code == 1
    line = line_of(lines, "GitHub")
    assert line.startswith(f"✗ GitHub: cannot reach {url} (")
    assert line.endswith("check GITHUB_API_URL and this machine's network")


async def test_missing_box_key(env: Env, tmp_path: Path, box_sim: BoxSimulator) -> None:
    code, lines = await doctor({**env, "BOX_API_KEY": ""}, tmp_path)
    assert code == 1
    assert line_of(lines, "Box") == (
        "✗ Box: BOX_API_KEY is not set: create an API key in the Box dashboard and set BOX_API_KEY"
    )
    assert box_sim.requests == []


async def test_refused_box_key_is_not_printed(env: Env, tmp_path: Path) -> None:
    wrong = "box_live_wrongkey0123456789"
    code, lines = await doctor({**env, "BOX_API_KEY": wrong}, tmp_path)
    assert code == 1
    line = line_of(lines, "Box")
    assert line.startswith("✗ Box: Box refused BOX_API_KEY (")
    assert "HTTP 401" in line
    assert wrong not in "\n".join(lines)


async def test_box_that_cannot_start_boxes(env: Env, tmp_path: Path, box_sim: BoxSimulator) -> None:
    box_sim.credit = False
    code, lines = await doctor(env, tmp_path)
    assert code == 1
    assert line_of(lines, "Box") == (
        "✗ Box: signed in as box-bot-dev, but no box can start now (0 of 20 boxes active,"
        " billing payment_required): add credit or archive boxes in the Box dashboard"
    )


async def test_unreachable_box(env: Env, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/box/v1"
    code, lines = await doctor({**env, "BOX_API_BASE": url}, tmp_path)
    assert code == 1
    assert line_of(lines, "Box").startswith(f"✗ Box: cannot reach {url} (")


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("mysql://db/box", "✗ settings: DATABASE_URL is not supported"),
        ("sqlite:////no/such/dir/box.sqlite3", "✗ database: cannot open SQLite file /no/such/dir"),
        (
            "postgresql://bot:hunter2-secret@127.0.0.1:1/boxbot",
            "✗ database: cannot open postgresql database boxbot on 127.0.0.1"
            " (cannot connect to PostgreSQL at 127.0.0.1:1/boxbot:",
        ),
    ],
)
async def test_bad_database_urls(
    env: Env, tmp_path: Path, database_url: str, expected: str
) -> None:
    code, lines = await doctor({**env, "DATABASE_URL": database_url}, tmp_path)
    assert code == 1
    assert any(line.startswith(expected) for line in lines), lines
    assert "hunter2" not in "\n".join(lines)


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


async def test_an_existing_database_is_looked_at_not_changed(env: Env, tmp_path: Path) -> None:
    database = tmp_path / "box-bot.sqlite3"
    store = await open_store(f"sqlite:///{database}")
    await store.close()
    before = contents(tmp_path)
    code, lines = await doctor(env, tmp_path)
    assert code == 0
    assert line_of(lines, "database") == (
        f"✓ database: SQLite file {database} is a SQLite database this user can read and write"
    )
    assert contents(tmp_path) == before


async def test_a_file_that_is_not_sqlite_is_refused(env: Env, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    code, lines = await doctor({**env, "DATABASE_URL": f"sqlite:///{notes}"}, tmp_path)
    assert code == 1
    assert line_of(lines, "database") == (
        f"✗ database: SQLite file {notes} is not a SQLite database: set DATABASE_URL to the"
        " app's database file, or to a new one"
    )
    assert notes.read_text() == "not a database\n"


@pytest.mark.parametrize(
    ("app_id", "found"),
    [("321", "app ID 321"), ("Iv23liH4QBPOVMvEmTS8", "client ID Iv23liH4QBPOVMvEmTS8")],
)
async def test_it_says_which_of_app_id_or_client_id_it_found(
    env: Env, tmp_path: Path, app_id: str, found: str
) -> None:
    _code, lines = await doctor({**env, "APP_ID": app_id}, tmp_path)
    assert lines[0] == f"✓ settings: loaded ({found})"


async def test_an_app_id_that_is_neither_is_said_so(
    env: Env, tmp_path: Path, github_sim: GitHubSimulator
) -> None:
    code, lines = await doctor({**env, "APP_ID": "abc"}, tmp_path)
    assert code == 1
    assert lines[0] == (
        "✗ settings: APP_ID is neither an app ID (a number) nor a client ID (Iv1.… or Iv23…):"
        " copy one from the app's settings page on GitHub"
    )
    assert line_of(lines, "GitHub") == "– GitHub: not checked until the settings load"
    assert github_sim.calls == []


async def test_the_command_prints_only_its_report_and_creates_nothing(
    env: Env, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    unreachable = f"http://127.0.0.1:{free_port()}/api/box/v1"
    given = {name: value for name, value in env.items() if name != "DATABASE_URL"}
    given["BOX_API_BASE"] = unreachable
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BOX_API_KEY")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "doctor",
        cwd=workdir,
        env={**clean, **given},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert stderr.decode() == ""
    lines = stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "✓ settings",
        "✓ private key",
        "✓ GitHub",
        "✗ Box",
        "✓ database",
    ]
    assert lines[3].startswith(f"✗ Box: cannot reach {unreachable} (")
    assert lines[4] == (
        "✓ database: SQLite file box-bot.sqlite3 does not exist yet: box-bot serve creates it"
    )
    assert os.listdir(workdir) == []


@pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)
async def test_a_postgresql_database_is_pinged_not_migrated(env: Env, tmp_path: Path) -> None:
    async with database_url("postgresql", tmp_path) as url:
        code, lines = await doctor({**env, "DATABASE_URL": url}, tmp_path)
        server = await asyncpg.connect(url)
        try:
            tables = await server.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await server.close()
    assert code == 0, lines
    assert line_of(lines, "database").startswith("✓ database: postgresql database ")
    assert line_of(lines, "database").endswith(" on 127.0.0.1 answers")
    assert tables == []
