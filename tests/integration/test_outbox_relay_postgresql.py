"""The outbox relay on PostgreSQL: rounds in id order, each deleting what it published."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.outbox import OutboxRelay
from lojasync.persistence import OUTBOX, create_engine, create_tables
from tests.conftest import DatabaseFactory
from tests.unit.test_outbox_relay import RecordingBus, commit_events


@pytest.fixture
async def engine(fresh_database: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    created = create_engine(await fresh_database("outbox-relay"))
    await create_tables(created, [OUTBOX])
    yield created
    await created.dispose()


async def outbox_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(OUTBOX.c.event_id).order_by(OUTBOX.c.id))
        return [row.event_id for row in rows]


async def test_relay_deletes_only_published_rows(engine: AsyncEngine) -> None:
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, name="test")  # type: ignore[arg-type]
    await commit_events(engine, "a1", "a2", "a3")

    async def commit_meanwhile() -> None:
        await commit_events(engine, "late")

    bus.during_publish.append(commit_meanwhile)
    assert await relay.relay_once() == 3
    assert await outbox_ids(engine) == ["late"]

    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0
    assert await outbox_ids(engine) == []
    assert bus.published == ["a1", "a2", "a3", "late"]


async def test_relay_rounds_keep_id_order(engine: AsyncEngine) -> None:
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, name="test", batch_size=2)  # type: ignore[arg-type]
    names = [f"e{index}" for index in range(5)]
    await commit_events(engine, *names)

    counts = [await relay.relay_once() for _ in range(4)]

    assert counts == [2, 2, 1, 0]
    assert bus.published == names
    assert await outbox_ids(engine) == []
