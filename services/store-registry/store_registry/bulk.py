"""Apply `record.batch` events in bulk: COPY for new rows, one set statement for the rest.

A batch takes the transaction-level advisory lock `BULK_APPLY_LOCK` in exclusive mode;
every other writer of `store_record` holds it in shared mode (see
`repository.lock_records`). So no local edit reads a row that a batch is about to change,
and the batch needs no lock per record. Each item changes its row only when its revision
is newer than the stored one (or, for a repair, when the store still has the revision
the drift check saw), which is the rule `domain.apply_resolved` applies to one event (see
`applies`).
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
from lojasync.persistence import record_inbox, utc_now
from lojasync.postgresql_only import PostgresqlRequired, require_postgresql
from lojasync.service import ServiceRuntime, Subscription
from store_registry.repository import BULK_APPLY_LOCK

logger = logging.getLogger(__name__)

_LOCK_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:lock_id)")

# The rows a batch touches, found by index. The planner estimates few rows for unnest, so
# it probes the primary key once per item instead of scanning the table.
_LOAD_EXISTING = text(
    "SELECT r.entity, r.record_key, r.revision, r.content_hash, r.pending_event_id"
    " FROM unnest(CAST(:entities AS TEXT[]), CAST(:record_keys AS TEXT[])) AS k(entity, record_key)"
    " JOIN store_record AS r ON r.entity = k.entity AND r.record_key = k.record_key"
)

_UPDATE_EXISTING = text(
    "UPDATE store_record AS r SET"
    " revision = u.revision,"
    " data = CAST(u.data AS JSON),"
    " content_hash = u.content_hash,"
    " deleted = u.deleted,"
    " pending = CASE WHEN u.clear_pending THEN NULL ELSE r.pending END,"
    " pending_action = CASE WHEN u.clear_pending THEN NULL ELSE r.pending_action END,"
    " pending_since = CASE WHEN u.clear_pending THEN NULL ELSE r.pending_since END,"
    " pending_event_id = CASE WHEN u.clear_pending THEN NULL ELSE r.pending_event_id END,"
    " updated_at = now()"
    " FROM unnest("
    "  CAST(:entities AS TEXT[]), CAST(:record_keys AS TEXT[]), CAST(:revisions AS INTEGER[]),"
    "  CAST(:data AS TEXT[]), CAST(:content_hashes AS TEXT[]), CAST(:deleted AS BOOLEAN[]),"
    "  CAST(:clear_pending AS BOOLEAN[])"
    " ) AS u(entity, record_key, revision, data, content_hash, deleted, clear_pending)"
    " WHERE r.entity = u.entity AND r.record_key = u.record_key"
)

_COPY_COLUMNS = (
    "entity",
    "record_key",
    "revision",
    "data",
    "content_hash",
    "deleted",
    "local",
    "updated_at",
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


@dataclass(frozen=True)
class StoredVersion:
    """The columns of a stored row that decide whether a batch item replaces it."""

    revision: int
    content_hash: str | None
    pending_event_id: str | None


def latest_per_record(items: Sequence[BatchItem]) -> list[BatchItem]:
    """Keep one item per record: the highest revision, the later one on a tie."""
    chosen: dict[tuple[str, str], BatchItem] = {}
    for item in items:
        record_id = (item.entity, item.record_key)
        known = chosen.get(record_id)
        if known is None or item.revision >= known.revision:
            chosen[record_id] = item
    return list(chosen.values())


def applies(item: BatchItem, existing: StoredVersion, *, repair: bool) -> bool:
    """Tell whether an item replaces a stored row (the rule of domain.apply_resolved).

    A newer revision always applies. A repair item also applies when the store still
    has the revision the drift check saw, or, for a record the check found missing,
    when the row has no confirmed data at a revision not newer than the item's.
    """
    if existing.revision < item.revision:
        return True
    if not repair:
        return False
    if item.expected_revision is not None:
        return existing.revision == item.expected_revision
    return existing.content_hash is None and existing.revision <= item.revision


def _canonical(item: BatchItem) -> tuple[str | None, str | None]:
    """Return the record's JSON and content hash, or (None, None) for a deletion.

    A record sent as `record_text` comes with the orchestrator's content hash, computed
    by `lojasync.digest.content_hash` when it stored the record; both are kept as sent.
    """
    if item.deleted:
        return None, None
    if item.record_text is not None and item.content_hash is not None:
        return item.record_text, item.content_hash
    if item.record is None:
        return None, None
    canonical = orjson.dumps(item.record, option=orjson.OPT_SORT_KEYS)
    return canonical.decode(), hashlib.md5(canonical, usedforsecurity=False).hexdigest()


# Whether the store has any row of an entity between two keys, in one index range probe.
# A bootstrap sends keys in order, so each batch's range is new and its rows need no load.
_ANY_IN_RANGE = text(
    "SELECT EXISTS (SELECT 1 FROM store_record WHERE entity = :entity"
    " AND record_key BETWEEN :first_key AND :last_key)"
)


async def _load_existing(
    connection: AsyncConnection, items: Sequence[BatchItem]
) -> dict[tuple[str, str], StoredVersion]:
    ranges: dict[str, tuple[str, str]] = {}
    for item in items:
        low, high = ranges.get(item.entity, (item.record_key, item.record_key))
        ranges[item.entity] = (min(low, item.record_key), max(high, item.record_key))
    occupied = False
    for entity, (first_key, last_key) in ranges.items():
        parameters = {"entity": entity, "first_key": first_key, "last_key": last_key}
        if await connection.scalar(_ANY_IN_RANGE, parameters):
            occupied = True
            break
    if not occupied:
        return {}
    rows = await connection.execute(
        _LOAD_EXISTING,
        {
            "entities": [item.entity for item in items],
            "record_keys": [item.record_key for item in items],
        },
    )
    return {
        (row.entity, row.record_key): StoredVersion(
            row.revision, row.content_hash, row.pending_event_id
        )
        for row in rows
    }


async def apply_batch_items(
    connection: AsyncConnection, items: Sequence[BatchItem], *, repair: bool = False
) -> BatchResult:
    """Apply resolved items to `store_record` in the caller's transaction.

    Rows the store does not have yet are written with COPY straight into `store_record`;
    rows it has are read by key and updated with one statement, only where the item
    applies. The content hash is computed here from the canonical JSON, as
    `lojasync.digest` defines it, unless the item carries the orchestrator's.
    """
    chosen = latest_per_record(items)
    if not chosen:
        return BatchResult(len(items), 0, 0)
    await connection.execute(_LOCK_EXCLUSIVE, {"lock_id": BULK_APPLY_LOCK})
    existing = await _load_existing(connection, chosen)

    now = utc_now()
    new_rows: list[tuple[object, ...]] = []
    updates: list[tuple[BatchItem, str | None, str | None, bool]] = []
    for item in chosen:
        stored = existing.get((item.entity, item.record_key))
        if stored is not None and not applies(item, stored, repair=repair):
            continue
        data, digest = _canonical(item)
        deleted = data is None
        if stored is None:
            new_rows.append(
                (item.entity, item.record_key, item.revision, data, digest, deleted, "{}", now)
            )
            continue
        clear_pending = (
            stored.pending_event_id is not None and stored.pending_event_id == item.causation_id
        )
        updates.append((item, data, digest, clear_pending))

    if new_rows:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None, "apply_batch_items needs an asyncpg connection"
        await driver.copy_records_to_table(
            "store_record", records=new_rows, columns=list(_COPY_COLUMNS)
        )
    if updates:
        await connection.execute(
            _UPDATE_EXISTING,
            {
                "entities": [item.entity for item, _, _, _ in updates],
                "record_keys": [item.record_key for item, _, _, _ in updates],
                "revisions": [item.revision for item, _, _, _ in updates],
                "data": [data for _, data, _, _ in updates],
                "content_hashes": [digest for _, _, digest, _ in updates],
                "deleted": [data is None for _, data, _, _ in updates],
                "clear_pending": [clear for _, _, _, clear in updates],
            },
        )
    return BatchResult(len(items), len(updates), len(new_rows))


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
        try:
            require_postgresql(self.runtime.engine, "record.batch apply")
        except PostgresqlRequired as exc:
            raise PermanentFailure(envelope.id, exc.message) from exc
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
