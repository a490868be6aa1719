"""The SQLite backend: group commit, migrations, one process per file; `box-bot migrate`."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.records import DeliveryStatus, StoreUnavailable
from bot.store.sqlite import MIGRATIONS
from tests.databases import on_every_backend
from tests.test_shutdown import free_port, serve_env


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    return await open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")


async def test_concurrent_deliveries_are_each_stored_once(store: Store, tmp_path: Path) -> None:
    ids = [f"d-{n % 40}" for n in range(100)]  # 40 distinct ids, most sent two or three times

    stored = await asyncio.gather(
        *(store.add_delivery(i, "issues", "opened", 1, b"{}") for i in ids)
    )

    assert sum(stored) == 40
    first_of_each = {i: ids.index(i) for i in set(ids)}
    assert [n for n, ok in enumerate(stored) if ok] == sorted(first_of_each.values())
    await store.close()
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 40


async def test_a_failing_statement_undoes_only_itself(store: Store) -> None:
    good = store.add_delivery("kept-1", "issues", "opened", 1, b"{}")
    # NOT NULL on event: this INSERT fails inside the same group as its neighbours.
    bad = store.add_delivery("lost", None, "opened", 1, b"{}")  # type: ignore[arg-type]
    also_good = store.add_delivery("kept-2", "issues", "opened", 1, b"{}")

    results = await asyncio.gather(good, bad, also_good, return_exceptions=True)

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], StoreUnavailable)
    assert "NOT NULL" in str(results[1])
    assert (await store.get_delivery("kept-1")) is not None
    assert (await store.get_delivery("kept-2")) is not None
    assert (await store.get_delivery("lost")) is None
    assert (await store.delivery_counts()) == {DeliveryStatus.PENDING.value: 2}
    await store.close()


async def test_a_closed_store_refuses_writes(store: Store) -> None:
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.add_delivery("late", "issues", "opened", 1, b"{}")


async def test_a_new_database_is_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    await store.close()
    with sqlite3.connect(tmp_path / "new.sqlite3") as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(
            MIGRATIONS
        )
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_older_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # a database written by the first release
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            "INSERT INTO deliveries (id, event, payload, next_attempt_at, received_at)"
            " VALUES ('kept', 'issues', X'7B7D', 0, 0)"
        )
    store = await open_store(f"sqlite:///{path}")
    assert (await store.get_delivery("kept")) is not None
    assert await store.count_runs() == {}
    assert await store.migrate() == len(MIGRATIONS)  # running again changes nothing
    await store.close()
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def box_bot(command: str, settings: Settings, tmp_path: Path) -> tuple[int, list[str]]:
    """Run `box-bot <command>` in its own process; return its exit code and output lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        command,
        env=serve_env(settings, free_port()),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode().splitlines()


async def test_a_second_process_on_the_same_sqlite_file_is_refused_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    path = settings.database_url.removeprefix("sqlite:///")
    running = await open_store(settings.database_url)  # this process is the one serving
    try:
        code, lines = await box_bot("serve", settings, tmp_path)
    finally:
        await running.close()

    assert code == 1
    assert lines == [
        f"box-bot: {path} is already used by another box-bot process; SQLite serves one"
        " process only: set DATABASE_URL=postgresql://… to run several instances"
    ]
    code, lines = await box_bot("migrate", settings, tmp_path)  # free again once it is closed
    assert (code, lines) == (0, [f"box-bot: the database schema is at version {len(MIGRATIONS)}"])


async def test_opening_a_file_twice_in_one_process_is_allowed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first, second = await open_store(url), await open_store(url)
    await first.add_delivery("d-1", "issues", None, None, b"{}")
    assert await second.get_delivery("d-1") is not None
    await first.close()
    await second.close()
    reopened = await open_store(url)
    await reopened.close()


@on_every_backend
async def test_migrate_brings_the_schema_up_to_date_and_exits(
    settings: Settings, tmp_path: Path
) -> None:
    code, lines = await box_bot("migrate", settings, tmp_path)

    assert (code, lines) == (0, [f"box-bot: the database schema is at version {len(MIGRATIONS)}"])
    store = await open_store(settings.database_url)
    try:
        assert await store.migrate() == len(MIGRATIONS)
        assert await store.count_runs() == {}
    finally:
        await store.close()


async def test_migrate_names_a_database_it_cannot_reach_without_its_password(
    settings: Settings, tmp_path: Path
) -> None:
    unreachable = replace(settings, database_url="postgres://bot:hunter2@127.0.0.1:1/boxbot")

    code, lines = await box_bot("migrate", unreachable, tmp_path)

    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("box-bot: cannot connect to PostgreSQL at 127.0.0.1:1/boxbot: ")
    assert "hunter2" not in lines[0]
