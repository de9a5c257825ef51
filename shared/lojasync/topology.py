"""The exchanges and queues of a lojasync deployment and what each one is bound to.

Messages published to a topic exchange with no queue bound to their routing key are
dropped by RabbitMQ. Every service therefore declares the orchestrator's and the ERP
gateway's queues when it connects, so a change is kept even when it is published before
its consumer started; and the orchestrator declares a store's queue before it routes a
record to that store for the first time.

The orchestrator's input is split into partitions: the topic exchange passes `changed.#`
and `announced.#` to a consistent-hash exchange (`<namespace>.changes`, from the
rabbitmq_consistent_hash_exchange plugin), which hashes the `x-lojasync-partition-key`
header onto one of the queues `<namespace>.orchestrator.0` to `.<N-1>`. Every change of
one record carries the same key, so it lands in the same queue, and each queue has a single
active consumer, so a record's changes are decided one at a time and in order.
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

PARTITION_HEADER = "x-lojasync-partition-key"
CHANGES_EXCHANGE_SUFFIX = "changes"
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
