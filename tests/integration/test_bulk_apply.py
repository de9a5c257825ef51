"""The store's bulk apply of record batches, on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.batch import BatchItem
from lojasync.digest import content_hash
from lojasync.persistence import create_engine, create_tables
from store_registry.bulk import apply_batch_items
from store_registry.domain import StoredRecord
from store_registry.models import TABLES
from store_registry.repository import load_record, save_records
from tests.conftest import DatabaseFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, tzinfo=UTC)


@pytest.fixture
async def engine(fresh_database: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(await fresh_database("bulk"))
    await create_tables(engine, TABLES)
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine, *records: StoredRecord) -> None:
    async with engine.begin() as connection:
        await save_records(connection, list(records), NOW)


async def apply(engine: AsyncEngine, items: list[BatchItem], *, repair: bool = False) -> int:
    async with engine.begin() as connection:
        result = await apply_batch_items(connection, items, repair=repair)
    return result.changed


async def stored(engine: AsyncEngine, key: str) -> StoredRecord | None:
    async with engine.connect() as connection:
        return await load_record(connection, "unit", key)


def unit(code: str, description: str) -> dict[str, str]:
    return {"code": code, "description": description}


async def test_bulk_inserts_and_keeps_newest(engine: AsyncEngine) -> None:
    items = [
        BatchItem("unit", "UN", 1, record=unit("UN", "old")),
        BatchItem("unit", "UN", 2, record=unit("UN", "new")),
        BatchItem("unit", "KG", 5, deleted=True),
    ]

    changed = await apply(engine, items)
    held = await stored(engine, "UN")
    tombstone = await stored(engine, "KG")

    assert changed == 2
    assert held is not None
    assert held.revision == 2
    assert held.data == unit("UN", "new")
    assert held.content_hash == content_hash(unit("UN", "new"))
    assert tombstone is not None
    assert tombstone.deleted
    assert tombstone.revision == 5


async def test_bulk_ignores_older_revisions(engine: AsyncEngine) -> None:
    await seed(engine, StoredRecord("unit", "UN", 3, unit("UN", "current")))

    changed = await apply(engine, [BatchItem("unit", "UN", 2, record=unit("UN", "older"))])
    held = await stored(engine, "UN")

    assert changed == 0
    assert held is not None
    assert held.data == unit("UN", "current")


async def test_bulk_clears_only_decided_pending(engine: AsyncEngine) -> None:
    pending = {"description": "edited here"}
    await seed(
        engine,
        StoredRecord(
            "unit",
            "UN",
            1,
            unit("UN", "a"),
            pending=pending,
            pending_action="upsert",
            pending_event_id="edit-1",
            pending_since=NOW,
        ),
        StoredRecord(
            "unit",
            "KG",
            1,
            unit("KG", "a"),
            pending=pending,
            pending_action="upsert",
            pending_event_id="edit-2",
            pending_since=NOW,
        ),
    )

    await apply(
        engine,
        [
            BatchItem("unit", "UN", 2, record=unit("UN", "b"), causation_id="edit-1"),
            BatchItem("unit", "KG", 2, record=unit("KG", "b"), causation_id="other"),
        ],
    )
    decided = await stored(engine, "UN")
    waiting = await stored(engine, "KG")

    assert decided is not None
    assert decided.pending is None
    assert decided.pending_event_id is None
    assert waiting is not None
    assert waiting.pending == pending
    assert waiting.pending_event_id == "edit-2"
    assert waiting.data == unit("KG", "b")


async def test_repair_replaces_seen_revision(engine: AsyncEngine) -> None:
    await seed(engine, StoredRecord("unit", "UN", 4, unit("UN", "changed outside")))

    stale = await apply(
        engine,
        [BatchItem("unit", "UN", 4, record=unit("UN", "x"), expected_revision=3)],
        repair=True,
    )
    fixed = await apply(
        engine,
        [BatchItem("unit", "UN", 4, record=unit("UN", "right"), expected_revision=4)],
        repair=True,
    )
    held = await stored(engine, "UN")

    assert stale == 0
    assert fixed == 1
    assert held is not None
    assert held.data == unit("UN", "right")
    assert held.revision == 4


async def test_repeated_batch_changes_nothing(engine: AsyncEngine) -> None:
    items = [BatchItem("unit", f"U{n}", 1, record=unit(f"U{n}", "x")) for n in range(50)]
    await apply(engine, items)
    async with engine.connect() as connection:
        before = (
            await connection.execute(text("SELECT * FROM store_record ORDER BY record_key"))
        ).all()

    changed = await apply(engine, items)
    async with engine.connect() as connection:
        after = (
            await connection.execute(text("SELECT * FROM store_record ORDER BY record_key"))
        ).all()

    assert changed == 0
    assert after == before
