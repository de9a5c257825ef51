"""A store's own, never-synchronized data, held apart until onboarding decides each record.

The store's integrator loads the legacy records with `POST /v1/onboarding/records` (its
own keys, its own field values). They stay in `onboarding_record`, invisible to the
back-office API, while the orchestrator matches them to the ERP's records by natural key
and a person decides the cases the policy leaves open. Each record leaves the table when
onboarding settled it (`POST /v1/onboarding/settled`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Table, Text, delete, select, tuple_
from sqlmodel import Field as ModelField
from sqlmodel import SQLModel

from lojasync.catalog import ENTITIES
from lojasync.persistence import Upsert, UtcDateTime, byte_ordered_text, json_document, utc_now
from lojasync.postgresql_only import PostgresqlRequired, require_postgresql
from store_registry.handlers import StoreRegistry

logger = logging.getLogger(__name__)


class OnboardingRecord(SQLModel, table=True):
    """One legacy record of this store, under the store's own key, waiting for onboarding."""

    __tablename__ = "onboarding_record"

    entity: str = ModelField(sa_column=Column(Text, primary_key=True))
    local_key: str = ModelField(sa_column=Column(byte_ordered_text(), primary_key=True))
    fields: dict[str, Any] = ModelField(sa_column=Column(json_document(), nullable=False))
    loaded_at: datetime = ModelField(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


ONBOARDING_RECORD: Table = OnboardingRecord.__table__  # type: ignore[attr-defined]
ONBOARDING_TABLES = (ONBOARDING_RECORD,)

_SAVE = Upsert(ONBOARDING_RECORD, ("entity", "local_key"), ("fields", "loaded_at"))

router = APIRouter(prefix="/v1/onboarding", tags=["onboarding"])


def _registry(request: Request) -> StoreRegistry:
    """Return the registry, responding 501 when the store's database is not PostgreSQL."""
    registry: StoreRegistry = request.app.state.registry
    try:
        require_postgresql(registry.runtime.engine, "onboarding")
    except PostgresqlRequired as exc:
        raise HTTPException(501, exc.as_dict()) from exc
    return registry


Registry = Annotated[StoreRegistry, Depends(_registry)]


class LegacyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str
    key: str = Field(min_length=1, description="the store's own key of the record")
    fields: dict[str, Any]


class LegacyRecords(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[LegacyRecord] = Field(max_length=10_000)


class SettledRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str
    key: str


class SettledRecords(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[SettledRecord] = Field(max_length=100_000)


@router.post("/records")
async def load_records(registry: Registry, body: LegacyRecords) -> dict[str, Any]:
    """Load legacy records (at most 10,000 a request); a repeated key replaces the row."""
    unknown = sorted({record.entity for record in body.records if record.entity not in ENTITIES})
    if unknown:
        names = ", ".join(unknown)
        raise HTTPException(
            422,
            {
                "code": "unknown_entity",
                "field": "records[].entity",
                "message": f"records[].entity: unknown entities {names}; use the catalog's "
                "entity names",
                "message_pt_br": f"records[].entity: entidades desconhecidas {names}; use os "
                "nomes de entidade do catálogo",
                "entities": sorted(ENTITIES),
            },
        )
    now = utc_now()
    rows = [
        {"entity": r.entity, "local_key": r.key, "fields": r.fields, "loaded_at": now}
        for r in body.records
    ]
    if rows:
        async with registry.runtime.transaction() as connection:
            await _SAVE.execute(connection, rows)
    logger.info(
        "legacy records loaded for onboarding",
        extra={"store_id": registry.store_id, "records": len(rows)},
    )
    return {"loaded": len(rows)}


@router.get("/records")
async def list_records(
    registry: Registry,
    after_entity: str = "",
    after_key: str = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
) -> dict[str, Any]:
    """Page through the legacy records in (entity, key) order."""
    columns = ONBOARDING_RECORD.c
    query = (
        select(columns.entity, columns.local_key, columns.fields)
        .where(tuple_(columns.entity, columns.local_key) > tuple_(after_entity, after_key))
        .order_by(columns.entity, columns.local_key)
        .limit(limit)
    )
    async with registry.runtime.engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    items = [{"entity": row.entity, "key": row.local_key, "fields": row.fields} for row in rows]
    last = items[-1] if len(items) == limit else None
    return {
        "items": items,
        "next": {"after_entity": last["entity"], "after_key": last["key"]} if last else None,
    }


@router.delete("/records")
async def delete_records(registry: Registry, entity: str | None = None) -> dict[str, Any]:
    """Remove the loaded legacy records, all of them or those of `entity`, to load again."""
    if entity is not None and entity not in ENTITIES:
        raise HTTPException(
            422,
            {
                "code": "unknown_entity",
                "field": "entity",
                "message": f"entity: unknown entity {entity}; use one of: "
                f"{', '.join(sorted(ENTITIES))}",
                "message_pt_br": f"entity: entidade desconhecida {entity}; use uma destas: "
                f"{', '.join(sorted(ENTITIES))}",
            },
        )
    statement = delete(ONBOARDING_RECORD)
    if entity is not None:
        statement = statement.where(ONBOARDING_RECORD.c.entity == entity)
    async with registry.runtime.transaction() as connection:
        removed = (await connection.execute(statement)).rowcount
    logger.info(
        "legacy records removed",
        extra={"store_id": registry.store_id, "entity": entity, "records": removed},
    )
    return {"removed": removed}


@router.post("/settled")
async def settle_records(registry: Registry, body: SettledRecords) -> dict[str, Any]:
    """Remove legacy records that onboarding settled."""
    ids = [(record.entity, record.key) for record in body.records]
    removed = 0
    if ids:
        columns = ONBOARDING_RECORD.c
        async with registry.runtime.transaction() as connection:
            result = await connection.execute(
                delete(ONBOARDING_RECORD).where(tuple_(columns.entity, columns.local_key).in_(ids))
            )
            removed = result.rowcount
    return {"removed": removed}
