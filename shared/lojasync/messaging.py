"""RabbitMQ adapter: topology, confirmed publishing and a batching consumer.

Topology per namespace `ns`:
- `ns` (topic exchange): every lojasync event; routing keys are built in
  `lojasync.envelope` (`changed.<entity>.<origin>`, `resolved.<entity>.<target>`, ...).
- `ns.dead-letter` (fanout exchange) and its queue `ns.dead-letters`: messages that
  cannot be handled, with the reason in the `x-lojasync-reason` header.
- `ns.partitions` (headers exchange) and its alternate `ns.unpartitioned.<N>`: the
  orchestrator's input, split over the queues `ns.orchestrator.0` to `.<N-1>` (see
  `lojasync.topology`).
- One durable queue per other consumer, named by the service (`ns.store.<id>`,
  `ns.erp-gateway`).

The ack policy lives in one place, `BatchConsumer`. A batch is acked after its handler
committed. A message that cannot be parsed, or that the handler rejects for good, is
re-published to the dead-letter exchange with the reason and then acked. A transient
failure (database or broker down) is retried in place with capped exponential backoff, so
the messages behind it keep their order (see `BatchConsumer._call_with_retry` for when a
message that keeps failing is dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from lojasync.envelope import CONTENT_TYPE, Envelope
from lojasync.errors import (
    BrokerUnavailable,
    ConfigurationError,
    EnvelopeInvalid,
    LojasyncError,
    TransientError,
)
from lojasync.packing import BATCH_CONTENT_TYPE, PackInvalid, partition_of, unpack_objects
from lojasync.persistence import OutgoingEvent, is_transient_database_error
from lojasync.topology import (
    ERP_GATEWAY_QUEUE,
    LEGACY_CHANGES_EXCHANGE_SUFFIX,
    ORCHESTRATOR_INPUT_BINDINGS,
    PARTITION_HEADER,
    PARTITIONS_EXCHANGE_SUFFIX,
    UNPARTITIONED_EXCHANGE_SUFFIX,
    orchestrator_partition,
    store_queue,
)

logger = logging.getLogger(__name__)

REASON_HEADER = "x-lojasync-reason"
QUEUE_HEADER = "x-lojasync-queue"


class PermanentFailure(LojasyncError):
    """A handler's verdict that one event can never be applied; it goes to dead letters."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id}: {reason}")
        self.event_id = event_id
        self.reason = reason


BatchHandler = Callable[[Sequence[Envelope]], Awaitable[None]]
HealthCheck = Callable[[], Awaitable[bool]]


class MessageBus(Protocol):
    """The port services publish through; `Broker` implements it on RabbitMQ."""

    # The orchestrator's partition count, which the outbox relay packs events by.
    partitions: int

    async def publish(self, events: Sequence[OutgoingEvent]) -> None: ...


def is_transient(error: BaseException) -> bool:
    if isinstance(error, TransientError):
        return True
    if isinstance(error, aiormq.exceptions.AMQPConnectionError | ConnectionError):
        return True
    return is_transient_database_error(error)


def partition_header(partition_key: str, partitions: int) -> dict[str, Any]:
    """Return the header that routes an event with `partition_key` to its partition queue."""
    return {PARTITION_HEADER: str(partition_of(partition_key, partitions))}


class NamespaceNames:
    """Names of a namespace's exchanges and queues, the same on every broker."""

    namespace: str

    @property
    def exchange_name(self) -> str:
        return self.namespace

    @property
    def dead_letter_exchange_name(self) -> str:
        return f"{self.namespace}.dead-letter"

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def partitions_exchange_name(self) -> str:
        return f"{self.namespace}.{PARTITIONS_EXCHANGE_SUFFIX}"

    @property
    def legacy_changes_exchange_name(self) -> str:
        return f"{self.namespace}.{LEGACY_CHANGES_EXCHANGE_SUFFIX}"

    def unpartitioned_exchange_name(self, partitions: int) -> str:
        """Return the name of the partitions exchange's alternate exchange, which carries
        the partition count."""
        return f"{self.namespace}.{UNPARTITIONED_EXCHANGE_SUFFIX}.{partitions}"

    def queue_name(self, consumer: str) -> str:
        return f"{self.namespace}.{consumer}"


def dead_letter_headers(headers: Mapping[str, Any], queue: str, reason: str) -> dict[str, Any]:
    """Return a message's headers with the dead-letter reason and the queue it failed in."""
    copied = dict(headers)
    copied[REASON_HEADER] = reason[:2000]
    copied[QUEUE_HEADER] = queue
    return copied


