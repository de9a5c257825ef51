"""The store's side of drift detection and repair, served to the orchestrator over HTTP.

`GET /v1/drift/buckets` returns the per-entity, per-bucket digests of the confirmed
records (see `lojasync.buckets`), `POST /v1/drift/rows` the rows of chosen buckets, and
`POST /v1/drift/raise` sends this store's version of chosen records to the orchestrator
as changes, which is how drift in records the store may edit is repaired.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from lojasync.buckets import MAX_BUCKETS, MIN_BUCKETS, bucket_query, bucket_rows_query
from lojasync.catalog import ENTITIES
from lojasync.envelope import RECORD_CHANGED, Envelope, changed_key
from lojasync.ids import new_id
from lojasync.partitioning import outgoing_event
from lojasync.persistence import add_outbox, utc_now
from lojasync.postgresql_only import PostgresqlRequired, require_postgresql
from store_registry.domain import UPSERT, StoredRecord
from store_registry.handlers import StoreRegistry
from store_registry.repository import load_records, lock_records, save_records

logger = logging.getLogger(__name__)

# Confirmed records only: what the orchestrator resolved and the store did not delete.
_CONFIRMED = (
    "(SELECT entity, record_key, content_hash, revision FROM store_record"
    " WHERE revision > 0 AND NOT deleted AND data IS NOT NULL AND content_hash IS NOT NULL)"
    " AS confirmed"
)
_BUCKETS = text(bucket_query(_CONFIRMED))
_BUCKET_ROWS = text(bucket_rows_query(_CONFIRMED))

router = APIRouter(prefix="/v1/drift", tags=["drift"])


def _registry(request: Request) -> StoreRegistry:
    """Return the registry, responding 501 when the store's database is not PostgreSQL."""
    registry: StoreRegistry = request.app.state.registry
    try:
        require_postgresql(registry.runtime.engine, "drift detection")
    except PostgresqlRequired as exc:
        raise HTTPException(501, exc.as_dict()) from exc
    return registry


Registry = Annotated[StoreRegistry, Depends(_registry)]
BucketCount = Annotated[int, Query(ge=MIN_BUCKETS, le=MAX_BUCKETS)]


class BucketRowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str
    bucket_count: int = Field(ge=MIN_BUCKETS, le=MAX_BUCKETS)
    buckets: list[int] = Field(max_length=MAX_BUCKETS)


class RaisedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str
    record_key: str
    base_revision: int = Field(
        ge=0, description="the orchestrator's revision of the record; 0 when it has none"
    )
    fields: dict[str, Any] | None = Field(
        default=None,
        description="the shared fields to raise; null raises the store's confirmed record",
    )


class RaiseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[RaisedRecord] = Field(max_length=10_000)


@router.get("/buckets")
async def buckets(registry: Registry, bucket_count: BucketCount) -> dict[str, Any]:
    """Return [bucket, count, sum of row hashes] per entity, for non-empty buckets."""
    async with registry.runtime.engine.connect() as connection:
        rows = await connection.execute(_BUCKETS, {"bucket_count": bucket_count})
        entities: dict[str, list[list[object]]] = {}
        for row in rows:
            entities.setdefault(row.entity, []).append([row.bucket, row.records, row.total])
    return {"store_id": registry.store_id, "bucket_count": bucket_count, "entities": entities}


@router.post("/rows")
async def bucket_rows(registry: Registry, body: BucketRowsRequest) -> dict[str, Any]:
    """Return [record key, content hash, revision] of the confirmed rows in `buckets`."""
    async with registry.runtime.engine.connect() as connection:
        rows = await connection.execute(
            _BUCKET_ROWS,
            {"entity": body.entity, "bucket_count": body.bucket_count, "buckets": body.buckets},
        )
        found = [[row.record_key, row.content_hash, row.revision] for row in rows]
    return {"entity": body.entity, "rows": found}


@router.post("/raise")
async def raise_records(registry: Registry, body: RaiseRequest) -> dict[str, Any]:
    """Send this store's version of each record to the orchestrator as a change.

    The version is the record's confirmed data, or the `fields` given (onboarding raises
    a store's legacy record under the ERP's key this way). A record with a pending edit is
    skipped, since a decision on it is already coming;
    so is a record this store does not hold. The orchestrator decides each change under
    the policy, as it decides a back-office edit.
    """
    record_ids = [(item.entity, item.record_key) for item in body.records]
    requested = {(item.entity, item.record_key): item for item in body.records}
    unknown = sorted({entity for entity, _ in record_ids if entity not in ENTITIES})
    raised: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    now = utc_now()

    async with registry.runtime.transaction() as connection:
        await lock_records(connection, record_ids)
        stored = await load_records(connection, record_ids)
        events = []
        updated = []
        for record_id in record_ids:
            entity, key = record_id
            request = requested[record_id]
            record = stored.get(record_id)
            if request.fields is not None and entity not in unknown:
                record = record or StoredRecord(entity, key)
                fields = dict(request.fields)
            elif record is None or record.data is None or record.deleted or entity in unknown:
                skipped.append({"entity": entity, "record_key": key, "reason": "not_held"})
                continue
            else:
                fields = dict(record.data)
            if record.pending_action is not None:
                skipped.append({"entity": entity, "record_key": key, "reason": "pending"})
                continue
            event_id = new_id()
            event = Envelope(
                id=event_id,
                source=registry.source,
                type=RECORD_CHANGED,
                subject=f"{entity}/{key}",
                entity=entity,
                recordkey=key,
                origin=registry.origin,
                baserevision=request.base_revision,
                data={"action": UPSERT, "fields": fields},
            )
            events.append(
                outgoing_event(event, changed_key(entity, registry.origin), registry.policy)
            )
            updated.append(
                replace(
                    record,
                    pending=fields,
                    pending_action=UPSERT,
                    pending_event_id=event_id,
                    pending_since=now,
                )
            )
            raised.append({"entity": entity, "record_key": key, "event_id": event_id})
        await save_records(connection, updated, now)
        await add_outbox(connection, events)

    logger.info(
        "store versions raised as changes",
        extra={"store_id": registry.store_id, "raised": len(raised), "skipped": len(skipped)},
    )
    return {"raised": raised, "skipped": skipped}
