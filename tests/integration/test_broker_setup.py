"""The orchestrator's input on RabbitMQ: partition counts that must agree, the exchange of
earlier versions, and changes without a partition header."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import aio_pika
import pytest

from bench.system import PARTITIONS, BenchSystem
from lojasync.errors import ConfigurationError
from lojasync.messaging import Broker
from lojasync.packing import partition_of
from lojasync.persistence import OutgoingEvent
from lojasync.service import ServiceRuntime
from lojasync.settings import CommonSettings
from tests.conftest import DatabaseFactory, _broker_objects, _namespaces_used
from tests.support import eventually

pytestmark = pytest.mark.integration


def change(event_id: str, partition_key: str | None) -> OutgoingEvent:
    return OutgoingEvent(event_id, "changed.product.erp", "t", b"{}", partition_key)


async def partition_depths(broker: Broker) -> list[int]:
    return [await broker.queue_depth(f"orchestrator.{index}") for index in range(4)]


async def publish_one(broker_url: str, namespace: str, partition_key: str | None) -> list[int]:
    """Publish one change through a new broker client; return the partition queues' depths."""
    broker = Broker(broker_url, namespace)
    await broker.connect(attempts=1)
    try:
        await broker.publish([change("e1", partition_key)])
        return await eventually(
            lambda: partition_depths(broker),
            until=lambda found: sum(found) >= 1,
            timeout=10,
            what="the change in a partition queue",
        )
    finally:
        await broker.close()


async def test_other_partition_count_names_the_fix(broker_url: str, namespace: str) -> None:
    first = Broker(broker_url, namespace, partitions=4)
    await first.connect(attempts=1)
    other = Broker(broker_url, namespace, partitions=8)
    try:
        with pytest.raises(ConfigurationError) as raised:
            await other.connect(attempts=1)
    finally:
        await first.close()

    message = str(raised.value)
    assert "LOJASYNC_PARTITIONS=8" in message
    assert f"name={namespace}.partitions" in message
    assert other.connection is None


async def test_service_connects_once_exchange_deleted(
    broker_url: str,
    namespace: str,
    fresh_database: DatabaseFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = Broker(broker_url, namespace, partitions=4)
    await first.connect(attempts=1)
    await first.close()
    settings = CommonSettings(broker_url=broker_url, namespace=namespace, partitions=8)
    runtime = ServiceRuntime("partitions-test", await fresh_database("partitions"), settings)
    caplog.set_level(logging.ERROR, logger="lojasync.service")
    try:
        await runtime.start([], [], broker_wait_seconds=1.0)

        assert not runtime.broker_ready
        errors = [record.getMessage() for record in caplog.records]
        assert any("LOJASYNC_PARTITIONS=8" in message for message in errors)

        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(f"{namespace}.partitions")

        async def connected() -> bool:
            return runtime.broker_ready

        await eventually(connected, timeout=15, what="broker connected")
    finally:
        await runtime.stop()


async def test_legacy_changes_exchange_deleted(broker_url: str, namespace: str) -> None:
    # Earlier versions bound `<namespace>.changes` between the topic exchange and the
    # partition queues. A fanout replaces the consistent-hash exchange here, because only
    # the name matters: left in place, the fanout would copy the change into every queue.
    first = Broker(broker_url, namespace)
    await first.connect(attempts=1)
    await first.close()
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        legacy = await channel.declare_exchange(
            f"{namespace}.changes", aio_pika.ExchangeType.FANOUT, durable=True
        )
        await legacy.bind(namespace, routing_key="changed.#")
        for index in range(4):
            queue = await channel.get_queue(f"{namespace}.orchestrator.{index}")
            await queue.bind(legacy)

    depths = await publish_one(broker_url, namespace, "product:P1")

    assert depths[partition_of("product:P1", 4)] == 1
    assert sum(depths) == 1


async def test_unkeyed_change_goes_to_first(broker_url: str, namespace: str) -> None:
    depths = await publish_one(broker_url, namespace, None)

    assert depths == [1, 0, 0, 0]


async def test_bench_deletes_every_declared_exchange(broker_url: str, tmp_path: Path) -> None:
    # The benchmark deletes its namespace's exchanges by name when it stops, so its list
    # must name every exchange a service declares.
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("listing the broker's exchanges needs rabbitmqctl on this machine")
    system = BenchSystem(broker_url, "unused", tmp_path, ("loja-1",))
    _namespaces_used.add(system.namespace)
    broker = Broker(broker_url, system.namespace, partitions=PARTITIONS)
    await broker.connect(attempts=1)
    await broker.close()

    declared = _broker_objects("exchanges", {system.namespace})

    assert declared
    assert set(declared) <= set(system.exchange_names())
