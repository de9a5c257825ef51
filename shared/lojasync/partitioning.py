"""Partition keys: which orchestrator partition decides a change.

A change's key is its record (`<entity>:<record key>`), so all changes of one record are
decided in order by one partition. An entity whose stores come from another record (a
price takes the scope of its price table) uses that record's key instead, so a price table
and its prices are decided in the order they were sent: a price never overtakes the
table it belongs to. A store announcement uses the store id.
"""

from __future__ import annotations

from lojasync.catalog import ENTITIES
from lojasync.envelope import RECORD_CHANGED, STORE_ANNOUNCED, Envelope
from lojasync.persistence import OutgoingEvent
from lojasync.policy import Policy, ScopeFromDistribution


def partition_key(entity: str, record_key: str, policy: Policy) -> str:
    rules = policy.entities.get(entity)
    # An unknown entity still gets a key: the orchestrator dead-letters it with the reason.
    distribution = rules.distribution if rules is not None else None
    if isinstance(distribution, ScopeFromDistribution) and entity in ENTITIES:
        parent = distribution.scope_from
        key_fields = ENTITIES[entity].key_fields
        if parent.field in key_fields:
            parts = record_key.split(":", len(key_fields) - 1)
            if len(parts) == len(key_fields):
                return f"{parent.entity}:{parts[key_fields.index(parent.field)]}"
    return f"{entity}:{record_key}"


def outgoing_event(envelope: Envelope, routing_key: str, policy: Policy) -> OutgoingEvent:
    """Build the outbox row of an event, with its partition key for the orchestrator's
    input (the relay publishes it to the key's partition)."""
    key: str | None = None
    if envelope.type == RECORD_CHANGED and envelope.entity and envelope.recordkey:
        key = partition_key(envelope.entity, envelope.recordkey, policy)
    elif envelope.type == STORE_ANNOUNCED:
        key = f"store:{envelope.data.get('store_id', '')}"
    return OutgoingEvent(
        event_id=envelope.id,
        routing_key=routing_key,
        event_type=envelope.type,
        body=envelope.to_bytes(),
        partition_key=key,
    )
