"""The `record.batch` event: many resolved records for one store in one message.

Bootstrap, replay and repair send a store the orchestrator's state of many records at
once. A store applies a batch item under the same rule as a `record.resolved` event (only
a revision newer than the one it has), so a batch sent twice changes nothing the second
time. A repair item also names the revision the drift check saw in the store
(`expected_revision`); the store then replaces its row if it still has exactly that
revision, which fixes a row whose data changed without a new revision.

Batches travel on their own queue per store, `<namespace>.store.<id>.batch`, bound to
`batch.store.<id>`. That queue has a small prefetch, so a bootstrap of a million records
waits in RabbitMQ rather than in the store's memory. The order between a batch and the
store's other events does not matter, because both apply only newer revisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from lojasync.envelope import RECORD_BATCH, SPEC_VERSION, Envelope, store_target
from lojasync.errors import LojasyncError
from lojasync.ids import derived_id
from lojasync.persistence import OutgoingEvent
from lojasync.topology import QueueSpec

# Items per batch message. At 130 to 300 bytes per record, a message is 130 to 300 KB.
DEFAULT_BATCH_ITEMS = 1000
# Max unacknowledged batch messages per store; this bounds a store's memory for batches.
BATCH_PREFETCH = 8


class BatchPurpose(StrEnum):
    BOOTSTRAP = "bootstrap"
    REPLAY = "replay"
    REPAIR = "repair"
    ONBOARDING = "onboarding"


class BatchInvalid(LojasyncError):
    """A `record.batch` event does not have the shape the contract requires."""


def batch_key(store_id: str) -> str:
    return f"batch.{store_target(store_id)}"


def batch_queue(store_id: str) -> QueueSpec:
    return QueueSpec(f"store.{store_id}.batch", (batch_key(store_id),))


class BatchItem(NamedTuple):
    """One record's resolved state in a batch; `record` is None for a deleted record.

    On the sender, `record_json` may carry the record already serialized (as PostgreSQL
    returns a JSON column cast to text), which spares parsing and re-serializing it.
    On the wire and the receiver, a record may instead come as `record_text`, a JSON
    string holding the record, with the sender's `content_hash` of it: the store then
    stores both as they are and parses nothing (see `build_batch`). A named tuple, because
    a store builds hundreds of thousands of these per second.
    """

    entity: str
    record_key: str
    revision: int
    deleted: bool = False
    record: Mapping[str, Any] | None = None
    record_json: str | None = None
    causation_id: str | None = None
    expected_revision: int | None = None
    record_text: str | None = None
    content_hash: str | None = None

    def as_json_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "entity": self.entity,
            "record_key": self.record_key,
            "revision": self.revision,
            "deleted": self.deleted,
        }
        if self.record_json is not None and not self.deleted:
            item["record"] = orjson.Fragment(self.record_json)
        elif self.record is not None and not self.deleted:
            item["record"] = dict(self.record)
        else:
            item["record"] = None
        if self.causation_id is not None:
            item["causation_id"] = self.causation_id
        if self.expected_revision is not None:
            item["expected_revision"] = self.expected_revision
        return item


def build_batch(
    store_id: str,
    items: Sequence[BatchItem] | str,
    *,
    purpose: BatchPurpose,
    operation_id: str,
    sequence: int,
    source: str,
) -> OutgoingEvent:
    """Serialize a batch for one store as a CloudEvent in structured mode.

    `items` is a sequence of BatchItem, or the items already serialized as a JSON array
    (PostgreSQL builds it with json_agg, which spares the sender a parse and a dump per
    record, and sends each record as `record_text` with its `content_hash`). The body is
    built with orjson directly, not through `Envelope`, so that JSON text goes in as is;
    it has the same attributes `Envelope.to_bytes` writes, and a store parses it with
    `Envelope.from_bytes`.
    """
    serialized = (
        orjson.Fragment(items)
        if isinstance(items, str)
        else [item.as_json_dict() for item in items]
    )
    event_id = derived_id(operation_id, f"{store_id}/{sequence}")
    body = orjson.dumps(
        {
            "specversion": SPEC_VERSION,
            "id": event_id,
            "source": source,
            "type": RECORD_BATCH,
            "subject": f"store/{store_id}",
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "correlationid": operation_id,
            "data": {
                "store_id": store_id,
                "purpose": purpose.value,
                "operation_id": operation_id,
                "sequence": sequence,
                "items": serialized,
            },
        }
    )
    return OutgoingEvent(event_id, batch_key(store_id), RECORD_BATCH, body)


def parse_batch_items(envelope: Envelope) -> list[BatchItem]:
    """Read the items of a `record.batch` event, raising BatchInvalid on a malformed one."""
    items = envelope.data.get("items")
    if not isinstance(items, list):
        raise BatchInvalid(f"record.batch {envelope.id}: data.items must be a list")
    parsed: list[BatchItem] = []
    for index, raw in enumerate(items):
        parsed.append(_parse_item(envelope.id, index, raw))
    return parsed


def _parse_item(event_id: str, index: int, raw: object) -> BatchItem:
    if not isinstance(raw, dict):
        raise _invalid(event_id, index, "must be an object")
    entity = raw.get("entity")
    record_key = raw.get("record_key")
    revision = raw.get("revision")
    deleted = raw.get("deleted", False)
    record = raw.get("record")
    expected = raw.get("expected_revision")
    causation_id = raw.get("causation_id")
    record_text = raw.get("record_text")
    content_hash = raw.get("content_hash")
    if type(entity) is not str or type(record_key) is not str:
        raise _invalid(event_id, index, "needs entity and record_key as strings")
    if type(revision) is not int or revision < 0:
        raise _invalid(event_id, index, "needs revision as an integer of 0 or more")
    if type(deleted) is not bool:
        raise _invalid(event_id, index, "deleted must be a boolean")
    if record_text is not None:
        if type(record_text) is not str or type(content_hash) is not str:
            raise _invalid(event_id, index, "record_text needs content_hash, both strings")
    elif record is None:
        if not deleted:
            raise _invalid(event_id, index, "without a record must be deleted")
    elif type(record) is not dict:
        raise _invalid(event_id, index, "record must be an object or null")
    if expected is not None and type(expected) is not int:
        raise _invalid(event_id, index, "expected_revision must be an integer")
    return BatchItem(
        entity,
        record_key,
        revision,
        deleted,
        record,
        None,
        causation_id if type(causation_id) is str else None,
        expected,
        record_text,
        content_hash if record_text is not None else None,
    )


def _invalid(event_id: str, index: int, reason: str) -> BatchInvalid:
    return BatchInvalid(f"record.batch {event_id}: data.items[{index}] {reason}")
