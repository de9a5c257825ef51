"""One suite of broker behaviour run against RabbitMQ (`Broker`) and `EmbeddedBroker`.

Services and `BatchConsumer` rely on these properties whichever broker runs under them.
The RabbitMQ variant needs the local server, while the embedded one needs only a
temporary file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from lojasync.dead_letters import list_dead_letters
from lojasync.embedded_broker import EmbeddedBroker
from lojasync.envelope import RECORD_CHANGED, Envelope
from lojasync.messaging import QUEUE_HEADER, REASON_HEADER, Broker, PermanentFailure
from lojasync.packing import BATCH_CONTENT_TYPE, pack_events, partition_of
from lojasync.persistence import OutgoingEvent
from tests.support import Collector, eventually

pytestmark = pytest.mark.integration

AnyBroker = Broker | EmbeddedBroker


class DeliveredMessage(Protocol):
    """What the suite reads from a delivery; aio-pika and embedded messages both have it."""

    body: bytes
    message_id: str | None
    routing_key: str | None
    type: str | None

    @property
    def headers(self) -> Any: ...

    @property
    def redelivered(self) -> bool | None: ...

    async def ack(self, multiple: bool = False) -> None: ...

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


class Connect(Protocol):
    """Opens one more connected broker on the test's server or file and namespace."""

    url: str
    namespace: str

    def __call__(self) -> Awaitable[AnyBroker]: ...


class _Connector:
    def __init__(self, kind: str, url: str, namespace: str) -> None:
        self.kind = kind
        self.url = url
        self.namespace = namespace
        self.opened: list[AnyBroker] = []

    async def __call__(self) -> AnyBroker:
        broker: AnyBroker
        if self.kind == "rabbitmq":
            broker = Broker(self.url, self.namespace)
        else:
            broker = EmbeddedBroker(self.url, self.namespace)
        await broker.connect(attempts=3, delay=0.5)
        self.opened.append(broker)
        return broker


@pytest.fixture(params=["rabbitmq", "embedded"])
async def connect(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Connector]:
    if request.param == "rabbitmq":
        url = request.getfixturevalue("broker_url")
        namespace = request.getfixturevalue("namespace")
    else:
        url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
        namespace = f"t-{uuid.uuid4().hex[:10]}"
    connector = _Connector(request.param, url, namespace)
    yield connector
    for broker in connector.opened:
        await broker.close()


async def consume_into(broker: AnyBroker, consumer: str, bindings: Sequence[str]) -> Collector:
    collector = Collector()
    queue = await broker.declare_queue(consumer, bindings)
    await queue.consume(collector, no_ack=False)  # type: ignore[arg-type]
    return collector


def event(
    event_id: str, routing_key: str, *, partition_key: str | None = None, body: bytes = b"{}"
) -> OutgoingEvent:
    return OutgoingEvent(
        event_id=event_id,
        routing_key=routing_key,
        event_type=RECORD_CHANGED,
        body=body,
        partition_key=partition_key,
    )


def envelope_event(event_id: str) -> OutgoingEvent:
    envelope = Envelope(id=event_id, source="tests", type=RECORD_CHANGED, entity="product")
    return event(event_id, "changed.product.erp", body=envelope.to_bytes())


async def depth_reaches(broker: AnyBroker, consumer: str, expected: int) -> None:
    await eventually(
        lambda: broker.queue_depth(consumer),
        until=lambda depth: depth == expected,
        timeout=10,
        what=f"{expected} ready messages in {consumer}",
    )


async def test_routing_with_wildcards(connect: Connect) -> None:
    broker = await connect()
    one_word = await consume_into(broker, "one-word", ["resolved.*.all"])
    tail = await consume_into(broker, "tail", ["resolved.product.#"])
    twice = await consume_into(broker, "twice", ["resolved.*.all", "resolved.#"])
    zero_words = await consume_into(broker, "zero-words", ["resolved.product.all.#"])

    await broker.publish(
        [
            event("all", "resolved.product.all"),
            event("store", "resolved.product.store.loja-1"),
            event("price", "resolved.price.all"),
            event("lost", "unbound.product.erp"),
        ]
    )
    await twice.wait_for(3)
    await tail.wait_for(2)
    await one_word.wait_for(2)
    await zero_words.wait_for(1)

    assert sorted(one_word.ids) == ["all", "price"]  # type: ignore[type-var]
    assert tail.ids == ["all", "store"]
    assert twice.ids == ["all", "store", "price"]
    assert zero_words.ids == ["all"]


