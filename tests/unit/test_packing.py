"""Packing outbox events into CloudEvents batch messages, and reading them back."""

from __future__ import annotations

import orjson
import pytest

from lojasync.envelope import CONTENT_TYPE
from lojasync.packing import (
    BATCH_CONTENT_TYPE,
    PARTITION_BUCKETS,
    PackInvalid,
    pack_events,
    partition_bucket,
    unpack,
)
from lojasync.persistence import OutgoingEvent


def event(event_id: str, routing_key: str, bucket: str | None = None) -> OutgoingEvent:
    body = orjson.dumps({"id": event_id})
    return OutgoingEvent(event_id, routing_key, "t", body, partition_key=bucket)


def ids_of(message: OutgoingEvent) -> list[str]:
    if message.content_type != BATCH_CONTENT_TYPE:
        return [orjson.loads(message.body)["id"]]
    return [orjson.loads(body)["id"] for body in unpack(message.body)]


def test_single_event_stays_single() -> None:
    only = event("a", "resolved.product.all")

    packed = pack_events([only])

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

    packed = pack_events(events)

    assert [ids_of(message) for message in packed] == [["a", "b"], ["c"], ["d", "e"]]
    assert [message.routing_key for message in packed] == [
        "resolved.product.all",
        "resolved.price.store.loja-3",
        "resolved.product.all",
    ]
    assert packed[0].event_id == "a"
    assert packed[0].content_type == BATCH_CONTENT_TYPE


def test_keyed_events_grouped_by_bucket() -> None:
    events = [
        event("a1", "changed.product.erp", "1"),
        event("b1", "changed.product.erp", "2"),
        event("a2", "changed.product.erp", "1"),
        event("b2", "changed.price.erp", "2"),
        event("a3", "changed.product.erp", "1"),
    ]

    packed = pack_events(events)

    assert [ids_of(message) for message in packed] == [["a1", "a2", "a3"], ["b1"], ["b2"]]
    assert [message.partition_key for message in packed] == ["1", "2", "2"]


def test_bucket_keeps_routing_key_order() -> None:
    # A price table and its prices share a bucket; a later table change must not be
    # packed ahead of the prices sent before it.
    events = [
        event("t1", "changed.price_table.erp", "7"),
        event("p1", "changed.price.erp", "7"),
        event("t2", "changed.price_table.erp", "7"),
    ]

    packed = pack_events(events)

    assert [ids_of(message) for message in packed] == [["t1"], ["p1"], ["t2"]]


def test_keyed_and_unkeyed_segments_keep_order() -> None:
    events = [
        event("r1", "resolved.product.all"),
        event("c1", "changed.product.erp", "1"),
        event("r2", "resolved.product.all"),
    ]

    packed = pack_events(events)

    assert [ids_of(message) for message in packed] == [["r1"], ["c1"], ["r2"]]


def test_pack_size_limits() -> None:
    events = [event(f"e{number}", "resolved.product.all") for number in range(25)]
    body_size = len(events[0].body)

    by_count = pack_events(events, max_events=10)
    by_bytes = pack_events(events, max_bytes=body_size * 4)

    assert [len(ids_of(message)) for message in by_count] == [10, 10, 5]
    assert all(len(ids_of(message)) <= 4 for message in by_bytes)
    assert sum(len(ids_of(message)) for message in by_bytes) == 25


def test_pack_mixed_types_has_no_type() -> None:
    first = event("a", "resolved.product.all")
    second = OutgoingEvent("b", "resolved.product.all", "other", orjson.dumps({"id": "b"}))

    packed = pack_events([first, second])

    assert packed[0].event_type == ""


def test_unpack_returns_events() -> None:
    packed = pack_events([event("a", "k"), event("b", "k")])

    bodies = unpack(packed[0].body)

    assert [orjson.loads(body) for body in bodies] == [{"id": "a"}, {"id": "b"}]


@pytest.mark.parametrize("body", [b"not json", b'{"id": "a"}', b'[{"id": "a"}, 3]'])
def test_unpack_rejects_malformed_body(body: bytes) -> None:
    with pytest.raises(PackInvalid):
        unpack(body)


def test_partition_bucket_stable_and_bounded() -> None:
    buckets = {partition_bucket(f"product:P{number}") for number in range(1000)}

    assert partition_bucket("product:P1") == partition_bucket("product:P1")
    assert buckets == {str(number) for number in range(PARTITION_BUCKETS)}
