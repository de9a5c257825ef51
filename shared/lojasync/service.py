"""The runtime every service shares: database engine, broker, outbox relay, consumers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lojasync.embedded_broker import EmbeddedBroker, is_embedded_url
from lojasync.errors import BrokerUnavailable, ConfigurationError
from lojasync.messaging import BatchConsumer, BatchHandler, Broker
from lojasync.outbox import OutboxRelay
from lojasync.persistence import (
    INBOX,
    OUTBOX,
    OUTBOX_WRITTEN,
    create_engine,
    create_tables,
    database_ready,
    ensure_database,
)
from lojasync.settings import CommonSettings

logger = logging.getLogger(__name__)


def create_broker(
    url: str, namespace: str, *, prefetch: int = 1000, partitions: int = 4
) -> Broker | EmbeddedBroker:
    """Create the RabbitMQ broker client for `url`, or the embedded broker for a `sqlite:` URL."""
    if is_embedded_url(url):
        return EmbeddedBroker(url, namespace, prefetch=prefetch, partitions=partitions)
    return Broker(url, namespace, prefetch=prefetch, partitions=partitions)


def freeze_startup_objects() -> None:
    """Exclude the objects alive now from the cyclic garbage collector's later passes.

    A service loads its reference tables, policy, models and SQL metadata at start-up and
    keeps them until it stops. The collector's full passes went over all of them again:
    pauses of 55 to 285 ms were measured in the services, which stalled every batch in
    flight. Refcounting still frees a frozen object that is released later; only a cycle
    of frozen objects that becomes garbage stays in memory.
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Subscription:
    consumer: str
    bindings: Sequence[str]
    handler: BatchHandler
    # Unacknowledged messages on this queue; None takes LOJASYNC_PREFETCH.
    prefetch: int | None = None


class ServiceRuntime:
    """Owns a service's connections; `start` brings them up, `stop` closes them.

    The database must be reachable at start-up. The broker need not be: the runtime keeps
    connecting in the background, so a store serves reads and local edits while its link
    to the broker is down, and its outbox holds the edits until the link is back.
    """

    def __init__(self, name: str, database_url: str, settings: CommonSettings) -> None:
        self.name = name
        self.database_url = database_url
        self.settings = settings
        self.engine: AsyncEngine = create_engine(database_url)
        self.broker = create_broker(
            settings.broker_url,
            settings.namespace,
            prefetch=settings.prefetch,
            partitions=settings.partitions,
        )
        self.relay = OutboxRelay(
            self.engine,
            self.broker,
            name=name,
            batch_size=settings.outbox_batch,
            poll_seconds=settings.outbox_poll_seconds,
            gather_seconds=settings.outbox_gather_ms / 1000,
        )
        self.consumers: list[BatchConsumer] = []
        self._connector: asyncio.Task[None] | None = None
        self.broker_connected = asyncio.Event()

    async def prepare_database(self, tables: Sequence[Table]) -> None:
        await ensure_database(self.database_url)
        await create_tables(self.engine, [*tables, INBOX, OUTBOX])

    async def start(
        self,
        tables: Sequence[Table],
        subscriptions: Sequence[Subscription],
        *,
        broker_wait_seconds: float = 30.0,
    ) -> None:
        """Prepare the database, then connect to the broker and subscribe.

        Waits up to `broker_wait_seconds` for the broker; past that the service runs
        without it and keeps connecting in the background.
        """
        await self.prepare_database(tables)
        self.relay.start()
        self._connector = asyncio.create_task(
            self._connect_and_subscribe(subscriptions), name=f"broker connector {self.name}"
        )
        try:
            await asyncio.wait_for(
                asyncio.shield(self.broker_connected.wait()), broker_wait_seconds
            )
        except TimeoutError:
            logger.warning(
                "service started without the broker; it keeps connecting in the background",
                extra={"service": self.name},
            )
        freeze_startup_objects()
        logger.info("service started", extra={"service": self.name})

    async def _connect_and_subscribe(self, subscriptions: Sequence[Subscription]) -> None:
        attempt = 0
        while True:
            try:
                await self.broker.connect(attempts=1)
                break
            except (BrokerUnavailable, ConfigurationError) as exc:
                # A broker that rejects the exchanges (another partition count) is retried
                # too, so the service connects once the broker is fixed, without a restart.
                attempt += 1
                delay = min(10.0, 0.5 * attempt)
                if attempt == 1 or attempt % 30 == 0:
                    log = logger.error if isinstance(exc, ConfigurationError) else logger.warning
                    log(
                        "broker unavailable, retrying: %s",
                        exc,
                        extra={"service": self.name, "attempt": attempt},
                    )
                await asyncio.sleep(delay)

        for subscription in subscriptions:
            consumer = await self.broker.consume(
                subscription.consumer,
                subscription.bindings,
                subscription.handler,
                batch_max=self.settings.batch_max,
                batch_linger=self.settings.batch_linger_ms / 1000,
                health_check=self.database_healthy,
                prefetch=subscription.prefetch,
            )
            self.consumers.append(consumer)
        self.broker_connected.set()
        self.relay.wake()
        logger.info("broker connected", extra={"service": self.name, "attempts": attempt + 1})

    async def database_healthy(self) -> bool:
        return await database_ready(self.engine)

    @property
    def broker_ready(self) -> bool:
        return self.broker_connected.is_set() and self.broker.connected

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            try:
                await self._connector
            except (asyncio.CancelledError, Exception):
                pass
            self._connector = None
        await self.relay.stop()
        await self.broker.close()
        self.consumers.clear()
        await self.engine.dispose()
        logger.info("service stopped", extra={"service": self.name})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a transaction; after it commits, wake the outbox relay if it added events.

        Consumers that only apply decisions add no events, and waking the relay after each
        of their batches made it read an empty outbox every time.
        """
        with self.relay.writing():
            async with self.engine.begin() as connection:
                yield connection
                wrote_outbox = connection.info.pop(OUTBOX_WRITTEN, False)
        if wrote_outbox:
            self.relay.wake()
