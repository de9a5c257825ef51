"""Access to `store_record` on PostgreSQL or SQLite: locking, loading and saving in bulk."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from lojasync.digest import EMPTY_DIGEST, ENTITY_DIGEST_SQL, entity_digest
from lojasync.persistence import POSTGRESQL, Upsert, dialect_of, fetch_by_record_ids
from lojasync.pg_array import array_text
from store_registry.domain import UPSERT, StoredRecord
from store_registry.models import STORE_RECORD

RecordId = tuple[str, str]

# Transaction-level advisory locks, one per record id, taken by every writer of
# `store_record` before it reads the rows. They serialize a local edit and a batch of
# the orchestrator's decisions on the same record. Unlike SELECT ... FOR UPDATE, they
# also lock a record that has no row yet. The locks are taken in lock-id order so that
# two batches cannot deadlock. PostgreSQL evaluates output expressions
# after ORDER BY when ORDER BY does not reference them (SELECT reference page, "SELECT
# List"), so the order holds. Two ids that hash alike share a lock, which only
# serializes them. On SQLite the engine's single connection serializes every
# transaction, so no lock is taken there.
#
# The same statement first takes BULK_APPLY_LOCK in shared mode. The join evaluates the
# one-row `bulk` subquery before it produces a row, and the sort reads every row before
# the outer SELECT takes a record lock. So the shared lock comes first.
_LOCK_RECORDS = text(
    "SELECT pg_advisory_xact_lock(lock_id) FROM ("
    " SELECT DISTINCT hashtextextended(record_id, 0) AS lock_id"
    " FROM (SELECT pg_advisory_xact_lock_shared(:bulk_lock_id) AS taken) AS bulk"
    " CROSS JOIN unnest(CAST(CAST(:record_ids AS TEXT) AS TEXT[])) AS record_id"
    ") AS ids ORDER BY lock_id"
)

# The advisory lock id of bulk applies ("lojasync" in ASCII); see store_registry.bulk.
BULK_APPLY_LOCK = 0x6C6F6A6173796E63

# Counts and digests per entity, in one pass over the table. The inner query blanks the
# content hash of every row that is not confirmed (never resolved, deleted, or without
# data). string_agg skips the NULL lines that this yields, so the digest covers the
# confirmed rows only, as the count does.
_ENTITY_SUMMARIES = text(
    "SELECT entity,"
    " count(*) FILTER (WHERE content_hash IS NOT NULL) AS confirmed,"
    f" {ENTITY_DIGEST_SQL} AS digest,"
    " count(*) FILTER (WHERE pending_action IS NOT NULL) AS pending"
    " FROM ("
    "  SELECT entity, record_key, pending_action,"
    "   CASE WHEN revision > 0 AND NOT deleted AND data IS NOT NULL"
    "    THEN content_hash END AS content_hash"
    "  FROM store_record"
    " ) AS rows GROUP BY entity"
)

_COLUMNS_UPDATED_ON_CONFLICT = (
    "revision",
    "data",
    "content_hash",
    "deleted",
    "local",
    "pending",
    "pending_action",
    "pending_event_id",
    "pending_since",
    "last_rejection",
    "updated_at",
)


@dataclass(frozen=True)
class EntitySummary:
    """Summary of one entity in this store: confirmed records, their digest, pending edits."""

    count: int
    digest: str
    pending: int

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "digest": self.digest, "pending": self.pending}


async def lock_records(connection: AsyncConnection, record_ids: Iterable[RecordId]) -> None:
    """Lock records until the transaction ends (see `_LOCK_RECORDS`).

    Takes `BULK_APPLY_LOCK` in shared mode first, so that a bulk apply, which holds it in
    exclusive mode, never runs between this transaction's read and its write.
    """
    names = sorted({f"{entity}/{key}" for entity, key in record_ids})
    if names and dialect_of(connection) == POSTGRESQL:
        await connection.execute(
            _LOCK_RECORDS, {"bulk_lock_id": BULK_APPLY_LOCK, "record_ids": array_text(names)}
        )


async def load_records(
    connection: AsyncConnection, record_ids: Collection[RecordId]
) -> dict[RecordId, StoredRecord]:
    if not record_ids:
        return {}
    rows = await fetch_by_record_ids(connection, STORE_RECORD, sorted(record_ids))
    return {(row.entity, row.record_key): _from_row(row) for row in rows}


async def load_record(connection: AsyncConnection, entity: str, key: str) -> StoredRecord | None:
    columns = STORE_RECORD.c
    row = (
        await connection.execute(
            select(STORE_RECORD).where(columns.entity == entity, columns.record_key == key)
        )
    ).one_or_none()
    return _from_row(row) if row is not None else None


_SAVE_RECORDS = Upsert(STORE_RECORD, ("entity", "record_key"), _COLUMNS_UPDATED_ON_CONFLICT)


async def save_records(
    connection: AsyncConnection, records: Sequence[StoredRecord], now: datetime
) -> None:
    """Insert or replace the rows of `records` with one statement."""
    if not records:
        return
    await _SAVE_RECORDS.execute(connection, [_to_row(record, now) for record in records])


async def list_records(
    connection: AsyncConnection,
    entity: str,
    *,
    after: str | None,
    limit: int,
    include_deleted: bool,
) -> list[StoredRecord]:
    """Return up to `limit` records of `entity` with keys after `after`, in key order.

    Without `include_deleted`, tombstones are left out, but a record recreated here and
    still pending is not.
    """
    columns = STORE_RECORD.c
    query = select(STORE_RECORD).where(columns.entity == entity)
    if after is not None:
        query = query.where(columns.record_key > after)
    if not include_deleted:
        query = query.where((~columns.deleted) | (columns.pending_action == UPSERT))
    query = query.order_by(columns.record_key).limit(limit)
    return [_from_row(row) for row in await connection.execute(query)]


async def entity_summaries(
    connection: AsyncConnection, entities: Iterable[str]
) -> dict[str, EntitySummary]:
    """Return a summary of every entity in `entities`, with count 0 for one without rows."""
    if dialect_of(connection) == POSTGRESQL:
        found = {
            row.entity: EntitySummary(row.confirmed, row.digest, row.pending)
            for row in await connection.execute(_ENTITY_SUMMARIES)
        }
    else:
        found = await _summaries_in_python(connection)
    empty = EntitySummary(0, EMPTY_DIGEST, 0)
    return {entity: found.get(entity, empty) for entity in sorted(entities)}


async def _summaries_in_python(connection: AsyncConnection) -> dict[str, EntitySummary]:
    # SQLite has no ordered string_agg nor md5, so the rows' hashes are read and the
    # digest is computed here with lojasync.digest.entity_digest, which ENTITY_DIGEST_SQL
    # reproduces. An embedded store has few enough records for that.
    columns = STORE_RECORD.c
    confirmed = (columns.revision > 0) & ~columns.deleted & columns.data.is_not(None)
    rows = await connection.execute(
        select(
            columns.entity,
            columns.record_key,
            columns.content_hash,
            columns.pending_action,
            confirmed.label("confirmed"),
        )
    )
    hashes: dict[str, list[tuple[str, str]]] = {}
    pending: dict[str, int] = {}
    for row in rows:
        hashes.setdefault(row.entity, [])
        pending[row.entity] = pending.get(row.entity, 0) + (row.pending_action is not None)
        if row.confirmed and row.content_hash is not None:
            hashes[row.entity].append((row.record_key, row.content_hash))
    return {
        entity: EntitySummary(len(pairs), entity_digest(pairs), pending[entity])
        for entity, pairs in hashes.items()
    }


def _to_row(record: StoredRecord, now: datetime) -> dict[str, Any]:
    return {
        "entity": record.entity,
        "record_key": record.record_key,
        "revision": record.revision,
        "data": record.data,
        "content_hash": record.content_hash,
        "deleted": record.deleted,
        "local": record.local,
        "pending": record.pending,
        "pending_action": record.pending_action,
        "pending_event_id": record.pending_event_id,
        "pending_since": record.pending_since,
        "last_rejection": record.last_rejection,
        "updated_at": now,
    }


def _from_row(row: Row[Any]) -> StoredRecord:
    return StoredRecord(
        entity=row.entity,
        record_key=row.record_key,
        revision=row.revision,
        data=row.data,
        deleted=row.deleted,
        local=row.local or {},
        pending=row.pending,
        pending_action=row.pending_action,
        pending_event_id=row.pending_event_id,
        pending_since=row.pending_since,
        last_rejection=row.last_rejection,
    )