async def test_partition_key_keeps_one_queue(connect: Connect) -> None:
    broker = await connect()

    await broker.publish(
        [event(f"e{i}", "changed.product.erp", partition_key="product:P1") for i in range(10)]
    )
    await eventually(
        lambda: _partition_depths(broker),
        until=lambda depths: sum(depths) == 10,
        timeout=10,
        what="10 messages in the orchestrator partitions",
    )

    depths = await _partition_depths(broker)
    assert depths[partition_of("product:P1", 4)] == 10
    assert sum(depths) == 10


async def _partition_depths(broker: AnyBroker) -> list[int]:
    return [await broker.queue_depth(f"orchestrator.{index}") for index in range(4)]


async def test_order_per_queue(connect: Connect) -> None:
    broker = await connect()
    collector = await consume_into(broker, "ordered", ["changed.#"])

    await broker.publish([event(f"e{i:03d}", "changed.product.erp") for i in range(100)])
    await broker.publish([event(f"f{i:03d}", "changed.product.erp") for i in range(20)])
    await collector.wait_for(120)

    expected = [f"e{i:03d}" for i in range(100)] + [f"f{i:03d}" for i in range(20)]
    assert collector.ids == expected


async def test_redelivery_after_nack(connect: Connect) -> None:
    broker = await connect()
    collector = await consume_into(broker, "nacked", ["changed.#"])
    await broker.publish([event("e0", "changed.product.erp")])
    await collector.wait_for(1)

    await collector.messages[0].nack(requeue=True)
    await collector.wait_for(2)

    assert collector.ids == ["e0", "e0"]
    assert collector.messages[1].redelivered
    assert collector.messages[1].body == collector.messages[0].body


async def test_redelivery_after_reconnect(connect: Connect) -> None:
    first = await connect()
    received = await consume_into(first, "unacked", ["changed.#"])
    await first.publish([event(f"e{i}", "changed.product.erp") for i in range(5)])
    await received.wait_for(5)
    await first.close()

    second = await connect()
    again = await consume_into(second, "unacked", ["changed.#"])
    await again.wait_for(5)

    assert again.ids == [f"e{i}" for i in range(5)]


async def test_multiple_ack(connect: Connect) -> None:
    first = await connect()
    received = await consume_into(first, "multiple", ["changed.#"])
    await first.publish([event(f"e{i}", "changed.product.erp") for i in range(5)])
    await received.wait_for(5)

    await received.messages[2].ack(multiple=True)
    await first.close()
    second = await connect()
    remaining = await consume_into(second, "multiple", ["changed.#"])
    await remaining.wait_for(2)

    assert remaining.ids == ["e3", "e4"]


async def test_dead_letter_with_reason(connect: Connect) -> None:
    broker = await connect()
    collector = await consume_into(broker, "poisoned", ["changed.#"])
    await broker.publish([event("bad", "changed.product.erp", partition_key="product:P1")])
    await collector.wait_for(1)
    queue_name = broker.queue_name("poisoned")

    await broker.dead_letter(collector.messages[0], queue_name, "cannot apply")  # type: ignore[arg-type]
    await depth_reaches(broker, "dead-letters", 1)
    letters = await list_dead_letters(connect.url, connect.namespace)

    assert await broker.queue_depth("poisoned") == 0
    assert len(letters) == 1
    assert letters[0].message_id == "bad"
    assert letters[0].reason == "cannot apply"
    assert letters[0].queue == queue_name
    assert letters[0].routing_key == "changed.product.erp"
    assert letters[0].event_type == RECORD_CHANGED
    assert letters[0].body_preview == "{}"


