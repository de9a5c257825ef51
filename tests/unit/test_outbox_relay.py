"""The outbox relay on a SQLite outbox, with a message bus that records what it publishes."""

from __future__ import annotations

import asyncio
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
        self.rounds = 0
        self.during_publish: list[object] = []

    async def publish(self, events: Sequence[OutgoingEvent]) -> None:
        self.rounds += 1
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


async def test_woken_relay_waits_for_open_transaction(engine: AsyncEngine) -> None:
    # Two transactions commit 0.2 s apart: one round publishes both. The relay's first
    # round, which runs when it starts, publishes an earlier event first.
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, name="test", poll_seconds=60, gather_seconds=5.0)  # type: ignore[arg-type]
    await commit_events(engine, "earlier")
    relay.start()
    try:
        await eventually(lambda: published_count(bus), until=lambda n: n == 1, timeout=5)
        with relay.writing():
            with relay.writing():
                await commit_events(engine, "first")
            relay.wake()
            await asyncio.sleep(0.2)
            published_while_open = list(bus.published)
            await commit_events(engine, "second")
        relay.wake()
        await eventually(lambda: published_count(bus), until=lambda n: n == 3, timeout=5)
    finally:
        await relay.stop()
    assert published_while_open == ["earlier"]
    assert bus.published == ["earlier", "first", "second"]
    assert bus.rounds == 2


async def test_gather_wait_is_bounded(engine: AsyncEngine) -> None:
    # A transaction that stays open delays the round by at most gather_seconds.
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, name="test", poll_seconds=60, gather_seconds=0.1)  # type: ignore[arg-type]
    relay.start()
    try:
        with relay.writing():
            await commit_events(engine, "first")
            relay.wake()
            await eventually(
                lambda: published_count(bus), until=lambda count: count == 1, timeout=5
            )
    finally:
        await relay.stop()
    assert bus.published == ["first"]
