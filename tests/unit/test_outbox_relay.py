"""The outbox relay on a SQLite outbox, with a message bus that records what it publishes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.envelope import RECORD_CHANGED, Envelope
from lojasync.outbox import OutboxRelay
from lojasync.packing import BATCH_CONTENT_TYPE, unpack
from lojasync.persistence import (
    OUTBOX,
    OutgoingEvent,
    add_outbox,
    create_engine,
    create_tables,
)
from tests.support import eventually


def outgoing(event_id: str) -> OutgoingEvent:
    envelope = Envelope(id=event_id, source="tests", type=RECORD_CHANGED, entity="product")
    return OutgoingEvent(event_id, "changed.product.erp", RECORD_CHANGED, envelope.to_bytes())


class RecordingBus:
    """Keeps the ids of published events; can run a step while a round is publishing."""

    partitions = 4

    def __init__(self) -> None:
        self.published: list[str] = []
        self.during_publish: list[object] = []

    async def publish(self, events: Sequence[OutgoingEvent]) -> None:
        for event in events:
            packed = event.content_type == BATCH_CONTENT_TYPE
            bodies = unpack(event.body) if packed else [event.body]
            self.published.extend(Envelope.from_bytes(body).id for body in bodies)
        while self.during_publish:
            step = self.during_publish.pop(0)
            await step()  # type: ignore[operator]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    created = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite3'}")
    await create_tables(created, [OUTBOX])
    yield created
    await created.dispose()


async def commit_events(engine: AsyncEngine, *event_ids: str) -> None:
    async with engine.begin() as connection:
        await add_outbox(connection, [outgoing(event_id) for event_id in event_ids])


async def published_count(bus: RecordingBus) -> int:
    return len(bus.published)


async def test_wake_during_a_round_starts_another_round(engine: AsyncEngine) -> None:
    # The poll interval is far longer than the test waits: only the wake-up given while
    # the first round was publishing can make the relay publish the second event.
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, name="test", poll_seconds=60)  # type: ignore[arg-type]

    async def commit_meanwhile() -> None:
        await commit_events(engine, "second")
        relay.wake()

    bus.during_publish.append(commit_meanwhile)
    await commit_events(engine, "first")
    relay.start()
    try:
        relay.wake()
        await eventually(lambda: published_count(bus), until=lambda count: count == 2, timeout=5)
    finally:
        await relay.stop()
    assert bus.published == ["first", "second"]
