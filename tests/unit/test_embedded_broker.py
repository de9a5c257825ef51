"""The embedded broker on temporary SQLite files: routing, durability, acks, consumers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from lojasync.dead_letters import list_dead_letters, republish_dead_letters
from lojasync.embedded_broker import (
    DeliveryNotOutstanding,
    EmbeddedBroker,
    EmbeddedMessage,
    QueueNotFound,
    path_from_url,
    topic_matches,
)
from lojasync.envelope import RECORD_CHANGED, Envelope
from lojasync.errors import BrokerUnavailable, ConfigurationError
from lojasync.messaging import QUEUE_HEADER, REASON_HEADER, PermanentFailure
from lojasync.packing import partition_of
from lojasync.persistence import OutgoingEvent
from lojasync.topology import PARTITION_HEADER
from tests.support import Collector, eventually

NAMESPACE = "unit"


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


def envelope_event(event_id: str, routing_key: str) -> OutgoingEvent:
    envelope = Envelope(id=event_id, source="tests", type=RECORD_CHANGED, entity="product")
    return event(event_id, routing_key, body=envelope.to_bytes())


async def settle() -> None:
    """Let the dispatcher tasks run; deliveries in one process need no real wait."""
    for _ in range(20):
        await asyncio.sleep(0)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def stored_count(path: Path, queue: str) -> int:
    with sqlite3.connect(path) as connection:
        ((count,),) = connection.execute(
            "SELECT count(*) FROM messages WHERE queue = ?", (queue,)
        ).fetchall()
    return int(count)


def file_exists(path: Path) -> bool:
    return path.exists()


@pytest.fixture
def broker_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "broker.sqlite3"


@pytest.fixture
async def broker(broker_path: Path) -> AsyncIterator[EmbeddedBroker]:
    opened = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await opened.connect(attempts=1)
    yield opened
    await opened.close()


TOPIC_CASES = [
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("a.#", "", False),
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("#.b", "x.y.b", True),
    ("#.b", "a.b.c", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.#.c", "a.x.y", False),
    ("#.#", "", True),
    ("#.a.#", "a", True),
    ("#.a.#", "x.a.y", True),
    ("#.a.#", "x.y", False),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("a.b", "a.b", True),
    ("a.b", "a.bb", False),
    ("a.b", "a.b.c", False),
    ("resolved.*.all", "resolved.product.all", True),
    ("resolved.*.store.loja-1", "resolved.product.store.loja-1", True),
    ("resolved.*.store.loja-1", "resolved.product.store.loja-10", False),
]


@pytest.mark.parametrize(("pattern", "routing_key", "expected"), TOPIC_CASES)
def test_topic_matching(pattern: str, routing_key: str, expected: bool) -> None:
    assert topic_matches(pattern, routing_key) is expected


def test_url_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert path_from_url("sqlite:///var/broker.sqlite3") == tmp_path / "var" / "broker.sqlite3"
    assert path_from_url("sqlite:////srv/broker.sqlite3") == Path("/srv/broker.sqlite3")


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/", "sqlite:///", "sqlite:x"])
def test_url_rejects_other_schemes(url: str) -> None:
    with pytest.raises(ConfigurationError, match="LOJASYNC_BROKER_URL"):
        path_from_url(url)


async def test_connect_declares_topology(broker: EmbeddedBroker, broker_path: Path) -> None:
    assert file_exists(broker_path)
    assert broker.connected
    for consumer in ("dead-letters", "erp-gateway", *(f"orchestrator.{i}" for i in range(4))):
        assert await broker.queue_depth(consumer) == 0, consumer
    with pytest.raises(QueueNotFound):
        await broker.queue_depth("orchestrator.4")


async def test_publish_before_connect_fails(broker_path: Path) -> None:
    unconnected = EmbeddedBroker(url_of(broker_path), NAMESPACE)

    with pytest.raises(BrokerUnavailable, match="connect"):
        await unconnected.publish([event("e1", "changed.product.erp")])


async def test_routing_by_topic(broker: EmbeddedBroker) -> None:
    await broker.declare_queue("one-word", ["resolved.*.all"])
    await broker.declare_queue("tail", ["resolved.product.#"])
    await broker.declare_queue("both", ["resolved.*.all", "resolved.#"])

    await broker.publish(
        [
            event("all", "resolved.product.all"),
            event("store", "resolved.product.store.loja-1"),
            event("price", "resolved.price.store.loja-1"),
        ]
    )

    assert await broker.queue_depth("one-word") == 1
    assert await broker.queue_depth("tail") == 2
    assert await broker.queue_depth("both") == 3  # "all" matches twice, stored once
    assert await broker.queue_depth("erp-gateway") == 0


async def test_unroutable_message_dropped(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lojasync.embedded_broker")

    await broker.publish([event("lost", "nobody.listens.here")])

    assert "unroutable" in caplog.text
    assert [r.message_id for r in caplog.records if hasattr(r, "message_id")] == ["lost"]


async def test_partition_key_picks_one_partition(broker: EmbeddedBroker) -> None:
    key = next(f"product:P{n}" for n in range(100) if partition_of(f"product:P{n}", 4) == 2)
    events = [event(f"e{i}", "changed.product.erp", partition_key=key) for i in range(6)]
    events += [event(f"n{i}", "announced.store.loja-1") for i in range(3)]

    await broker.publish(events)

    # The three without a partition header go to partition 0.
    depths = [await broker.queue_depth(f"orchestrator.{i}") for i in range(4)]
    assert depths == [3, 0, 6, 0]


async def test_legacy_hash_exchange_removed(broker_path: Path) -> None:
    # Files of earlier versions route changes through a consistent-hash exchange as well.
    first = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await first.connect()
    await first.close()
    legacy = f"{NAMESPACE}.changes"
    with sqlite3.connect(broker_path) as connection:
        connection.execute(
            "INSERT INTO exchanges (name, kind, hash_header) VALUES (?, 'x-consistent-hash', ?)",
            (legacy, PARTITION_HEADER),
        )
        connection.execute(
            "INSERT INTO bindings (exchange, destination, to_exchange, pattern) "
            "VALUES (?, ?, 1, 'changed.#')",
            (NAMESPACE, legacy),
        )
        for index in range(4):
            connection.execute(
                "INSERT INTO bindings (exchange, destination, to_exchange, pattern) "
                "VALUES (?, ?, 0, '1')",
                (legacy, f"{NAMESPACE}.orchestrator.{index}"),
            )

    upgraded = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await upgraded.connect()
    try:
        await upgraded.publish([event("e1", "changed.product.erp", partition_key="product:P1")])
        depths = [await upgraded.queue_depth(f"orchestrator.{i}") for i in range(4)]
    finally:
        await upgraded.close()

    assert depths[partition_of("product:P1", 4)] == 1
    assert sum(depths) == 1
    with sqlite3.connect(broker_path) as connection:
        left = connection.execute(
            "SELECT count(*) FROM bindings WHERE exchange = ? OR destination = ?", (legacy, legacy)
        ).fetchone()
    assert left == (0,)


async def test_partition_keys_spread(broker: EmbeddedBroker) -> None:
    await broker.publish(
        [event(f"e{i}", "changed.product.erp", partition_key=f"product:P{i}") for i in range(64)]
    )

    depths = [await broker.queue_depth(f"orchestrator.{i}") for i in range(4)]
    assert sum(depths) == 64
    assert all(depth > 0 for depth in depths)


async def test_order_preserved_per_queue(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("ordered", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)

    await broker.publish([event(f"e{i:03d}", "changed.product.erp") for i in range(50)])
    await broker.publish([event(f"f{i:03d}", "changed.product.erp") for i in range(50)])
    await collector.wait_for(100)

    expected = [f"e{i:03d}" for i in range(50)] + [f"f{i:03d}" for i in range(50)]
    assert collector.ids == expected


async def test_publish_list_is_one_transaction(broker: EmbeddedBroker) -> None:
    await broker.declare_queue("atomic", ["changed.#"])
    broken = OutgoingEvent("bad", "changed.product.erp", RECORD_CHANGED, object())  # type: ignore[arg-type]

    with pytest.raises(sqlite3.Error):
        await broker.publish([event("good", "changed.product.erp"), broken])

    assert await broker.queue_depth("atomic") == 0


async def test_delivery_is_prompt(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("prompt", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await settle()

    await broker.publish([event("e1", "changed.product.erp")])
    await settle()

    assert collector.ids == ["e1"]


async def test_messages_survive_restart(broker_path: Path) -> None:
    first = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await first.connect(attempts=1)
    await first.declare_queue("durable", ["changed.#"])
    await first.publish([event(f"e{i}", "changed.product.erp") for i in range(5)])
    await first.close()

    second = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await second.connect(attempts=1)
    collector = Collector()
    await (await second.declare_queue("durable", [])).consume(collector)
    await collector.wait_for(5)
    await second.close()

    assert collector.ids == [f"e{i}" for i in range(5)]


async def test_unacked_redelivered_after_restart(broker_path: Path) -> None:
    first = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await first.connect(attempts=1)
    queue = await first.declare_queue("unacked", ["changed.#"])
    received = Collector()
    await queue.consume(received)
    await first.publish([event(f"e{i}", "changed.product.erp") for i in range(4)])
    await received.wait_for(4)
    await received.messages[0].ack()
    await first.close()

    second = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await second.connect(attempts=1)
    again = Collector()
    await (await second.declare_queue("unacked", [])).consume(again)
    await again.wait_for(3)
    await settle()
    await second.close()

    assert again.ids == ["e1", "e2", "e3"]


async def test_nack_requeues_at_head(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("nacked", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event(f"e{i}", "changed.product.erp") for i in range(3)])
    await collector.wait_for(3)

    await collector.messages[1].nack(requeue=True)
    await collector.wait_for(4)

    assert collector.ids == ["e0", "e1", "e2", "e1"]
    assert collector.messages[3].redelivered
    assert not collector.messages[1].redelivered


async def test_nack_without_requeue_drops(broker: EmbeddedBroker, broker_path: Path) -> None:
    queue = await broker.declare_queue("dropped", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event("e0", "changed.product.erp")])
    await collector.wait_for(1)

    await collector.messages[0].nack(requeue=False)
    await settle()

    assert stored_count(broker_path, f"{NAMESPACE}.dropped") == 0
    assert collector.ids == ["e0"]


async def test_ack_deletes_from_file(broker: EmbeddedBroker, broker_path: Path) -> None:
    queue = await broker.declare_queue("acked", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event(f"e{i}", "changed.product.erp") for i in range(3)])
    await collector.wait_for(3)

    await collector.messages[1].ack()

    assert stored_count(broker_path, f"{NAMESPACE}.acked") == 2


async def test_ack_multiple_settles_earlier(broker: EmbeddedBroker, broker_path: Path) -> None:
    queue = await broker.declare_queue("multiple", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event(f"e{i}", "changed.product.erp") for i in range(5)])
    await collector.wait_for(5)

    await collector.messages[2].ack(multiple=True)

    assert stored_count(broker_path, f"{NAMESPACE}.multiple") == 2
    with pytest.raises(DeliveryNotOutstanding):
        await collector.messages[0].ack()
    await collector.messages[4].ack()
    assert stored_count(broker_path, f"{NAMESPACE}.multiple") == 1


async def test_double_ack_rejected(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("double", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event("e0", "changed.product.erp")])
    await collector.wait_for(1)
    await collector.messages[0].ack()

    with pytest.raises(DeliveryNotOutstanding):
        await collector.messages[0].ack()


async def test_prefetch_limits_unacked(broker_path: Path) -> None:
    limited = EmbeddedBroker(url_of(broker_path), NAMESPACE, prefetch=3)
    await limited.connect(attempts=1)
    queue = await limited.declare_queue("limited", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await limited.publish([event(f"e{i}", "changed.product.erp") for i in range(10)])
    await settle()
    delivered_before_ack = len(collector.messages)
    ready_before_ack = await limited.queue_depth("limited")

    await collector.messages[0].ack()
    await settle()
    delivered_after_one_ack = len(collector.messages)

    await collector.messages[3].ack(multiple=True)
    await settle()
    delivered_after_multiple_ack = len(collector.messages)
    await limited.close()

    assert delivered_before_ack == 3
    assert ready_before_ack == 7
    assert delivered_after_one_ack == 4
    assert delivered_after_multiple_ack == 7


async def test_large_backlog_read_in_pages(broker_path: Path) -> None:
    paged = EmbeddedBroker(url_of(broker_path), NAMESPACE, prefetch=0)
    await paged.connect(attempts=1)
    queue = await paged.declare_queue("backlog", ["changed.#"])
    await paged.publish([event(f"e{i:04d}", "changed.product.erp") for i in range(1200)])
    collector = Collector()

    await queue.consume(collector)
    await collector.wait_for(1200)
    await paged.close()

    assert collector.ids == [f"e{i:04d}" for i in range(1200)]


async def test_single_active_consumer_takeover(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("single", ["changed.#"])
    first, second = Collector(), Collector()
    first_tag = await queue.consume(first)
    await queue.consume(second)
    await broker.publish([event(f"e{i}", "changed.product.erp") for i in range(4)])
    await first.wait_for(4)
    await first.messages[0].ack()
    await settle()
    assert second.messages == []

    await queue.cancel(first_tag)
    await second.wait_for(3)
    await broker.publish([event("e4", "changed.product.erp")])
    await second.wait_for(4)

    assert second.ids == ["e1", "e2", "e3", "e4"]
    assert all(message.redelivered for message in second.messages[:3])
    with pytest.raises(DeliveryNotOutstanding):
        await first.messages[1].ack()


async def test_dead_letter_copies_and_acks(broker: EmbeddedBroker, broker_path: Path) -> None:
    queue = await broker.declare_queue("poisoned", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event("bad", "changed.product.erp", partition_key="product:P1")])
    await collector.wait_for(1)

    await broker.dead_letter(collector.messages[0], queue.name, "cannot apply")

    assert stored_count(broker_path, queue.name) == 0
    letters = await list_dead_letters(url_of(broker_path), NAMESPACE)
    assert len(letters) == 1
    assert letters[0].message_id == "bad"
    assert letters[0].reason == "cannot apply"
    assert letters[0].queue == queue.name
    assert letters[0].routing_key == "changed.product.erp"
    assert letters[0].event_type == RECORD_CHANGED
    with sqlite3.connect(broker_path) as connection:
        ((headers,),) = connection.execute(
            "SELECT headers FROM messages WHERE queue = ?", (broker.dead_letter_queue_name,)
        ).fetchall()
    assert REASON_HEADER.encode() in headers
    assert QUEUE_HEADER.encode() in headers
    assert PARTITION_HEADER.encode() in headers


async def test_republish_returns_to_queue(broker: EmbeddedBroker, broker_path: Path) -> None:
    queue = await broker.declare_queue("retried", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event("bad", "changed.product.erp"), event("ok", "changed.product.erp")])
    await collector.wait_for(2)
    await broker.dead_letter(collector.messages[0], queue.name, "cannot apply")
    await collector.messages[1].ack()

    result = await republish_dead_letters(url_of(broker_path), NAMESPACE, {"bad", "missing"})
    await collector.wait_for(3)

    assert result.republished == ["bad"]
    assert result.not_found == ["missing"]
    assert await list_dead_letters(url_of(broker_path), NAMESPACE) == []
    assert collector.ids == ["bad", "ok", "bad"]
    assert REASON_HEADER not in collector.messages[2].headers


async def test_dead_letter_commands_need_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await list_dead_letters(url_of(tmp_path / "missing.sqlite3"), NAMESPACE)

    assert not file_exists(tmp_path / "missing.sqlite3")


REPUBLISH_SCRIPT = """
import asyncio, sys
from lojasync.dead_letters import republish_dead_letters
result = asyncio.run(republish_dead_letters(sys.argv[1], sys.argv[2], None))
print(",".join(result.republished))
"""


async def test_republish_from_other_process_wakes_consumer(
    broker: EmbeddedBroker, broker_path: Path
) -> None:
    queue = await broker.declare_queue("woken", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await broker.publish([event("bad", "changed.product.erp")])
    await collector.wait_for(1)
    await broker.dead_letter(collector.messages[0], queue.name, "cannot apply")

    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", REPUBLISH_SCRIPT, url_of(broker_path), NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "bad"
    await collector.wait_for(2)

    assert collector.ids == ["bad", "bad"]


async def test_batch_consumer_dead_letters_permanent_failure(
    broker: EmbeddedBroker, broker_path: Path
) -> None:
    handled: list[list[str]] = []

    async def handler(envelopes: Sequence[Envelope]) -> None:
        ids = [envelope.id for envelope in envelopes]
        if "poison" in ids:
            raise PermanentFailure("poison", "rejected by the test handler")
        handled.append(ids)

    await broker.declare_queue("batched", ["changed.#"])
    await broker.publish(
        [envelope_event(f"e{i}", "changed.product.erp") for i in range(5)]
        + [envelope_event("poison", "changed.product.erp")]
        + [event("not-json", "changed.product.erp", body=b"not json")]
    )
    consumer = await broker.consume("batched", [], handler, batch_max=500)
    await eventually(
        lambda: broker.queue_depth("dead-letters"), until=lambda depth: depth == 2, timeout=5
    )
    await eventually(
        lambda: _value(stored_count(broker_path, f"{NAMESPACE}.batched")),
        until=lambda n: n == 0,
        timeout=5,
    )

    assert consumer.processed == 5
    assert sorted(event_id for batch in handled for event_id in batch) == [
        f"e{i}" for i in range(5)
    ]
    letters = {
        letter.message_id: letter
        for letter in await list_dead_letters(url_of(broker_path), NAMESPACE)
    }
    assert letters["poison"].reason == "rejected by the test handler"
    assert "not JSON" in letters["not-json"].reason
    assert letters["poison"].queue == f"{NAMESPACE}.batched"


async def _value(value: int) -> int:
    return value


async def test_brokers_share_one_file(
    broker_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    publisher = EmbeddedBroker("sqlite:///nested/broker.sqlite3", NAMESPACE)
    subscriber = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await publisher.connect(attempts=1)
    await subscriber.connect(attempts=1)
    collector = Collector()
    await (await subscriber.declare_queue("shared", ["changed.#"])).consume(collector)

    await publisher.publish([event("e0", "changed.product.erp")])
    await collector.wait_for(1)
    await publisher.close()
    await settle()

    assert subscriber.connected
    assert not publisher.connected
    await collector.messages[0].ack()
    other = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await other.connect(attempts=1)
    await other.publish([event("e1", "changed.product.erp")])
    await collector.wait_for(2)
    await subscriber.close()
    await other.close()

    assert collector.ids == ["e0", "e1"]
    with pytest.raises(BrokerUnavailable):
        await subscriber.publish([event("e2", "changed.product.erp")])


async def test_close_stops_own_consumers_only(broker_path: Path) -> None:
    store = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    gateway = EmbeddedBroker(url_of(broker_path), NAMESPACE)
    await store.connect(attempts=1)
    await gateway.connect(attempts=1)
    store_collector, gateway_collector = Collector(), Collector()
    await (await store.declare_queue("store.loja-1", ["resolved.#"])).consume(store_collector)
    await (await gateway.declare_queue("gw", ["resolved.#"])).consume(gateway_collector)

    await store.close()
    await gateway.publish([event("e0", "resolved.product.all")])
    await gateway_collector.wait_for(1)
    await settle()
    depth = await gateway.queue_depth("store.loja-1")
    await gateway.close()

    assert store_collector.messages == []
    assert depth == 1


async def test_delete_queue_removes_messages(broker: EmbeddedBroker, broker_path: Path) -> None:
    await broker.declare_queue("doomed", ["changed.#"])
    await broker.publish([event("e0", "changed.product.erp")])

    await broker.delete_queue("doomed")

    assert stored_count(broker_path, f"{NAMESPACE}.doomed") == 0
    with pytest.raises(QueueNotFound):
        await broker.queue_depth("doomed")
    with pytest.raises(QueueNotFound):
        await broker.consume("doomed", [], _never_called)


async def _never_called(envelopes: Sequence[Envelope]) -> None:
    raise AssertionError("handler called")


async def test_consume_rejects_no_ack(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("auto-ack", ["changed.#"])

    with pytest.raises(ValueError, match="no_ack"):
        await queue.consume(Collector(), no_ack=True)


async def test_failing_callback_keeps_delivering(broker: EmbeddedBroker) -> None:
    queue = await broker.declare_queue("flaky", ["changed.#"])
    delivered: list[str | None] = []

    async def fail_first(message: EmbeddedMessage) -> None:
        delivered.append(message.message_id)
        if message.message_id == "e0":
            raise RuntimeError("callback failed on purpose")
        await message.ack()

    await queue.consume(fail_first)
    await broker.publish([event("e0", "changed.product.erp"), event("e1", "changed.product.erp")])
    await settle()
    await broker.publish([event("e2", "changed.product.erp")])
    await settle()

    assert delivered == ["e0", "e1", "e2"]
    # The failed delivery stays unacked, so it is not ready for another consumer.
    assert await broker.queue_depth("flaky") == 0


async def test_connect_fails_on_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    unusable = EmbeddedBroker(url_of(blocker / "broker.sqlite3"), NAMESPACE)

    with pytest.raises(BrokerUnavailable, match="after 2 attempts"):
        await unusable.connect(attempts=2, delay=0)

    assert not unusable.connected


async def test_dead_letter_rejects_foreign_message(broker: EmbeddedBroker, tmp_path: Path) -> None:
    other = EmbeddedBroker(url_of(tmp_path / "other.sqlite3"), NAMESPACE)
    await other.connect(attempts=1)
    queue = await other.declare_queue("foreign", ["changed.#"])
    collector = Collector()
    await queue.consume(collector)
    await other.publish([event("e0", "changed.product.erp")])
    await collector.wait_for(1)

    with pytest.raises(ValueError, match="delivered from"):
        await broker.dead_letter(collector.messages[0], queue.name, "wrong broker")
    await other.close()

    assert await broker.queue_depth("dead-letters") == 0


async def test_exchange_kind_conflict_rejected(broker_path: Path) -> None:
    first = EmbeddedBroker(url_of(broker_path), "clash")
    await first.connect(attempts=1)
    # The namespace "clash.dead-letter" names the first broker's fanout exchange.
    second = EmbeddedBroker(url_of(broker_path), "clash.dead-letter")

    with pytest.raises(ConfigurationError, match="exists"):
        await second.connect(attempts=3, delay=0)
    await second.close()
    await first.close()


async def _batches_of_two_publishes(broker: EmbeddedBroker, linger: float) -> list[list[str]]:
    """Publish one event, then another 50 ms later, and return the batches handled."""
    handled: list[list[str]] = []

    async def handler(envelopes: Sequence[Envelope]) -> None:
        handled.append([envelope.id for envelope in envelopes])

    await broker.declare_queue("lingering", ["changed.#"])
    consumer = await broker.consume("lingering", [], handler, batch_max=500, batch_linger=linger)
    await broker.publish([envelope_event("first", "changed.product.erp")])
    await asyncio.sleep(0.05)
    await broker.publish([envelope_event("second", "changed.product.erp")])
    await eventually(lambda: _value(consumer.processed), until=lambda n: n == 2, timeout=5)
    return handled


async def test_batch_linger_joins_messages_arriving_soon_after(broker: EmbeddedBroker) -> None:
    assert await _batches_of_two_publishes(broker, linger=0.5) == [["first", "second"]]


async def test_no_linger_handles_each_message_as_it_comes(broker: EmbeddedBroker) -> None:
    assert await _batches_of_two_publishes(broker, linger=0.0) == [["first"], ["second"]]