async def test_dead_letter_headers(connect: Connect) -> None:
    broker = await connect()
    collector = await consume_into(broker, "poisoned", ["changed.#"])
    inspector = await consume_into(broker, "dead-letters", [])
    await broker.publish([event("bad", "changed.product.erp")])
    await collector.wait_for(1)

    await broker.dead_letter(collector.messages[0], broker.queue_name("poisoned"), "why")  # type: ignore[arg-type]
    await inspector.wait_for(1)

    headers = inspector.messages[0].headers
    assert headers[REASON_HEADER] == "why"
    assert headers[QUEUE_HEADER] == broker.queue_name("poisoned")
    assert inspector.messages[0].routing_key == "changed.product.erp"
    assert inspector.messages[0].type == RECORD_CHANGED


async def test_batch_consumer_with_poison(connect: Connect) -> None:
    broker = await connect()
    handled: list[str] = []

    async def handler(envelopes: Sequence[Envelope]) -> None:
        ids = [envelope.id for envelope in envelopes]
        if "poison" in ids:
            raise PermanentFailure("poison", "rejected by the test handler")
        handled.extend(ids)

    await broker.declare_queue("batched", ["changed.#"])
    await broker.publish(
        [envelope_event(f"e{i}") for i in range(20)]
        + [envelope_event("poison")]
        + [event("not-json", "changed.product.erp", body=b"not json")]
        + [envelope_event(f"f{i}") for i in range(5)]
    )
    consumer = await broker.consume("batched", [], handler, batch_max=100)
    await depth_reaches(broker, "dead-letters", 2)
    await eventually(
        _constant(consumer),
        until=lambda batch: batch.processed == 25,
        timeout=10,
        what="25 processed events",
    )
    letters = {
        letter.message_id: letter
        for letter in await list_dead_letters(connect.url, connect.namespace)
    }

    assert handled == [f"e{i}" for i in range(20)] + [f"f{i}" for i in range(5)]
    assert letters["poison"].reason == "rejected by the test handler"
    assert letters["poison"].queue == broker.queue_name("batched")
    assert "not JSON" in letters["not-json"].reason
    await depth_reaches(broker, "batched", 0)


async def test_batch_consumer_with_packs(connect: Connect) -> None:
    broker = await connect()
    handled: list[str] = []

    async def handler(envelopes: Sequence[Envelope]) -> None:
        ids = [envelope.id for envelope in envelopes]
        if "poison" in ids:
            raise PermanentFailure("poison", "rejected by the test handler")
        handled.extend(ids)

    events = (
        [envelope_event(f"e{i}") for i in range(10)]
        + [envelope_event("poison")]
        + [event("unreadable", "changed.product.erp", body=b'{"id": "unreadable"}')]
        + [envelope_event(f"f{i}") for i in range(10)]
    )
    packs = pack_events(events, partitions=4, max_events=8)
    await broker.declare_queue("packed", ["changed.#"])
    await broker.publish(packs)
    consumer = await broker.consume("packed", [], handler, batch_max=100)
    await depth_reaches(broker, "dead-letters", 2)
    await eventually(
        _constant(consumer),
        until=lambda batch: batch.processed == 20,
        timeout=10,
        what="20 processed events",
    )
    letters = {
        letter.message_id: letter
        for letter in await list_dead_letters(connect.url, connect.namespace)
    }

    assert [pack.content_type for pack in packs] == [BATCH_CONTENT_TYPE] * 3
    assert handled == [f"e{i}" for i in range(10)] + [f"f{i}" for i in range(10)]
    unreadable = f"{packs[1].event_id}/3"
    assert set(letters) == {"poison", unreadable}
    assert letters["poison"].reason == "rejected by the test handler"
    assert letters["poison"].queue == broker.queue_name("packed")
    assert "not a valid CloudEvent" in letters[unreadable].reason
    await depth_reaches(broker, "packed", 0)


def _constant(value: Any) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        return value

    return probe


async def test_delete_queue_and_depth(connect: Connect) -> None:
    broker = await connect()
    await broker.declare_queue("doomed", ["changed.#"])
    await broker.publish([event(f"e{i}", "changed.product.erp") for i in range(3)])
    await depth_reaches(broker, "doomed", 3)

    await broker.delete_queue("doomed")
    await broker.declare_queue("doomed", ["changed.#"])

    assert await broker.queue_depth("doomed") == 0
