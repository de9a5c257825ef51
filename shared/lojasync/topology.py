"""The exchanges and queues of a lojasync deployment and what each one is bound to.

Messages published to a topic exchange with no queue bound to their routing key are
dropped by RabbitMQ. Every service therefore declares the orchestrator's and the ERP
gateway's queues when it connects, so a change is kept even when it is published before
its consumer started; and the orchestrator declares a store's queue before it routes a
record to that store for the first time.

The orchestrator's input is split into N partitions (LOJASYNC_PARTITIONS): the topic
exchange passes `changed.#` and `announced.#` to a headers exchange
(`<namespace>.partitions`), and each queue `<namespace>.orchestrator.<i>` is bound to it
with the header `lojasync-partition` equal to `i`. The publisher sets that header to the
CRC-32 of the message's partition key modulo N (`lojasync.packing.partition_of`). Every
change of one record carries the same key, so it lands in the same queue, and each queue
has a single active consumer, so a record's changes are decided one at a time and in order.

The headers exchange's alternate exchange, `<namespace>.unpartitioned.<N>`, takes the
changes no partition queue matched (a publisher that set no header) to partition 0, where
the orchestrator decides them or dead-letters them with the reason. RabbitMQ compares the
alternate exchange when an exchange is declared again, so a service configured with
another N fails to connect instead of routing keys to other partitions than its peers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lojasync.envelope import (
    ALL_STORES_TARGET,
    ERP_TARGET,
    rejected_key,
    resolved_key,
    store_target,
)

# RabbitMQ's headers exchange ignores headers whose name starts with "x-", so this name
# has no such prefix.
PARTITION_HEADER = "lojasync-partition"
PARTITIONS_EXCHANGE_SUFFIX = "partitions"
UNPARTITIONED_EXCHANGE_SUFFIX = "unpartitioned"
# The consistent-hash exchange that earlier versions routed changes through. Services
# delete it when they connect, because it would deliver every change a second time.
LEGACY_CHANGES_EXCHANGE_SUFFIX = "changes"
ORCHESTRATOR_INPUT_BINDINGS = ("changed.#", "announced.#")


@dataclass(frozen=True)
class QueueSpec:
    consumer: str
    bindings: tuple[str, ...]


ERP_GATEWAY_QUEUE = QueueSpec(
    "erp-gateway", (resolved_key("*", ERP_TARGET), rejected_key("*", ERP_TARGET))
)


def orchestrator_partition(index: int) -> str:
    """Return the consumer name of partition `index` (queue `<namespace>.orchestrator.<index>`)."""
    return f"orchestrator.{index}"


def store_queue(store_id: str) -> QueueSpec:
    target = store_target(store_id)
    return QueueSpec(
        f"store.{store_id}",
        (
            resolved_key("*", ALL_STORES_TARGET),
            resolved_key("*", target),
            rejected_key("*", target),
        ),
    )
