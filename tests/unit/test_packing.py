"""Packing outbox events into CloudEvents batch messages, and reading them back."""

from __future__ import annotations

import orjson
import pytest

from lojasync.envelope import CONTENT_TYPE
from lojasync.packing import (
    BATCH_CONTENT_TYPE,
    PackInvalid,
    pack_events,
    partition_of,
    unpack,
)
from lojasync.persistence import OutgoingEvent

PARTITIONS = 4


def event(event_id: str, routing_key: str, key: str | None = None) -> OutgoingEvent:
    body = orjson.dumps({"id": event_id})
    return OutgoingEvent(event_id, routing_key, "t", body, partition_key=key)


def keys_in_partition(partition: int, prefix: str, count: int) -> list[str]:
    """Return `count` partition keys `<prefix>:<n>` that fall in `partition`."""
    found = []
    number = 0
    while len(found) < count:
        key = f"{prefix}:{number}"
        if partition_of(key, PARTITIONS) == partition:
            found.append(key)
        number += 1
    return found


def ids_of(message: OutgoingEvent) -> list[str]:
    if message.content_type != BATCH_CONTENT_TYPE:
        return [orjson.loads(message.body)["id"]]
    return [orjson.loads(body)["id"] for body in unpack(message.body)]


def test_single_event_stays_single() -> None:
    only = event("a", "resolved.product.all")

    packed = pack_events([only], partitions=PARTITIONS)

    assert packed == [only]
    assert packed[0].content_type == CONTENT_TYPE


def test_consecutive_runs_packed_in_order() -> None:
    events = [
        event("a", "resolved.product.all"),
        event("b", "resolved.product.all"),
        event("c", "resolved.price.store.loja-3"),
        event("d", "resolved.product.all"),
        event("e", "resolved.product.all"),
    ]

    packed = pack_events(events, partitions=PARTITIONS)

    assert [ids_of(message) for message in packed] == [["a", "b"], ["c"], ["d", "e"]]
    assert [message.routing_key for message in packed] == [
        "resolved.product.all",
        "resolved.price.store.loja-3",
        "resolved.product.all",
    ]
    assert packed[0].event_id == "a"
    assert packed[0].content_type == BATCH_CONTENT_TYPE


def test_keyed_events_grouped_by_partition() -> None:
    p1, p2 = keys_in_partition(1, "product", 2)
    (q1,) = keys_in_partition(2, "product", 1)
    (t2,) = keys_in_partition(2, "price_table", 1)
    events = [
        event("a1", "changed.product.erp", p1),
        event("b1", "changed.product.erp", q1),
        event("a2", "changed.product.erp", p2),
        event("b2", "changed.price.erp", t2),
        event("a3", "changed.product.erp", p1),
    ]

    packed = pack_events(events, partitions=PARTITIONS)

    assert [ids_of(message) for message in packed] == [["a1", "a2", "a3"], ["b1"], ["b2"]]
    assert [message.partition_key for message in packed] == [p1, q1, t2]


def test_entities_of_one_partition_packed_apart() -> None:
    # Products and prices alternate in a push's outbox rows. Their keys never coincide, so
    # each entity's events of one partition travel in one pack.
    products = keys_in_partition(0, "product", 3)
    (table,) = keys_in_partition(0, "price_table", 1)
    events = []
    for number, product in enumerate(products):
        events.append(event(f"product{number}", "changed.product.erp", product))
        events.append(event(f"price{number}", "changed.price.erp", table))

    packed = pack_events(events, partitions=PARTITIONS)

    assert [ids_of(message) for message in packed] == [
        ["product0", "product1", "product2"],
        ["price0", "price1", "price2"],
    ]


def test_one_key_keeps_routing_key_order() -> None:
    # A price table and its prices share a key, so a later table change must not be packed
    # ahead of the prices sent before it.
    events = [
        event("t1", "changed.price_table.erp", "price_table:BASE"),
        event("p1", "changed.price.erp", "price_table:BASE"),
        event("t2", "changed.price_table.erp", "price_table:BASE"),
    ]

    packed = pack_events(events, partitions=PARTITIONS)

    assert [ids_of(message) for message in packed] == [["t1"], ["p1"], ["t2"]]


def test_keyed_and_unkeyed_segments_keep_order() -> None:
    events = [
        event("r1", "resolved.product.all"),
        event("c1", "changed.product.erp", "product:P1"),
        event("r2", "resolved.product.all"),
    ]

    packed = pack_events(events, partitions=PARTITIONS)

    assert [ids_of(message) for message in packed] == [["r1"], ["c1"], ["r2"]]


def test_pack_size_limits() -> None:
    events = [event(f"e{number}", "resolved.product.all") for number in range(25)]
    body_size = len(events[0].body)

    by_count = pack_events(events, partitions=PARTITIONS, max_events=10)
    by_bytes = pack_events(events, partitions=PARTITIONS, max_bytes=body_size * 4)

    assert [len(ids_of(message)) for message in by_count] == [10, 10, 5]
    assert all(len(ids_of(message)) <= 4 for message in by_bytes)
    assert sum(len(ids_of(message)) for message in by_bytes) == 25


def test_pack_mixed_types_has_no_type() -> None:
    first = event("a", "resolved.product.all")
    second = OutgoingEvent("b", "resolved.product.all", "other", orjson.dumps({"id": "b"}))

    packed = pack_events([first, second], partitions=PARTITIONS)

    assert packed[0].event_type == ""


def test_unpack_returns_events() -> None:
    packed = pack_events([event("a", "k"), event("b", "k")], partitions=PARTITIONS)

    bodies = unpack(packed[0].body)

    assert [orjson.loads(body) for body in bodies] == [{"id": "a"}, {"id": "b"}]


@pytest.mark.parametrize("body", [b"not json", b'{"id": "a"}', b'[{"id": "a"}, 3]'])
def test_unpack_rejects_malformed_body(body: bytes) -> None:
    with pytest.raises(PackInvalid):
        unpack(body)


def test_partition_of_stable_and_spread() -> None:
    partitions = [partition_of(f"product:P{number}", PARTITIONS) for number in range(1000)]

    assert partition_of("product:P1", PARTITIONS) == partition_of("product:P1", PARTITIONS)
    assert set(partitions) == set(range(PARTITIONS))
    assert min(partitions.count(index) for index in range(PARTITIONS)) > 200
