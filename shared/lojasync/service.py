"""The runtime every service shares: database engine, broker, outbox relay, consumers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lojasync.messaging import BatchConsumer, BatchHandler, Broker
from lojasync.outbox import OutboxRelay
from lojasync.persistence import (
    INBOX,
    OUTBOX,
    create_engine,
    create_tables,
    ensure_database,
)
from lojasync.settings import CommonSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscription:
    consumer: str
    bindings: Sequence[str]
    handler: BatchHandler


class ServiceRuntime:
    """Owns a service's connections; `start` brings them up, `stop` closes them."""

    def __init__(self, name: str, database_url: str, settings: CommonSettings) -> None:
        self.name = name
        self.database_url = database_url
        self.settings = settings
        self.engine: AsyncEngine = create_engine(database_url)
        self.broker = Broker(settings.broker_url, settings.namespace, prefetch=settings.prefetch)
        self.relay = OutboxRelay(
            self.engine,
            self.broker,
            name=name,
            batch_size=settings.outbox_batch,
            poll_seconds=settings.outbox_poll_seconds,
        )
        self.consumers: list[BatchConsumer] = []

    async def prepare_database(self, tables: Sequence[Table]) -> None:
        await ensure_database(self.database_url)
        await create_tables(self.engine, [*tables, INBOX, OUTBOX])

    async def start(self, tables: Sequence[Table], subscriptions: Sequence[Subscription]) -> None:
        await self.prepare_database(tables)
        await self.broker.connect()
        for subscription in subscriptions:
            consumer = await self.broker.consume(
                subscription.consumer,
                subscription.bindings,
                subscription.handler,
                batch_max=self.settings.batch_max,
            )
            self.consumers.append(consumer)
        self.relay.start()
        logger.info("service started", extra={"service": self.name})

    async def stop(self) -> None:
        await self.relay.stop()
        await self.broker.close()
        self.consumers.clear()
        await self.engine.dispose()
        logger.info("service stopped", extra={"service": self.name})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a transaction; after it commits, wake the outbox relay."""
        async with self.engine.begin() as connection:
            yield connection
        self.relay.wake()
