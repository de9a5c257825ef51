"""SQL of the gateway: change ids, deliveries and rejections, on PostgreSQL or SQLite.

Bulk writes take one statement per table (`unnest` of arrays on PostgreSQL, multi-row
VALUES on SQLite) so that a push of 10,000 records costs a handful of round trips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, Row, Table, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.types import Text

from erp_gateway.tables import ERP_CHANGE, ERP_DELIVERY, ERP_REJECTION, DeliveryStatus
from lojasync.persistence import (
    POSTGRESQL,
    SQLITE,
    Upsert,
    UtcDateTime,
    dialect_of,
    insert_new_rows,
    json_document,
    utc_now,
)

# asyncpg accepts at most 32,767 bind parameters per statement, SQLite 32,766.
_SQLITE_IDS_PER_QUERY = 30_000


@dataclass(frozen=True)
class ChangeRow:
    change_id: str
    event_id: str
    entity: str
    record_key: str


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed by the worker, with what it needs to POST it."""

    event_id: str
    sequence: int
    entity: str
    record_key: str
    revision: int
    attempts: int
    payload: dict[str, Any]


_INSERT_CHANGES = text(
    """
    INSERT INTO erp_change (change_id, event_id, entity, record_key, received_at)
    SELECT change_id, event_id, entity, record_key, :received_at
    FROM unnest(:change_ids, :event_ids, :entities, :record_keys)
        AS pushed(change_id, event_id, entity, record_key)
    ON CONFLICT (change_id) DO NOTHING
    RETURNING change_id
    """
).bindparams(
    bindparam("change_ids", type_=ARRAY(Text)),
    bindparam("event_ids", type_=ARRAY(Text)),
    bindparam("entities", type_=ARRAY(Text)),
    bindparam("record_keys", type_=ARRAY(Text)),
)


async def insert_changes(connection: AsyncConnection, rows: Sequence[ChangeRow]) -> set[str]:
    """Insert change ids; return the ones that were new (the others are duplicates).

    A concurrent push of the same change id waits for the first to commit and then
    finds the id present, so each change id produces at most one event.
    """
    if not rows:
        return set()
    if dialect_of(connection) != POSTGRESQL:
        received_at = utc_now()
        return await insert_new_rows(
            connection,
            ERP_CHANGE,
            [
                {
                    "change_id": row.change_id,
                    "event_id": row.event_id,
                    "entity": row.entity,
                    "record_key": row.record_key,
                    "received_at": received_at,
                }
                for row in rows
            ],
            key_column="change_id",
        )
    result = await connection.execute(
        _INSERT_CHANGES,
        {
            "change_ids": [row.change_id for row in rows],
            "event_ids": [row.event_id for row in rows],
            "entities": [row.entity for row in rows],
            "record_keys": [row.record_key for row in rows],
            "received_at": utc_now(),
        },
    )
    return {row[0] for row in result}


async def event_ids_of_changes(
    connection: AsyncConnection, change_ids: Sequence[str]
) -> dict[str, str]:
    """Map change ids to the event ids they produced when first pushed."""
    if not change_ids:
        return {}
    columns = select(ERP_CHANGE.c.change_id, ERP_CHANGE.c.event_id)
    if dialect_of(connection) == POSTGRESQL:
        rows = await connection.execute(
            columns.where(
                ERP_CHANGE.c.change_id
                == any_(bindparam("ids", list(change_ids), type_=ARRAY(Text)))
            )
        )
        return {row.change_id: row.event_id for row in rows}
    found: dict[str, str] = {}
    ids = list(change_ids)
    for start in range(0, len(ids), _SQLITE_IDS_PER_QUERY):
        chunk = ids[start : start + _SQLITE_IDS_PER_QUERY]
        rows = await connection.execute(columns.where(ERP_CHANGE.c.change_id.in_(chunk)))
        found.update({row.change_id: row.event_id for row in rows})
    return found


