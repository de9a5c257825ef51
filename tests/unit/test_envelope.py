"""Envelope parsing from a parsed object, and `serialize_event` against `Envelope.to_bytes`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lojasync.envelope import RECORD_RESOLVED, Envelope, serialize_event
from lojasync.errors import EnvelopeInvalid

ATTRIBUTES: dict[str, Any] = {
    "id": "5f0c1f7e-2f87-4c55-a1f1-7d8f9b0c2d3e",
    "source": "lojasync/sync-orchestrator",
    "type": RECORD_RESOLVED,
    "subject": "product/7891000315507",
    "entity": "product",
    "recordkey": "7891000315507",
    "revision": 3,
    "origin": "erp",
    "correlationid": None,
    "causationid": "c0ffee00-0000-4000-8000-000000000001",
    "data": {"deleted": False, "record": {"code": "1", "cest": None}, "stores": None},
}


def without_time(body: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(body)
    event.pop("time")
    return event


def test_serialize_event_writes_what_to_bytes_writes() -> None:
    direct = serialize_event(**ATTRIBUTES)
    through_model = Envelope(**ATTRIBUTES).to_bytes()

    assert list(orjson.loads(direct)) == list(orjson.loads(through_model))
    assert without_time(direct) == without_time(through_model)
    assert "correlationid" not in orjson.loads(direct)
    assert orjson.loads(direct)["time"].endswith("Z")


def test_serialize_event_fills_defaults() -> None:
    event = Envelope.from_bytes(serialize_event(source="tests", type=RECORD_RESOLVED))

    assert event.id
    assert event.data == {}
    assert event.datacontenttype == "application/json"
    assert event.time.tzinfo is not None


def test_serialize_event_rejects_unknown_attribute() -> None:
    with pytest.raises(TypeError, match="recordKey"):
        serialize_event(source="tests", type=RECORD_RESOLVED, recordKey="1")


def test_from_object_validates_like_from_bytes() -> None:
    raw = orjson.loads(Envelope(**ATTRIBUTES).to_bytes())

    assert Envelope.from_object(raw) == Envelope.from_bytes(orjson.dumps(raw))
    with pytest.raises(EnvelopeInvalid, match="revision"):
        Envelope.from_object({**raw, "revision": 0})
