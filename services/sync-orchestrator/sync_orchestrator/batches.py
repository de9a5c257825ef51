"""Send `record.batch` events to one store, published directly with publisher confirms.

Bootstrap, replay and repair read the state or the event log in pages and hand each
page here. The messages do not go through the outbox: they are derived from committed
state, so a lost publish is made good by running the operation again, and the store
applies only newer revisions, so a repeated batch has no effect.
"""

from __future__ import annotations

from collections.abc import Sequence

from lojasync.batch import DEFAULT_BATCH_ITEMS, BatchItem, BatchPurpose, batch_queue, build_batch
from lojasync.embedded_broker import EmbeddedBroker
from lojasync.messaging import Broker, MessageBus

SOURCE = "lojasync/sync-orchestrator"
# Messages published before waiting for their confirms; bounds the memory of a send.
MESSAGES_IN_FLIGHT = 8


class BatchSender:
    """Splits items into messages of `items_per_message` and publishes them in order."""

    def __init__(
        self,
        broker: Broker | EmbeddedBroker,
        bus: MessageBus | None = None,
        *,
        items_per_message: int = DEFAULT_BATCH_ITEMS,
    ) -> None:
        self.broker = broker
        self.bus: MessageBus = bus or broker
        self.items_per_message = items_per_message

    async def prepare(self, store_id: str) -> None:
        """Declare the store's batch queue, so no batch is dropped before the store consumes."""
        spec = batch_queue(store_id)
        await self.broker.declare_queue(spec.consumer, spec.bindings)

    async def send(
        self,
        store_id: str,
        items: Sequence[BatchItem],
        *,
        purpose: BatchPurpose,
        operation_id: str,
        first_sequence: int,
    ) -> int:
        """Publish `items` as consecutive messages numbered from `first_sequence`.

        Returns the number of messages sent. Message ids derive from the operation id and
        the sequence number, so a page sent again after a resume has the same ids and the
        store's inbox skips it.
        """
        events = []
        sequence = first_sequence
        for start in range(0, len(items), self.items_per_message):
            chunk = items[start : start + self.items_per_message]
            events.append(
                build_batch(
                    store_id,
                    chunk,
                    purpose=purpose,
                    operation_id=operation_id,
                    sequence=sequence,
                    source=SOURCE,
                )
            )
            sequence += 1
        for start in range(0, len(events), MESSAGES_IN_FLIGHT):
            await self.bus.publish(events[start : start + MESSAGES_IN_FLIGHT])
        return len(events)

    async def send_serialized(
        self,
        store_id: str,
        chunks: Sequence[str],
        *,
        purpose: BatchPurpose,
        operation_id: str,
        first_sequence: int,
    ) -> int:
        """Publish one message per chunk, each a JSON array of items built by the database."""
        events = [
            build_batch(
                store_id,
                chunk,
                purpose=purpose,
                operation_id=operation_id,
                sequence=first_sequence + offset,
                source=SOURCE,
            )
            for offset, chunk in enumerate(chunks)
        ]
        for start in range(0, len(events), MESSAGES_IN_FLIGHT):
            await self.bus.publish(events[start : start + MESSAGES_IN_FLIGHT])
        return len(events)
