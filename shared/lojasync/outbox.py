"""The outbox relay: publishes committed outbox rows in order, then deletes them.

Rows are read in id order, packed into messages of several events (`lojasync.packing`),
published with publisher confirms, and deleted only after the broker confirmed every
message of the round. A crash between publish and delete publishes those rows again on
restart; consumers skip them through their inbox.

One relay per database publishes at a time: on PostgreSQL the relay holds a
session-level advisory lock on a dedicated connection, so a second instance of the same
service waits as a standby instead of publishing the same rows out of order. A SQLite
database belongs to one process, which runs one relay, so no lock is taken there.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy import BigInteger, any_, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from lojasync.messaging import MessageBus, is_transient
from lojasync.packing import pack_events
from lojasync.persistence import OUTBOX, OutgoingEvent, array_parameter, is_sqlite_url
from lojasync.pg_array import array_text

logger = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: MessageBus,
        *,
        name: str,
        batch_size: int = 1000,
        poll_seconds: float = 0.5,
        gather_seconds: float = 0.0,
    ) -> None:
        self._engine = engine
        self._sqlite = is_sqlite_url(engine.url)
        self._bus = bus
        self._name = name
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._gather_seconds = gather_seconds
        self._wakeup = asyncio.Event()
        # Transactions of this service open now (see `writing`), and whether there are none.
        self._writers = 0
        self._no_writers = asyncio.Event()
        self._no_writers.set()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        # Built once: SQLAlchemy computes the cache key of every new statement object.
        self._read = (
            select(
                OUTBOX.c.id,
                OUTBOX.c.event_id,
                OUTBOX.c.routing_key,
                OUTBOX.c.event_type,
                OUTBOX.c.partition_key,
                OUTBOX.c.body,
            )
            .order_by(OUTBOX.c.id)
            .limit(batch_size)
        )
        # Exactly the published ids: a transaction that took a lower id may commit after a
        # round read the table, and its row must stay for the next round.
        published: ColumnElement[bool]
        if self._sqlite:
            published = OUTBOX.c.id.in_(bindparam("ids", expanding=True))
        else:
            published = OUTBOX.c.id == any_(array_parameter("ids", BigInteger))
        self._delete = delete(OUTBOX).where(published)

    def wake(self) -> None:
        """Ask the relay to look at the outbox now; writers call this after commit."""
        self._wakeup.set()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Mark a transaction of this service as open while the block runs.

        A woken relay waits up to `gather_seconds` for open transactions to end. The
        orchestrator's partitions decide one push's changes at the same time and commit a
        few milliseconds apart. The wait lets one round publish all their events, so a
        store receives one message for the push instead of one per commit.
        """
        self._writers += 1
        self._no_writers.clear()
        try:
            yield
        finally:
            self._writers -= 1
            if self._writers == 0:
                self._no_writers.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox relay {self._name}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        lock_id = zlib.crc32(f"lojasync outbox {self._name}".encode())
        attempt = 0
        while True:
            try:
                if self._sqlite:
                    attempt = 0
                    await self._relay_forever(None)
                async with self._engine.connect() as lock_connection:
                    try:
                        await self._hold_lock(lock_connection, lock_id)
                        attempt = 0
                        await self._relay_forever(lock_connection)
                    finally:
                        # The advisory lock belongs to the database session; closing the
                        # session releases it, where returning it to the pool would not.
                        await lock_connection.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = min(30.0, 0.2 * 2**attempt)
                log = logger.warning if is_transient(exc) else logger.error
                log(
                    "outbox relay failed, restarting: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={
                        "relay": self._name,
                        "attempt": attempt,
                        "delay_seconds": delay,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                # A wake-up (a commit, or the broker coming back) cuts the wait short.
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass

    async def _hold_lock(self, connection: AsyncConnection, lock_id: int) -> None:
        while True:
            acquired = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:lock_id)"), {"lock_id": lock_id}
            )
            await connection.commit()
            if acquired:
                logger.info("outbox relay active", extra={"relay": self._name})
                return
            await asyncio.sleep(self._poll_seconds * 4)

    async def _relay_forever(self, lock_connection: AsyncConnection | None) -> None:
        while True:
            # Cleared before the round reads the outbox, so that a commit's wake-up during
            # the round is kept and starts the next round at once. Cleared after the round,
            # such a wake-up was lost and its rows waited for the next poll.
            self._wakeup.clear()
            published = await self.relay_once()
            if published < self._batch_size:
                # asyncio.timeout, not wait_for: wait_for in Python 3.11 may swallow the
                # cancellation of `stop` when the event is set at the same moment.
                try:
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wakeup.wait()
                except TimeoutError:
                    # The lock connection must stay alive for the lock to hold.
                    if lock_connection is not None:
                        await lock_connection.execute(text("SELECT 1"))
                        await lock_connection.commit()
                    continue
                await self._gather()

    async def _gather(self) -> None:
        """Wait up to `gather_seconds` until no transaction of this service is open."""
        if self._gather_seconds <= 0 or self._writers == 0:
            return
        try:
            async with asyncio.timeout(self._gather_seconds):
                await self._no_writers.wait()
        except TimeoutError:
            pass

    @asynccontextmanager
    async def _single_statements(self) -> AsyncIterator[AsyncConnection]:
        """Open a connection for statements that are each atomic alone.

        On PostgreSQL it runs in autocommit mode, because BEGIN and COMMIT would add two
        round trips to each of the relay's read and delete. The caller still commits, which
        ends SQLite's implicit transaction.
        """
        async with self._engine.connect() as connection:
            if not self._sqlite:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    async def relay_once(self) -> int:
        """Publish one round of outbox rows; return how many were published."""
        async with self._single_statements() as connection:
            rows = (await connection.execute(self._read)).all()
            await connection.commit()
        if not rows:
            return 0

        events = [
            OutgoingEvent(event_id, routing_key, event_type, body, partition_key)
            for _, event_id, routing_key, event_type, partition_key, body in rows
        ]
        await self._bus.publish(pack_events(events, partitions=self._bus.partitions))

        ids = [row[0] for row in rows]
        async with self._single_statements() as connection:
            parameter = ids if self._sqlite else array_text(ids)
            await connection.execute(self._delete, {"ids": parameter})
            await connection.commit()
        self.published += len(rows)
        logger.debug("outbox published", extra={"relay": self._name, "messages": len(rows)})
        return len(rows)
