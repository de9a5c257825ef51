"""Several events in one broker message, in CloudEvents' JSON batch format.

The outbox relay packs the events of one round into fewer messages, and `BatchConsumer`
unpacks them, so services see single events and the broker, the AMQP clients and the
acks handle a message per pack instead of per event. A pack's body is a JSON array of
CloudEvents, with the content type `application/cloudevents-batch+json` (JSON Event
Format for CloudEvents 1.0, section 4, "JSON Batch Format"). A pack contains events
with the same routing key only, so topic bindings see the same keys as before.

Order. Events without a partition key (`resolved`, `rejected`) are packed in runs of
consecutive events, so each queue receives them in the order they were written. Events
with a partition key (`changed`, `announced`) go to the orchestrator's partition queues:
they are grouped by partition and by the entity part of their key (`product` in
`product:P1`), keeping their order within the group, and each group is packed in runs of
the same routing key. Events of one key always share a group, so a record's changes, and
a price table with its prices, keep their order. Events of different groups never share a
key, and may change their relative order, which costs nothing: no order exists between
different keys. Grouping by entity lets a push of products and prices, which alternate in
the outbox, travel as a few packs per partition instead of one pack per alternation.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from lojasync.persistence import OutgoingEvent

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

# A pack contains at most this many events and about this many bytes of event bodies. The
# consumer's prefetch counts messages, so this bounds a consumer's memory to about
# prefetch x MAX_PACK_BYTES.
MAX_PACK_EVENTS = 100
MAX_PACK_BYTES = 256 * 1024


class PackInvalid(ValueError):
    """A message with the batch content type whose body is not a JSON array of objects."""


def partition_of(key: str, partitions: int) -> int:
    """Return the orchestrator partition of a partition key: its CRC-32 modulo `partitions`.

    Every service must use the same `partitions` (LOJASYNC_PARTITIONS), or one key would
    reach two partitions.
    """
    return zlib.crc32(key.encode()) % partitions


def pack_events(
    events: Sequence[OutgoingEvent],
    *,
    partitions: int,
    max_events: int = MAX_PACK_EVENTS,
    max_bytes: int = MAX_PACK_BYTES,
) -> list[OutgoingEvent]:
    """Pack `events` into messages of at most `max_events` events (see the module doc).

    A pack's `partition_key` is the key of its first event, which has the partition of
    every event in the pack.
    """
    packed: list[OutgoingEvent] = []
    for keyed, segment in _segments(events):
        groups = _by_partition(segment, partitions) if keyed else [segment]
        for group in groups:
            for run in _runs(group, max_events, max_bytes):
                packed.append(run[0] if len(run) == 1 else _pack(run))
    return packed


def unpack_objects(body: bytes) -> list[dict[str, Any]]:
    """Return the events of a pack's body as parsed JSON objects, in order."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PackInvalid(f"the body of a {BATCH_CONTENT_TYPE} message is not JSON: {exc}") from exc
    if not isinstance(items, list) or not all(type(item) is dict for item in items):
        raise PackInvalid(f"the body of a {BATCH_CONTENT_TYPE} message is not an array of objects")
    return items


def unpack(body: bytes) -> list[bytes]:
    """Return the serialized events of a pack's body, in order."""
    return [orjson.dumps(item) for item in unpack_objects(body)]


def _segments(events: Sequence[OutgoingEvent]) -> Iterator[tuple[bool, list[OutgoingEvent]]]:
    """Split `events` into consecutive runs that all have, or all lack, a partition key."""
    segment: list[OutgoingEvent] = []
    keyed = False
    for event in events:
        has_key = event.partition_key is not None
        if segment and has_key != keyed:
            yield keyed, segment
            segment = []
        keyed = has_key
        segment.append(event)
    if segment:
        yield keyed, segment


def _by_partition(events: Iterable[OutgoingEvent], partitions: int) -> list[list[OutgoingEvent]]:
    """Group keyed events by partition and by the entity part of their key, in order."""
    groups: dict[tuple[int, str], list[OutgoingEvent]] = {}
    for event in events:
        key = event.partition_key or ""
        group = (partition_of(key, partitions), key.partition(":")[0])
        groups.setdefault(group, []).append(event)
    return list(groups.values())


def _runs(
    events: Sequence[OutgoingEvent], max_events: int, max_bytes: int
) -> Iterator[list[OutgoingEvent]]:
    """Split `events` into consecutive runs of one routing key within the size limits."""
    run: list[OutgoingEvent] = []
    size = 0
    for event in events:
        full = len(run) >= max_events or size + len(event.body) > max_bytes
        if run and (full or event.routing_key != run[0].routing_key):
            yield run
            run = []
            size = 0
        run.append(event)
        size += len(event.body)
    if run:
        yield run


def _pack(events: Sequence[OutgoingEvent]) -> OutgoingEvent:
    first = events[0]
    types = {event.event_type for event in events}
    return OutgoingEvent(
        # The message id of a pack names its first event; each event keeps its own id
        # inside, which is what consumers record in their inbox.
        event_id=first.event_id,
        routing_key=first.routing_key,
        event_type=first.event_type if len(types) == 1 else "",
        body=b"[" + b",".join(event.body for event in events) + b"]",
        partition_key=first.partition_key,
        content_type=BATCH_CONTENT_TYPE,
    )