async def insert_deliveries(connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert deliveries in list order, which is their delivery order; skip known event ids."""
    await _insert_ignoring_duplicates(connection, ERP_DELIVERY, rows)


async def insert_rejections(connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    await _insert_ignoring_duplicates(connection, ERP_REJECTION, rows)


async def _insert_ignoring_duplicates(
    connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    if not rows:
        return
    values = [dict(row) for row in rows]
    if dialect_of(connection) == SQLITE:
        # SQLite fills an identity column only when it is the INTEGER PRIMARY KEY, so the
        # sequence is numbered here; its single connection serializes the writers.
        last: int = (
            await connection.scalar(select(func.coalesce(func.max(table.c.sequence), 0))) or 0
        )
        for offset, row in enumerate(values, start=1):
            row["sequence"] = last + offset
    await _INSERT_IGNORING[table.name].execute(connection, values)


# Claims the deliveries due now, oldest first, and takes only the lowest pending revision
# of each record, so a record's revisions reach the ERP in order even with several
# requests in flight. Moving next_attempt_at to the lease end hides a claimed delivery
# from other workers. If this process dies mid-request, the delivery is due again when
# the lease ends. SKIP LOCKED lets two gateway instances claim at the same time.
# NOTE: the order is kept among pending deliveries only. A lower revision that arrives after
# a higher one was delivered is still sent, so the ERP must ignore a revision older than
# the one it holds (each payload carries its revision).
_CLAIM_DUE_SQL = """
    WITH due AS (
        SELECT candidate.event_id
        FROM erp_delivery AS candidate
        WHERE candidate.status = 'pending'
          AND candidate.next_attempt_at <= :now
          AND NOT EXISTS (
              SELECT 1
              FROM erp_delivery AS earlier
              WHERE earlier.status = 'pending'
                AND earlier.entity = candidate.entity
                AND earlier.record_key = candidate.record_key
                AND (earlier.revision, earlier.sequence)
                    < (candidate.revision, candidate.sequence)
          )
        ORDER BY candidate.sequence
        LIMIT :limit
        {lock}
    )
    UPDATE erp_delivery AS claimed
    SET next_attempt_at = :lease_until
    FROM due
    WHERE claimed.event_id = due.event_id
    RETURNING {returning}
    """
_CLAIMED_COLUMNS = (
    "event_id",
    "sequence",
    "entity",
    "record_key",
    "revision",
    "attempts",
    "payload",
)


def _claim_due_statement(lock: str, returned_table: str) -> TextualSelect:
    returning = ", ".join(f"{returned_table}{column}" for column in _CLAIMED_COLUMNS)
    return (
        text(_CLAIM_DUE_SQL.format(lock=lock, returning=returning))
        .bindparams(
            bindparam("now", type_=UtcDateTime()),
            bindparam("lease_until", type_=UtcDateTime()),
        )
        .columns(
            event_id=Text(),
            sequence=BigInteger(),
            entity=Text(),
            record_key=Text(),
            revision=Integer(),
            attempts=Integer(),
            payload=json_document(),
        )
    )


# SQLite runs one transaction at a time, so it needs (and has) no row locks. Its
# RETURNING clause names the updated table's columns without the alias; PostgreSQL's
# needs the alias, because `due` has an event_id column too.
_CLAIM_DUE = {
    POSTGRESQL: _claim_due_statement("FOR UPDATE SKIP LOCKED", "claimed."),
    SQLITE: _claim_due_statement("", ""),
}
_INSERT_IGNORING = {
    table.name: Upsert(table, [column.name for column in table.primary_key.columns])
    for table in (ERP_DELIVERY, ERP_REJECTION)
}


async def claim_due_deliveries(
    connection: AsyncConnection, *, now: datetime, lease_until: datetime, limit: int
) -> list[DueDelivery]:
    rows = await connection.execute(
        _CLAIM_DUE[dialect_of(connection)], {"now": now, "lease_until": lease_until, "limit": limit}
    )
    claimed = [
        DueDelivery(
            event_id=row.event_id,
            sequence=row.sequence,
            entity=row.entity,
            record_key=row.record_key,
            revision=row.revision,
            attempts=row.attempts,
            payload=row.payload,
        )
        for row in rows
    ]
    claimed.sort(key=lambda delivery: delivery.sequence)
    return claimed


async def mark_delivered(connection: AsyncConnection, event_id: str, *, attempts: int) -> None:
    now = utc_now()
    await connection.execute(
        update(ERP_DELIVERY)
        .where(ERP_DELIVERY.c.event_id == event_id)
        .values(
            status=DeliveryStatus.DELIVERED.value,
            attempts=attempts,
            delivered_at=now,
            next_attempt_at=now,
            last_error=None,
        )
    )


async def mark_retry(
    connection: AsyncConnection,
    event_id: str,
    *,
    attempts: int,
    next_attempt_at: datetime,
    error: str,
) -> None:
    await connection.execute(
        update(ERP_DELIVERY)
        .where(ERP_DELIVERY.c.event_id == event_id)
        .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error)
    )


async def mark_failed(
    connection: AsyncConnection, event_id: str, *, attempts: int, error: str
) -> None:
    await connection.execute(
        update(ERP_DELIVERY)
        .where(ERP_DELIVERY.c.event_id == event_id)
        .values(status=DeliveryStatus.FAILED.value, attempts=attempts, last_error=error)
    )


async def next_due_at(connection: AsyncConnection) -> datetime | None:
    """Return the earliest next_attempt_at of the pending deliveries."""
    value: datetime | None = await connection.scalar(
        select(func.min(ERP_DELIVERY.c.next_attempt_at)).where(
            ERP_DELIVERY.c.status == DeliveryStatus.PENDING.value
        )
    )
    return value


async def list_deliveries(
    connection: AsyncConnection,
    *,
    status: DeliveryStatus | None,
    after: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    query = select(ERP_DELIVERY)
    if status is not None:
        query = query.where(ERP_DELIVERY.c.status == status.value)
    if after is not None:
        query = query.where(ERP_DELIVERY.c.sequence > after)
    rows = await connection.execute(query.order_by(ERP_DELIVERY.c.sequence).limit(limit))
    return rows.all()


async def get_delivery(connection: AsyncConnection, event_id: str) -> Row[Any] | None:
    rows = await connection.execute(select(ERP_DELIVERY).where(ERP_DELIVERY.c.event_id == event_id))
    return rows.first()


async def retry_failed_delivery(connection: AsyncConnection, event_id: str) -> Row[Any] | None:
    """Set a failed delivery back to pending with a fresh attempt count.

    Return the updated row, or None when no failed delivery has this event id.
    """
    rows = await connection.execute(
        update(ERP_DELIVERY)
        .where(
            ERP_DELIVERY.c.event_id == event_id,
            ERP_DELIVERY.c.status == DeliveryStatus.FAILED.value,
        )
        .values(status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=utc_now())
        .returning(*ERP_DELIVERY.c)
    )
    return rows.first()


async def count_deliveries(connection: AsyncConnection) -> dict[str, int]:
    rows = await connection.execute(
        select(ERP_DELIVERY.c.status, func.count()).group_by(ERP_DELIVERY.c.status)
    )
    counts = {status.value: 0 for status in DeliveryStatus}
    counts.update({row[0]: row[1] for row in rows})
    return counts


async def list_rejections(
    connection: AsyncConnection, *, after: int | None, limit: int
) -> Sequence[Row[Any]]:
    """List rejections oldest first, each with the change_id of the rejected change."""
    query = select(ERP_REJECTION, ERP_CHANGE.c.change_id).join(
        ERP_CHANGE, ERP_CHANGE.c.event_id == ERP_REJECTION.c.causation_id, isouter=True
    )
    if after is not None:
        query = query.where(ERP_REJECTION.c.sequence > after)
    rows = await connection.execute(query.order_by(ERP_REJECTION.c.sequence).limit(limit))
    return rows.all()