def log_dead_lettered(
    message_id: str | None, routing_key: str | None, queue: str, reason: str
) -> None:
    logger.error(
        "message dead-lettered",
        extra={
            "message_id": message_id,
            "routing_key": routing_key,
            "queue": queue,
            "reason": reason,
        },
    )


@dataclass
class Broker(NamespaceNames):
    """One robust connection to RabbitMQ, with the namespace's exchanges declared."""

    url: str
    namespace: str
    prefetch: int = 1000
    partitions: int = 4
    connection: AbstractRobustConnection | None = None
    _publish_channel: AbstractChannel | None = None
    _exchange: AbstractExchange | None = None
    _dead_letter_exchange: AbstractExchange | None = None
    _consumers: list[BatchConsumer] = field(default_factory=list)
    _declared_stores: set[str] = field(default_factory=set)

    async def connect(self, *, attempts: int = 30, delay: float = 1.0) -> None:
        """Connect, retrying while the broker is not up yet, then declare the exchanges."""
        for attempt in range(1, attempts + 1):
            try:
                self.connection = await aio_pika.connect_robust(self.url)
                break
            except (aiormq.exceptions.AMQPConnectionError, OSError) as exc:
                if attempt == attempts:
                    raise BrokerUnavailable(
                        f"cannot connect to RabbitMQ at LOJASYNC_BROKER_URL after {attempts} "
                        f"attempts: {exc}; start the broker or fix the URL"
                    ) from exc
                logger.warning(
                    "broker not reachable, retrying",
                    extra={"attempt": attempt, "attempts": attempts, "error": str(exc)},
                )
                await asyncio.sleep(delay)

        assert self.connection is not None
        try:
            await self._declare_topology()
        except aiormq.exceptions.AMQPError as exc:
            await self.close()
            raise BrokerUnavailable(
                f"the connection to RabbitMQ failed while declaring the exchanges: {exc}"
            ) from exc
        except ConfigurationError:
            await self.close()
            raise

    async def _declare_topology(self) -> None:
        assert self.connection is not None
        self._publish_channel = await self.connection.channel(publisher_confirms=True)
        self._exchange = await self._publish_channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._dead_letter_exchange = await self._publish_channel.declare_exchange(
            self.dead_letter_exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_letters = await self._publish_channel.declare_queue(
            self.dead_letter_queue_name, durable=True
        )
        await dead_letters.bind(self._dead_letter_exchange)
        await self._declare_orchestrator_input()
        await self.declare_queue(ERP_GATEWAY_QUEUE.consumer, ERP_GATEWAY_QUEUE.bindings)
        self._publish_channel.return_callbacks.add(self._log_unroutable)

    async def _declare_orchestrator_input(self) -> None:
        """Declare the partitions exchange and the orchestrator's partition queues."""
        channel = self._require_channel()
        unpartitioned = await channel.declare_exchange(
            self.unpartitioned_exchange_name(self.partitions),
            aio_pika.ExchangeType.FANOUT,
            durable=True,
        )
        try:
            partitioned = await channel.declare_exchange(
                self.partitions_exchange_name,
                aio_pika.ExchangeType.HEADERS,
                durable=True,
                arguments={"alternate-exchange": unpartitioned.name},
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"LOJASYNC_PARTITIONS={self.partitions} differs from the partition count the "
                f"exchange {self.partitions_exchange_name} was declared with ({exc}); set the "
                "same LOJASYNC_PARTITIONS on every service. To change the count, stop the ERP "
                "gateway and the store registries, wait until the orchestrator's queues are "
                "empty, stop the orchestrator, delete that exchange (for example "
                f"`rabbitmqadmin delete exchange name={self.partitions_exchange_name}`, from "
                "the management plugin) and start every service with the new value"
            ) from exc
        for pattern in ORCHESTRATOR_INPUT_BINDINGS:
            await partitioned.bind(self.exchange_name, routing_key=pattern)
        # Deleting an exchange that does not exist succeeds in RabbitMQ.
        await channel.exchange_delete(self.legacy_changes_exchange_name)
        for index in range(self.partitions):
            queue = await channel.declare_queue(
                self.queue_name(orchestrator_partition(index)),
                durable=True,
                arguments={"x-queue-type": "classic", "x-single-active-consumer": True},
            )
            await queue.bind(
                partitioned,
                routing_key="",
                arguments={"x-match": "all", PARTITION_HEADER: str(index)},
            )
            if index == 0:
                await queue.bind(unpartitioned)

    def _log_unroutable(self, channel: object, message: AbstractIncomingMessage) -> None:
        logger.warning(
            "message unroutable: no queue is bound to its routing key, so the broker dropped it",
            extra={"message_id": message.message_id, "routing_key": message.routing_key},
        )

    async def ensure_store_queue(self, store_id: str) -> None:
        """Declare a store's queue once per process, before anything is routed to it."""
        if store_id in self._declared_stores:
            return
        spec = store_queue(store_id)
        await self.declare_queue(spec.consumer, spec.bindings)
        self._declared_stores.add(store_id)

    @property
    def connected(self) -> bool:
        """Whether the connection is up now; False while it reconnects after a fault."""
        return self.connection is not None and self.connection.connected.is_set()

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop the consumers and close the connection, giving up after `timeout` seconds
        per step: while the link is down, a cancel or close would wait for a reconnect."""
        for consumer in self._consumers:
            await consumer.stop(timeout=timeout)
        self._consumers.clear()
        if self.connection is not None:
            try:
                await asyncio.wait_for(self.connection.close(), timeout)
            except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError) as exc:
                logger.warning("closing the broker connection failed: %s", exc)
            self.connection = None

    async def declare_queue(self, consumer: str, bindings: Sequence[str]) -> AbstractQueue:
        """Declare a durable queue for `consumer` bound to the exchange with `bindings`."""
        channel = self._require_channel()
        queue = await channel.declare_queue(
            self.queue_name(consumer),
            durable=True,
            arguments={"x-queue-type": "classic"},
        )
        for pattern in bindings:
            await queue.bind(self.exchange_name, routing_key=pattern)
        return queue

    async def delete_queue(self, consumer: str) -> None:
        """Delete `consumer`'s queue with its bindings and messages."""
        async with await self._require_connection().channel() as channel:
            await channel.queue_delete(self.queue_name(consumer))

    async def queue_depth(self, consumer: str) -> int:
        """Count the messages in `consumer`'s queue ready for delivery, not the unacked ones."""
        # A passive declare of a missing queue closes its channel, so it gets its own.
        async with await self._require_connection().channel() as channel:
            queue = await channel.declare_queue(self.queue_name(consumer), passive=True)
            return queue.declaration_result.message_count or 0

    async def publish(self, events: Sequence[OutgoingEvent]) -> None:
        """Publish persistent messages in order and wait until the broker confirmed all.

        The channel's publish lock is FIFO, so the messages go out in list order.
        """
        exchange = self._require_exchange()
        messages = [
            (
                aio_pika.Message(
                    event.body,
                    headers=partition_header(event.partition_key, self.partitions)
                    if event.partition_key
                    else None,
                    message_id=event.event_id,
                    type=event.event_type,
                    content_type=event.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                event.routing_key,
            )
            for event in events
        ]
        try:
            await asyncio.gather(
                *(
                    exchange.publish(message, routing_key=key, mandatory=True)
                    for message, key in messages
                )
            )
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError) as exc:
            raise BrokerUnavailable(f"publishing {len(messages)} messages failed: {exc}") from exc

    async def dead_letter(self, message: AbstractIncomingMessage, queue: str, reason: str) -> None:
        """Copy a message to the dead-letter exchange with the reason, then ack the original."""
        exchange = self._dead_letter_exchange
        if exchange is None:
            raise BrokerUnavailable("Broker.dead_letter called before Broker.connect")
        headers = dead_letter_headers(message.headers or {}, queue, reason)
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(copy, routing_key=message.routing_key or "")
        await message.ack()
        log_dead_lettered(message.message_id, message.routing_key, queue, reason)

    async def dead_letter_event(
        self,
        message: AbstractIncomingMessage,
        body: bytes,
        *,
        event_id: str | None,
        event_type: str | None,
        queue: str,
        reason: str,
    ) -> None:
        """Copy one event of a pack to the dead-letter exchange with the reason; the pack
        itself is not acked here."""
        exchange = self._dead_letter_exchange
        if exchange is None:
            raise BrokerUnavailable("Broker.dead_letter_event called before Broker.connect")
        headers = dead_letter_headers(message.headers or {}, queue, reason)
        copy = aio_pika.Message(
            body,
            headers=headers,
            message_id=event_id,
            type=event_type,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(copy, routing_key=message.routing_key or "")
        log_dead_lettered(event_id, message.routing_key, queue, reason)

    async def consume(
        self,
        consumer: str,
        bindings: Sequence[str],
        handler: BatchHandler,
        *,
        batch_max: int = 500,
        batch_linger: float = 0.0,
        max_attempts: int = 12,
        health_check: HealthCheck | None = None,
        prefetch: int | None = None,
    ) -> BatchConsumer:
        """Consume `consumer`'s queue in batches; with no `bindings` the queue must exist.

        `prefetch` overrides the broker's prefetch for this queue's channel; see
        BatchConsumer for `batch_linger`.
        """
        if bindings:
            await self.declare_queue(consumer, bindings)
        channel = await self._require_connection().channel()
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        queue = await channel.get_queue(self.queue_name(consumer))
        batch_consumer = BatchConsumer(
            self,
            queue,
            handler,
            batch_max=batch_max,
            batch_linger=batch_linger,
            max_attempts=max_attempts,
            health_check=health_check,
        )
        await batch_consumer.start()
        self._consumers.append(batch_consumer)
        return batch_consumer

    def _require_connection(self) -> AbstractRobustConnection:
        if self.connection is None:
            raise BrokerUnavailable("the broker is not connected; call Broker.connect first")
        return self.connection

    def _require_channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise BrokerUnavailable("the broker is not connected; call Broker.connect first")
        return self._publish_channel

    def _require_exchange(self) -> AbstractExchange:
        if self._exchange is None:
            raise BrokerUnavailable("the broker is not connected; call Broker.connect first")
        return self._exchange


# A delivered message and the events it carries: one, or several for a pack.
_Delivery = tuple[AbstractIncomingMessage, list[Envelope]]


def _first_copies(envelopes: Iterable[Envelope]) -> list[Envelope]:
    """Return the envelopes without repeated event ids, keeping each id's first copy.

    A relay that published a round and lost its connection before deleting the rows
    publishes the same events again, so one batch can hold an event twice. Handlers
    record each id in their inbox once, so they would apply both copies.
    """
    seen: set[str] = set()
    first = []
    for envelope in envelopes:
        if envelope.id not in seen:
            seen.add(envelope.id)
            first.append(envelope)
    return first


class BatchConsumer:
    """Feeds a queue's events to a handler in batches of about `batch_max` events.

    Deliveries go into a buffer bounded by the channel's prefetch; the worker takes
    whatever is buffered (at least one message) until the batch holds `batch_max` events,
    unpacks packs (see `lojasync.packing`), hands the events to the handler in one call,
    and acks the batch with one `multiple` ack after the handler returned.

    With `batch_linger` (seconds), a batch that ends smaller than `batch_max` because the
    buffer ran dry waits that long once and takes what arrived meanwhile. A publisher's
    round of messages reaches the consumer over a few milliseconds. Without the wait the
    first of them made a batch of its own, and every batch costs a transaction.
    """

    def __init__(
        self,
        broker: Broker,
        queue: AbstractQueue,
        handler: BatchHandler,
        *,
        batch_max: int,
        batch_linger: float = 0.0,
        max_attempts: int = 12,
        health_check: HealthCheck | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._batch_max = batch_max
        self._batch_linger = batch_linger
        self._max_attempts = max_attempts
        self._health_check = health_check
        self._max_backoff = max_backoff
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._consumer_tag: str | None = None
        self.processed = 0

    async def start(self) -> None:
        self._consumer_tag = await self._queue.consume(self._buffer.put, no_ack=False)
        self._worker = asyncio.create_task(self._run(), name=f"consumer {self._queue.name}")

    async def stop(self, *, timeout: float = 5.0) -> None:
        if self._consumer_tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), timeout)
            except Exception as exc:  # the channel may be closed or reconnecting
                logger.debug("cancel consumer failed", extra={"error": str(exc)})
            self._consumer_tag = None
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def _run(self) -> None:
        while True:
            units: list[_Delivery] = []
            events = 0
            message = await self._buffer.get()
            lingered = self._batch_linger <= 0
            while True:
                envelopes = await self._parse(message)
                if envelopes is not None:
                    units.append((message, envelopes))
                    events += len(envelopes)
                if events >= self._batch_max:
                    break
                if self._buffer.empty() and not lingered:
                    lingered = True
                    await asyncio.sleep(self._batch_linger)
                if self._buffer.empty():
                    break
                message = self._buffer.get_nowait()
            if units:
                await self._handle(units)

    async def _parse(self, message: AbstractIncomingMessage) -> list[Envelope] | None:
        """Return the events of a message, one or a pack (see `lojasync.packing`).

        A message that cannot be read is dead-lettered and None returned. An event of a
        pack that cannot be read is dead-lettered alone, and the pack's other events
        are returned.
        """
        if message.content_type != BATCH_CONTENT_TYPE:
            try:
                return [Envelope.from_bytes(message.body)]
            except EnvelopeInvalid as exc:
                await self._dead_letter(message, str(exc))
                return None
        try:
            objects = unpack_objects(message.body)
        except PackInvalid as exc:
            await self._dead_letter(message, str(exc))
            return None
        envelopes = []
        for index, raw in enumerate(objects):
            try:
                envelopes.append(Envelope.from_object(raw))
            except EnvelopeInvalid as exc:
                # Its own id may be missing, so the copy is named by the pack and position.
                copy_id = f"{message.message_id}/{index}"
                await self._dead_letter_event(message, orjson.dumps(raw), copy_id, None, str(exc))
        return envelopes

    async def _handle(self, units: list[_Delivery]) -> None:
        envelopes = _first_copies(
            envelope for _, unit_envelopes in units for envelope in unit_envelopes
        )
        logger.debug(
            "batch received",
            extra={"queue": self._queue.name, "messages": len(units), "events": len(envelopes)},
        )
        if envelopes:
            try:
                await self._call_with_retry(envelopes)
            except PermanentFailure:
                await self._handle_one_by_one(units)
                return
        await self._ack(units[-1][0], multiple=True)
        self.processed += len(envelopes)

    async def _handle_one_by_one(self, units: list[_Delivery]) -> None:
        for message, envelopes in units:
            packed = message.content_type == BATCH_CONTENT_TYPE
            for envelope in envelopes:
                try:
                    await self._call_with_retry([envelope])
                except PermanentFailure as failure:
                    if packed:
                        await self._dead_letter_event(
                            message, envelope.to_bytes(), envelope.id, envelope.type, failure.reason
                        )
                        continue
                    await self._dead_letter(message, failure.reason)
                    break
                self.processed += 1
            else:
                await self._ack(message, multiple=False)

    async def _call_with_retry(self, envelopes: list[Envelope]) -> None:
        """Call the handler, retrying transient failures with capped exponential backoff.

        A transient failure counts as an attempt only while the health check passes: while
        the database is down every message fails and none is to blame, so the consumer
        waits for it without limit. A batch that keeps failing while the dependencies are
        healthy is retried one message at a time, and a message that fails `max_attempts`
        times on its own becomes a PermanentFailure and goes to the dead letters.
        """
        attempts = 0
        retries = 0
        while True:
            try:
                await self._handler(envelopes)
                return
            except PermanentFailure:
                raise
            except Exception as exc:
                healthy = await self._dependencies_healthy()
                # An error while the database is unreachable says nothing about the message,
                # whatever its type, so it is retried like any transient failure.
                if healthy and not is_transient(exc):
                    if len(envelopes) == 1:
                        logger.exception(
                            "handler failed",
                            extra={"event_id": envelopes[0].id, "queue": self._queue.name},
                        )
                    raise PermanentFailure(envelopes[0].id, f"{type(exc).__name__}: {exc}") from exc
                retries += 1
                if healthy:
                    attempts += 1
                if attempts >= self._max_attempts:
                    raise PermanentFailure(
                        envelopes[0].id,
                        f"failed {attempts} times while the database was reachable: "
                        f"{type(exc).__name__}: {exc}",
                    ) from exc
                delay = min(self._max_backoff, 0.1 * 2**retries)
                logger.warning(
                    "transient failure, retrying: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={
                        "queue": self._queue.name,
                        "attempt": attempts,
                        "retry": retries,
                        "delay_seconds": delay,
                        "events": len(envelopes),
                    },
                )
                await asyncio.sleep(delay)

    async def _dependencies_healthy(self) -> bool:
        if self._health_check is None:
            return True
        try:
            return await self._health_check()
        except Exception:
            return False

    async def _ack(self, message: AbstractIncomingMessage, *, multiple: bool) -> None:
        try:
            await message.ack(multiple=multiple)
        except Exception as exc:
            # The channel closed under us; the broker redelivers, and the inbox skips them.
            logger.warning(
                "ack failed; the broker will redeliver",
                extra={"queue": self._queue.name, "error": f"{type(exc).__name__}: {exc}"},
            )

    async def _dead_letter_event(
        self,
        message: AbstractIncomingMessage,
        body: bytes,
        event_id: str,
        event_type: str | None,
        reason: str,
    ) -> None:
        """Dead-letter one event of a pack; the pack is acked once all its events are done.

        If this fails, the error propagates and the pack is delivered again later, so the
        event is not lost (its good neighbours are then skipped through the inbox).
        """
        await self._broker.dead_letter_event(
            message,
            body,
            event_id=event_id,
            event_type=event_type,
            queue=self._queue.name,
            reason=reason,
        )

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        try:
            await self._broker.dead_letter(message, self._queue.name, reason)
        except Exception as exc:
            logger.error(
                "dead-lettering failed; leaving the message for redelivery",
                extra={"message_id": message.message_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            await message.nack(requeue=True)
