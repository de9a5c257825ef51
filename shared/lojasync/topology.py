"""The queues of a lojasync deployment and what each one is bound to.

Messages published to a topic exchange with no queue bound to their routing key are
dropped by RabbitMQ. Every service therefore declares the orchestrator's and the ERP
gateway's queues when it connects, so a change is kept even when it is published before
its consumer started; and the orchestrator declares a store's queue before it routes a
record to that store for the first time.
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


@dataclass(frozen=True)
class QueueSpec:
    consumer: str
    bindings: tuple[str, ...]


ORCHESTRATOR_QUEUE = QueueSpec("orchestrator", ("changed.#", "announced.#"))
ERP_GATEWAY_QUEUE = QueueSpec(
    "erp-gateway", (resolved_key("*", ERP_TARGET), rejected_key("*", ERP_TARGET))
)
WELL_KNOWN_QUEUES = (ORCHESTRATOR_QUEUE, ERP_GATEWAY_QUEUE)


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
