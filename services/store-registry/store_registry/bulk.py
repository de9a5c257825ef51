"""Apply `record.batch` events in bulk: COPY into a staging table, then two set statements.

A batch takes the transaction-level advisory lock `BULK_APPLY_LOCK` in exclusive mode;
every other writer of `store_record` holds it in shared mode (see
`repository.lock_records`). So no local edit reads a row that a batch is about to change,
and the batch needs no lock per record. Each item changes its row only when its revision
is newer than the stored one (or, for a repair, when the store still holds the revision
the drift check saw), which is the rule `domain.apply_resolved` applies to one event.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from lojasync.batch import (
    BATCH_PREFETCH,
    BatchInvalid,
    BatchItem,
    BatchPurpose,
    batch_queue,
    parse_batch_items,
)
from lojasync.envelope import RECORD_BATCH, Envelope
from lojasync.messaging import PermanentFailure
from lojasync.persistence import record_inbox
from lojasync.service import ServiceRuntime, Subscription
from store_registry.repository import BULK_APPLY_LOCK

logger = logging.getLogger(__name__)

_STAGE_TABLE = "record_batch_stage"
_STAGE_COLUMNS = (
    "entity",
    "record_key",
    "revision",
    "data",
    "content_hash",
    "deleted",
    "causation_id",
    "repair",
    "expected_revision",
)

_CREATE_STAGE = text(
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE_TABLE} ("
    ' entity TEXT NOT NULL, record_key TEXT COLLATE "C" NOT NULL, revision INTEGER NOT NULL,'
    " data TEXT, content_hash TEXT, deleted BOOLEAN NOT NULL, causation_id TEXT,"
    " repair BOOLEAN NOT NULL, expected_revision INTEGER"
    ") ON COMMIT DELETE ROWS"
)

_LOCK_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:lock_id)")

# A pending local edit clears only when this item's revision decided it, as in
# domain.apply_resolved.
_CLEARS_PENDING = "r.pending_event_id IS NOT NULL AND r.pending_event_id = s.causation_id"

_UPDATE_EXISTING = text(
    "UPDATE store_record AS r SET"
    " revision = s.revision,"
    " data = CAST(s.data AS JSONB),"
    " content_hash = s.content_hash,"
    " deleted = s.deleted,"
    f" pending = CASE WHEN {_CLEARS_PENDING} THEN NULL ELSE r.pending END,"
    f" pending_action = CASE WHEN {_CLEARS_PENDING} THEN NULL ELSE r.pending_action END,"
    f" pending_since = CASE WHEN {_CLEARS_PENDING} THEN NULL ELSE r.pending_since END,"
    f" pending_event_id = CASE WHEN {_CLEARS_PENDING} THEN NULL ELSE r.pending_event_id END,"
    " updated_at = now()"
    f" FROM {_STAGE_TABLE} AS s"
    " WHERE r.entity = s.entity AND r.record_key = s.record_key AND ("
    "  r.revision < s.revision"
    "  OR (s.repair AND ("
    "   r.revision = s.expected_revision"
    "   OR (s.expected_revision IS NULL AND r.revision <= s.revision AND r.content_hash IS NULL)"
    "  ))"
    " )"
)

_INSERT_NEW = text(
    "INSERT INTO store_record"
    " (entity, record_key, revision, data, content_hash, deleted, local, updated_at)"
    " SELECT s.entity, s.record_key, s.revision, CAST(s.data AS JSONB), s.content_hash,"
    "  s.deleted, CAST('{}' AS JSONB), now()"
    f" FROM {_STAGE_TABLE} AS s"
    " WHERE NOT EXISTS ("
    "  SELECT 1 FROM store_record AS r WHERE r.entity = s.entity AND r.record_key = s.record_key"
    " )"
    " ON CONFLICT (entity, record_key) DO NOTHING"
)


@dataclass(frozen=True)
class BatchResult:
    """Items in the applied batches and how many rows they changed or created."""

    items: int
    updated: int
    inserted: int

    @property
    def changed(self) -> int:
        return self.updated + self.inserted


def latest_per_record(items: Sequence[BatchItem]) -> list[BatchItem]:
    """Keep one item per record: the highest revision, the later one on a tie."""
    chosen: dict[tuple[str, str], BatchItem] = {}
    for item in items:
        record_id = (item.entity, item.record_key)
        known = chosen.get(record_id)
        if known is None or item.revision >= known.revision:
            chosen[record_id] = item
    return list(chosen.values())


def _stage_row(item: BatchItem, repair: bool) -> tuple[object, ...]:
    data: str | None = None
    digest: str | None = None
    if not item.deleted and item.record is not None:
        canonical = orjson.dumps(item.record, option=orjson.OPT_SORT_KEYS)
        data = canonical.decode()
        digest = hashlib.md5(canonical, usedforsecurity=False).hexdigest()
    return (
        item.entity,
        item.record_key,
        item.revision,
        data,
        digest,
        item.deleted or item.record is None,
        item.causation_id,
        repair,
        item.expected_revision,
    )


async def apply_batch_items(
    connection: AsyncConnection, items: Sequence[BatchItem], *, repair: bool = False
) -> BatchResult:
    """Apply resolved items to `store_record` in the caller's transaction.

    The content hash is computed here from the canonical JSON, as `lojasync.digest`
    defines it, so a store never trusts a hash it did not compute.
    """
    chosen = latest_per_record(items)
    if not chosen:
        return BatchResult(len(items), 0, 0)
    await connection.execute(_LOCK_EXCLUSIVE, {"lock_id": BULK_APPLY_LOCK})
    await connection.execute(_CREATE_STAGE)

    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None, "apply_batch_items needs an asyncpg connection"
    await driver.copy_records_to_table(
        _STAGE_TABLE,
        records=[_stage_row(item, repair) for item in chosen],
        columns=list(_STAGE_COLUMNS),
    )

    updated = (await connection.execute(_UPDATE_EXISTING)).rowcount
    inserted = (await connection.execute(_INSERT_NEW)).rowcount
    await connection.execute(text(f"TRUNCATE {_STAGE_TABLE}"))
    return BatchResult(len(items), updated, inserted)


class BatchApplier:
    """Consumes this store's batch queue and applies each batch in bulk."""

    def __init__(self, runtime: ServiceRuntime, store_id: str) -> None:
        self.runtime = runtime
        self.store_id = store_id

    def subscription(self) -> Subscription:
        spec = batch_queue(self.store_id)
        return Subscription(spec.consumer, spec.bindings, self.handle, prefetch=BATCH_PREFETCH)

    async def handle(self, envelopes: Sequence[Envelope]) -> None:
        parsed = [(envelope, self._parse(envelope)) for envelope in envelopes]

        async with self.runtime.transaction() as connection:
            new_ids = await record_inbox(connection, [envelope.id for envelope in envelopes])
            repairs: list[BatchItem] = []
            others: list[BatchItem] = []
            for envelope, items in parsed:
                if envelope.id not in new_ids:
                    continue
                new_ids.discard(envelope.id)
                if envelope.data.get("purpose") == BatchPurpose.REPAIR.value:
                    repairs.extend(items)
                else:
                    others.extend(items)
            result = await apply_batch_items(connection, others)
            repaired = await apply_batch_items(connection, repairs, repair=True)

        logger.info(
            "record batches applied",
            extra={
                "store_id": self.store_id,
                "events": len(envelopes),
                "items": result.items + repaired.items,
                "rows_changed": result.changed + repaired.changed,
            },
        )

    def _parse(self, envelope: Envelope) -> list[BatchItem]:
        if envelope.type != RECORD_BATCH:
            raise PermanentFailure(
                envelope.id, f"unexpected event type {envelope.type!r} on the batch queue"
            )
        target = envelope.data.get("store_id")
        if target != self.store_id:
            raise PermanentFailure(
                envelope.id, f"record.batch for store {target!r} reached store {self.store_id!r}"
            )
        try:
            return parse_batch_items(envelope)
        except BatchInvalid as exc:
            raise PermanentFailure(envelope.id, str(exc)) from exc
