"""Partition keys keep a record, and a price with its table, in one partition."""

from __future__ import annotations

from lojasync.envelope import RECORD_CHANGED, RECORD_RESOLVED, STORE_ANNOUNCED, Envelope
from lojasync.partitioning import outgoing_event, partition_key
from lojasync.policy import load_policy

POLICY = load_policy()


def test_record_key_names_entity_and_record() -> None:
    assert partition_key("product", "P1", POLICY) == "product:P1"


def test_price_shares_key_with_its_table() -> None:
    assert partition_key("price", "LOJA-3:P000001", POLICY) == "price_table:LOJA-3"
    assert partition_key("price_table", "LOJA-3", POLICY) == "price_table:LOJA-3"


def test_unknown_entity_still_gets_key() -> None:
    assert partition_key("bogus", "X", POLICY) == "bogus:X"


def test_changed_event_carries_partition_key() -> None:
    envelope = Envelope(source="t", type=RECORD_CHANGED, entity="price", recordkey="BASE:P1")

    event = outgoing_event(envelope, "changed.price.erp", POLICY)

    assert event.partition_key == "price_table:BASE"
    assert event.routing_key == "changed.price.erp"
    assert event.event_id == envelope.id


def test_announcement_keyed_by_store() -> None:
    envelope = Envelope(source="t", type=STORE_ANNOUNCED, data={"store_id": "loja-1"})

    event = outgoing_event(envelope, "announced.store.loja-1", POLICY)

    assert event.partition_key == "store:loja-1"


def test_resolved_event_has_no_partition_key() -> None:
    envelope = Envelope(
        source="t", type=RECORD_RESOLVED, entity="product", recordkey="P1", revision=1
    )

    assert outgoing_event(envelope, "resolved.product.all", POLICY).partition_key is None
