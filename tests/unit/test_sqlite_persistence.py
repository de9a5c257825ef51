"""The persistence helpers on SQLite files: column types, inbox, upserts and outbox.

The same helpers run on PostgreSQL in the integration tests; these need no server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.persistence import (
    INBOX,
    OUTBOX,
    OutgoingEvent,
    TextList,
    Upsert,
    UtcDateTime,
    add_outbox,
    create_engine,
    create_tables,
    drop_database,
    ensure_database,
    insert_new_rows,
    is_sqlite_url,
    json_document,
    record_inbox,
    sqlite_path,
)
from lojasync.settings import embedded_database_url

METADATA = MetaData()
SAMPLE = Table(
    "sample",
    METADATA,
    Column("key", Text, primary_key=True),
    Column("document", json_document(none_as_null=True)),
    Column("stores", TextList()),
    Column("seen_at", UtcDateTime()),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = embedded_database_url("sample", tmp_path / "nested")
    await ensure_database(url)
    engine = create_engine(url)
    await create_tables(engine, [SAMPLE, INBOX, OUTBOX])
    yield engine
    await engine.dispose()


def test_sqlite_url_recognized(tmp_path: Path) -> None:
    url = embedded_database_url("orchestrator", tmp_path)

    assert is_sqlite_url(url)
    assert not is_sqlite_url("postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    assert sqlite_path(url) == tmp_path / "orchestrator.sqlite3"


def test_sqlite_url_without_file_rejected() -> None:
    with pytest.raises(ValueError, match="names no file"):
        sqlite_path("sqlite+aiosqlite://")


async def test_types_round_trip(engine: AsyncEngine) -> None:
    seen = datetime(2026, 12, 4, 10, 30, tzinfo=timezone(timedelta(hours=-3)))
    async with engine.begin() as connection:
        await connection.execute(
            SAMPLE.insert(),
            [
                {"key": "a", "document": {"x": [1, "2"]}, "stores": ["loja-1"], "seen_at": seen},
                {"key": "b", "document": None, "stores": None, "seen_at": None},
            ],
        )

    async with engine.connect() as connection:
        rows = {row.key: row for row in await connection.execute(select(SAMPLE))}

    assert rows["a"].document == {"x": [1, "2"]}
    assert rows["a"].stores == ["loja-1"]
    assert rows["a"].seen_at == seen
    assert rows["a"].seen_at.tzinfo is not None
    assert rows["b"].document is None
    assert rows["b"].stores is None


async def test_naive_datetime_rejected(engine: AsyncEngine) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        async with engine.begin() as connection:
            await connection.execute(
                SAMPLE.insert(), [{"key": "a", "seen_at": datetime(2026, 12, 4, 10, 30)}]
            )


async def test_inbox_returns_only_new_ids(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        first = await record_inbox(connection, ["e1", "e2"])
    async with engine.begin() as connection:
        second = await record_inbox(connection, ["e2", "e3", "e3"])

    assert first == {"e1", "e2"}
    assert second == {"e3"}


async def test_insert_new_rows_beyond_parameter_limit(engine: AsyncEngine) -> None:
    # 20,000 rows of two columns need 40,000 bound parameters, more than one SQLite
    # statement takes, so the helper must split them.
    rows = [
        {"event_id": f"e{number}", "received_at": datetime.now(UTC)} for number in range(20_000)
    ]
    async with engine.begin() as connection:
        await record_inbox(connection, ["e5"])
        inserted = await insert_new_rows(connection, INBOX, rows, key_column="event_id")

    assert len(inserted) == 19_999
    assert "e5" not in inserted


async def test_upsert_updates_listed_columns(engine: AsyncEngine) -> None:
    replace_document = Upsert(SAMPLE, ("key",), ("document",))
    keep_existing = Upsert(SAMPLE, ("key",))
    async with engine.begin() as connection:
        await replace_document.execute(connection, [{"key": "a", "document": {"v": 1}}])
        await replace_document.execute(connection, [{"key": "a", "document": {"v": 2}}])
        await keep_existing.execute(connection, [{"key": "a", "document": {"v": 3}}])

    async with engine.connect() as connection:
        document = await connection.scalar(select(SAMPLE.c.document))

    assert document == {"v": 2}


async def test_outbox_ids_grow_in_insert_order(engine: AsyncEngine) -> None:
    events = [OutgoingEvent(f"e{n}", "changed.unit.erp", "t", b"{}") for n in range(3)]
    async with engine.begin() as connection:
        await add_outbox(connection, events[:2])
    async with engine.begin() as connection:
        await add_outbox(connection, events[2:])

    async with engine.connect() as connection:
        rows = (await connection.execute(select(OUTBOX.c.id, OUTBOX.c.event_id))).all()

    ordered = sorted(rows)
    assert [row.event_id for row in ordered] == ["e0", "e1", "e2"]
    assert all(isinstance(row.id, int) for row in ordered)


def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_drop_database_removes_files(tmp_path: Path) -> None:
    url = embedded_database_url("gone", tmp_path)
    await ensure_database(url)
    engine = create_engine(url)
    await create_tables(engine, [INBOX])
    await engine.dispose()

    await drop_database(url)

    assert files_in(tmp_path) == []
