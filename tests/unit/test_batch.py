"""The record.batch message, bulk dedup, drift buckets and the bootstrap order; no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from sqlalchemy import create_engine

from lojasync.batch import (
    BatchInvalid,
    BatchItem,
    BatchPurpose,
    batch_key,
    build_batch,
    parse_batch_items,
)
from lojasync.buckets import MAX_BUCKETS, MIN_BUCKETS, bucket_count_for
from lojasync.envelope import RECORD_BATCH, Envelope
from lojasync.postgresql_only import PostgresqlRequired, require_postgresql
from store_registry.bulk import latest_per_record
from sync_orchestrator.bootstrap import dependency_order

DOCUMENT = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())
OPERATION_ID = "6f1c2d1e-0000-4000-8000-000000000001"


def sample_batch() -> Any:
    items = [
        BatchItem("product", "P1", 3, record_json='{"code": "P1", "gtins": []}'),
        BatchItem("product", "P2", 1, deleted=True, causation_id="c-2"),
        BatchItem("unit", "UN", 2, record={"code": "UN"}, expected_revision=1),
    ]
    return build_batch(
        "loja-1",
        items,
        purpose=BatchPurpose.REPAIR,
        operation_id=OPERATION_ID,
        sequence=7,
        source="lojasync/sync-orchestrator",
    )


def test_batch_matches_asyncapi_schema() -> None:
    body = orjson.loads(sample_batch().body)
    schema = {**DOCUMENT, "$ref": "#/components/messages/recordBatch/payload"}

    jsonschema.validate(body, schema)


def test_batch_routing_key_and_type() -> None:
    event = sample_batch()

    assert event.routing_key == batch_key("loja-1") == "batch.store.loja-1"
    assert event.event_type == RECORD_BATCH


def test_batch_round_trip() -> None:
    envelope = Envelope.from_bytes(sample_batch().body)

    items = parse_batch_items(envelope)

    assert [(item.entity, item.record_key, item.revision) for item in items] == [
        ("product", "P1", 3),
        ("product", "P2", 1),
        ("unit", "UN", 2),
    ]
    assert items[0].record == {"code": "P1", "gtins": []}
    assert items[1].record is None
    assert items[1].causation_id == "c-2"
    assert items[2].expected_revision == 1
    assert envelope.correlationid == OPERATION_ID


def test_batch_ids_repeat_for_same_sequence() -> None:
    assert sample_batch().event_id == sample_batch().event_id


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("not an object", "must be an object"),
        ({"entity": "product", "revision": 1, "record": {}}, "needs entity and record_key"),
        ({"entity": "product", "record_key": "P1", "revision": "1"}, "needs revision"),
        ({"entity": "product", "record_key": "P1", "revision": 1, "record": None}, "deleted"),
    ],
)
def test_batch_rejects_malformed_item(item: object, reason: str) -> None:
    envelope = Envelope(source="test", type=RECORD_BATCH, data={"items": [item]})

    with pytest.raises(BatchInvalid, match=reason):
        parse_batch_items(envelope)


def test_latest_per_record_keeps_newest() -> None:
    items = [
        BatchItem("product", "P1", 2, record={"v": 2}),
        BatchItem("product", "P1", 5, record={"v": 5}),
        BatchItem("product", "P1", 4, record={"v": 4}),
        BatchItem("product", "P2", 1, record={"v": 1}),
    ]

    chosen = latest_per_record(items)

    assert sorted((item.record_key, item.revision) for item in chosen) == [("P1", 5), ("P2", 1)]


@pytest.mark.parametrize(
    ("records", "buckets"),
    [(0, MIN_BUCKETS), (10_000, 128), (1_000_000, MAX_BUCKETS), (10**9, MAX_BUCKETS)],
)
def test_bucket_count_for_size(records: int, buckets: int) -> None:
    assert bucket_count_for(records) == buckets


def test_dependency_order_puts_references_first() -> None:
    order = dependency_order()

    assert order.index("ncm") < order.index("product")
    assert order.index("unit") < order.index("product")
    assert order.index("product") < order.index("price")
    assert order.index("price_table") < order.index("price")
    assert order.index("municipality") < order.index("customer")
    assert sorted(order) == sorted(set(order))


def test_operations_need_postgresql() -> None:
    engine = create_engine("sqlite://")

    with pytest.raises(PostgresqlRequired) as raised:
        require_postgresql(engine, "drift detection")

    assert raised.value.as_dict()["code"] == "postgresql_required"
    assert "drift detection needs PostgreSQL, but this service runs on sqlite" in str(raised.value)


def test_batch_item_as_record_text() -> None:
    items = (
        '[{"entity": "unit", "record_key": "UN", "revision": 4, "deleted": false,'
        ' "record_text": "{\\"code\\": \\"UN\\"}", "content_hash": "abc"}]'
    )
    event = build_batch(
        "loja-1",
        items,
        purpose=BatchPurpose.BOOTSTRAP,
        operation_id=OPERATION_ID,
        sequence=0,
        source="lojasync/sync-orchestrator",
    )
    schema = {**DOCUMENT, "$ref": "#/components/messages/recordBatch/payload"}

    jsonschema.validate(orjson.loads(event.body), schema)
    parsed = parse_batch_items(Envelope.from_bytes(event.body))

    assert parsed[0].record_text == '{"code": "UN"}'
    assert parsed[0].content_hash == "abc"
    assert parsed[0].record is None


def test_batch_rejects_record_text_without_hash() -> None:
    item = {"entity": "unit", "record_key": "UN", "revision": 1, "record_text": "{}"}
    envelope = Envelope(source="test", type=RECORD_BATCH, data={"items": [item]})

    with pytest.raises(BatchInvalid, match="record_text needs content_hash"):
        parse_batch_items(envelope)
