"""Per-entity counts and digests of the current state, overall and per store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from lojasync.catalog import ENTITIES
from lojasync.digest import EMPTY_DIGEST, ENTITY_DIGEST_SQL, entity_digest
from lojasync.persistence import POSTGRESQL, dialect_of
from sync_orchestrator.models import RECORD_STATE

_ALL_RECORDS = text(
    f"SELECT entity, count(*) AS count, {ENTITY_DIGEST_SQL} AS digest "
    "FROM record_state WHERE NOT deleted GROUP BY entity"
)

_STORE_RECORDS = text(
    f"SELECT entity, count(*) AS count, {ENTITY_DIGEST_SQL} AS digest "
    "FROM record_state WHERE NOT deleted AND (stores IS NULL OR :store_id = ANY(stores)) "
    "GROUP BY entity"
)


def _summaries(rows: Any) -> dict[str, dict[str, Any]]:
    found = {row.entity: {"count": row.count, "digest": row.digest} for row in rows}
    return _with_every_entity(found)


def _with_every_entity(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        entity: found.get(entity, {"count": 0, "digest": EMPTY_DIGEST})
        for entity in sorted(ENTITIES)
    }


async def entity_summaries(connection: AsyncConnection) -> dict[str, dict[str, Any]]:
    if dialect_of(connection) != POSTGRESQL:
        return await _summaries_in_python(connection, None)
    return _summaries(await connection.execute(_ALL_RECORDS))


async def store_summaries(connection: AsyncConnection, store_id: str) -> dict[str, dict[str, Any]]:
    """Counts and digests of what store `store_id` should hold."""
    if dialect_of(connection) != POSTGRESQL:
        return await _summaries_in_python(connection, store_id)
    return _summaries(await connection.execute(_STORE_RECORDS, {"store_id": store_id}))


async def _summaries_in_python(
    connection: AsyncConnection, store_id: str | None
) -> dict[str, dict[str, Any]]:
    # SQLite has no ordered string_agg nor md5: the hashes are read and digested here,
    # the same way lojasync.digest.entity_digest defines it.
    columns = RECORD_STATE.c
    rows = await connection.execute(
        select(columns.entity, columns.record_key, columns.content_hash, columns.stores).where(
            ~columns.deleted
        )
    )
    counts: dict[str, int] = {}
    pairs: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if store_id is not None and row.stores is not None and store_id not in row.stores:
            continue
        counts[row.entity] = counts.get(row.entity, 0) + 1
        hashes = pairs.setdefault(row.entity, [])
        if row.content_hash is not None:
            hashes.append((row.record_key, row.content_hash))
    found = {
        entity: {"count": counts[entity], "digest": entity_digest(hashes)}
        for entity, hashes in pairs.items()
    }
    return _with_every_entity(found)
