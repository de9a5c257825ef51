"""Bootstrap: send an empty store the current state of every record in its scope.

Entities go in dependency order (reference tables before products, products before
prices), each in key order, as `record.batch` messages that the store applies with COPY.
After each page the operation row stores the entity and the last key sent, so a
bootstrap that stops (orchestrator restart, broker failure) resumes from there when it
is requested again. Changes made while a bootstrap runs reach the store as ordinary
`record.resolved` events; the store keeps whichever revision is newer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.batch import BatchPurpose
from lojasync.catalog import ENTITIES
from sync_orchestrator.batches import BatchSender
from sync_orchestrator.operations import OperationLog

logger = logging.getLogger(__name__)

PAGE_ROWS = 5000

_IN_SCOPE = "NOT deleted AND (stores IS NULL OR CAST(:store_id AS TEXT) = ANY(stores))"

_COUNT = text(f"SELECT count(*) FROM record_state WHERE {_IN_SCOPE}")

# One page of records in key order, as ready-made message items: PostgreSQL numbers the
# rows, groups them `per_message` at a time and builds each group's JSON array, so no
# record is parsed or serialized in Python. Each record goes as `record_text` with the
# content hash the orchestrator stored, so the store parses nothing either.
_PAGE = text(
    "SELECT count(*) AS records, max(record_key) AS last_key,"
    " CAST(json_agg(json_build_object("
    "  'entity', entity, 'record_key', record_key, 'revision', revision,"
    "  'deleted', false, 'record_text', CAST(data AS TEXT), 'content_hash', content_hash"
    " ) ORDER BY record_key) AS TEXT) AS items"
    " FROM ("
    "  SELECT entity, record_key, revision, data, content_hash,"
    "   (row_number() OVER (ORDER BY record_key) - 1) / :per_message AS chunk"
    "  FROM ("
    "   SELECT entity, record_key, revision, data, content_hash FROM record_state"
    f"   WHERE entity = :entity AND {_IN_SCOPE} AND record_key > :after"
    "   ORDER BY record_key LIMIT :page_rows"
    "  ) AS page"
    " ) AS numbered GROUP BY chunk ORDER BY chunk"
)


async def _no_rows() -> list[Any]:
    return []


def dependency_order() -> list[str]:
    """Order the catalog's entities so that each comes after the entities it refers to."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(entity: str) -> None:
        if entity in ordered:
            return
        if entity in visiting:
            raise ValueError(f"the catalog's dependencies form a cycle through {entity!r}")
        visiting.add(entity)
        for dependency in ENTITIES[entity].dependencies:
            visit(dependency)
        visiting.discard(entity)
        ordered.append(entity)

    for entity in ENTITIES:
        visit(entity)
    return ordered


class Bootstrapper:
    def __init__(self, engine: AsyncEngine, sender: BatchSender, log: OperationLog) -> None:
        self.engine = engine
        self.sender = sender
        self.log = log

    async def _page(self, store_id: str, entity: str, after: str) -> list[Any]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                _PAGE,
                {
                    "entity": entity,
                    "store_id": store_id,
                    "after": after,
                    "page_rows": PAGE_ROWS,
                    "per_message": self.sender.items_per_message,
                },
            )
            return list(result.all())

    async def count(self, store_id: str) -> int:
        async with self.engine.connect() as connection:
            total = await connection.scalar(_COUNT, {"store_id": store_id})
        return int(total or 0)

    async def run(
        self, operation_id: str, store_id: str, cursor: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Send every record in scope, starting after `cursor` when resuming."""
        order = dependency_order()
        total = await self.count(store_id)
        await self.sender.prepare(store_id)

        start_entity = order[0]
        after = ""
        sent = 0
        messages = 0
        if cursor is not None:
            start_entity = str(cursor["entity"])
            after = str(cursor["after"])
            sent = int(cursor["sent"])
            messages = int(cursor["messages"])
            logger.info(
                "bootstrap resumed",
                extra={"operation_id": operation_id, "store_id": store_id, "entity": start_entity},
            )
        await self.log.progress(operation_id, done=sent, total=max(total, sent))
        per_entity: dict[str, int] = dict(cursor.get("per_entity", {})) if cursor else {}

        for entity in order[order.index(start_entity) :]:
            # The next page is read while the current one is published.
            next_page = asyncio.create_task(self._page(store_id, entity, after))
            try:
                while True:
                    chunks = await next_page
                    if not chunks:
                        break
                    records = sum(chunk.records for chunk in chunks)
                    last_key = chunks[-1].last_key
                    next_page = asyncio.create_task(
                        self._page(store_id, entity, last_key)
                        if records == PAGE_ROWS
                        else _no_rows()
                    )
                    messages += await self.sender.send_serialized(
                        store_id,
                        [chunk.items for chunk in chunks],
                        purpose=BatchPurpose.BOOTSTRAP,
                        operation_id=operation_id,
                        first_sequence=messages,
                    )
                    sent += records
                    per_entity[entity] = per_entity.get(entity, 0) + records
                    await self.log.progress(
                        operation_id,
                        done=sent,
                        cursor={
                            "entity": entity,
                            "after": last_key,
                            "sent": sent,
                            "messages": messages,
                            "per_entity": per_entity,
                        },
                    )
            finally:
                next_page.cancel()
            after = ""

        logger.info(
            "bootstrap sent",
            extra={"operation_id": operation_id, "store_id": store_id, "records": sent},
        )
        return {"records": sent, "messages": messages, "per_entity": per_entity}
