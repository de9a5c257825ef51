"""Per-entity counts and digests of the current state, overall and per store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from lojasync.catalog import ENTITIES
from lojasync.digest import EMPTY_DIGEST, ENTITY_DIGEST_SQL

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
    return {
        entity: found.get(entity, {"count": 0, "digest": EMPTY_DIGEST})
        for entity in sorted(ENTITIES)
    }


async def entity_summaries(connection: AsyncConnection) -> dict[str, dict[str, Any]]:
    return _summaries(await connection.execute(_ALL_RECORDS))


async def store_summaries(connection: AsyncConnection, store_id: str) -> dict[str, dict[str, Any]]:
    """Counts and digests of what store `store_id` should hold."""
    return _summaries(await connection.execute(_STORE_RECORDS, {"store_id": store_id}))
