"""The orchestrator's FastAPI app: read access to the decisions, and convergence status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import select

from lojasync.api_errors import request_invalid
from lojasync.catalog import ENTITIES
from lojasync.logs import configure_logging
from lojasync.persistence import database_ready
from lojasync.policy import load_policy
from lojasync.reference import load_reference_tables
from lojasync.service import ServiceRuntime, Subscription
from lojasync.topology import orchestrator_partition
from sync_orchestrator.handlers import ChangeHandler
from sync_orchestrator.models import EVENT_LOG, KNOWN_STORE, RECORD_STATE, TABLES
from sync_orchestrator.onboarding import ONBOARDING_TABLES
from sync_orchestrator.operations import OPERATION_TABLES
from sync_orchestrator.operations_api import Operations, build_router
from sync_orchestrator.settings import OrchestratorSettings
from sync_orchestrator.status import entity_summaries, store_summaries


def build_runtime(settings: OrchestratorSettings) -> tuple[ServiceRuntime, list[Subscription]]:
    """Build the runtime and one subscription per partition of the orchestrator's input.

    Each partition queue has a single active consumer, so when several orchestrators run,
    RabbitMQ hands each partition to one of them and the others stand by.
    """
    runtime = ServiceRuntime("sync-orchestrator", settings.database_url, settings)
    handler = ChangeHandler(runtime, load_policy(), load_reference_tables())
    subscriptions = [
        Subscription(orchestrator_partition(index), (), handler)
        for index in range(settings.partitions)
    ]
    return runtime, subscriptions


def _unknown_entity(entity: str) -> HTTPException:
    known = ", ".join(sorted(ENTITIES))
    return HTTPException(
        422,
        {
            "code": "unknown_entity",
            "message": f"entity {entity!r} is unknown; use one of: {known}",
            "message_pt_br": f"a entidade {entity!r} não existe; use uma destas: {known}",
            "entities": sorted(ENTITIES),
        },
    )


def _state_view(row: Any) -> dict[str, Any]:
    return {
        "entity": row.entity,
        "record_key": row.record_key,
        "revision": row.revision,
        "deleted": row.deleted,
        "record": row.data,
        "stores": row.stores,
        "owner_store": row.owner_store,
        "origin": row.origin,
        "updated_at": row.updated_at.isoformat(),
    }


def create_app(
    settings: OrchestratorSettings | None = None,
    *,
    store_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; `store_transport` replaces the HTTP transport to the stores' APIs."""
    settings = settings or OrchestratorSettings()
    runtime, subscriptions = build_runtime(settings)
    operations = Operations(runtime, load_policy(), store_transport=store_transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start([*TABLES, *OPERATION_TABLES, *ONBOARDING_TABLES], subscriptions)
        await operations.log.mark_interrupted()
        operations.start_schedule(settings.drift_check_seconds)
        try:
            yield
        finally:
            await operations.close()
            await runtime.stop()

    app = FastAPI(title="lojasync sync-orchestrator", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.state.runtime = runtime
    app.state.operations = operations
    app.include_router(build_router())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        database = await database_ready(runtime.engine)
        broker = runtime.broker_ready
        status = 200 if database and broker else 503
        return JSONResponse({"database": database, "broker": broker}, status_code=status)

    @app.get("/v1/records/{entity}")
    async def list_records(
        entity: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        include_deleted: bool = False,
    ) -> dict[str, Any]:
        if entity not in ENTITIES:
            raise _unknown_entity(entity)
        query = select(RECORD_STATE).where(RECORD_STATE.c.entity == entity)
        if after is not None:
            query = query.where(RECORD_STATE.c.record_key > after)
        if not include_deleted:
            query = query.where(RECORD_STATE.c.deleted.is_(False))
        query = query.order_by(RECORD_STATE.c.record_key).limit(limit)
        async with runtime.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        items = [_state_view(row) for row in rows]
        return {
            "items": items,
            "next_after": items[-1]["record_key"] if len(items) == limit else None,
        }

    @app.get("/v1/records/{entity}/{record_key}")
    async def get_record(entity: str, record_key: str) -> dict[str, Any]:
        if entity not in ENTITIES:
            raise _unknown_entity(entity)
        async with runtime.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(RECORD_STATE).where(
                        RECORD_STATE.c.entity == entity, RECORD_STATE.c.record_key == record_key
                    )
                )
            ).first()
        if row is None:
            raise HTTPException(
                404,
                {
                    "code": "record_not_found",
                    "message": f"{entity} {record_key} does not exist",
                    "message_pt_br": f"{entity} {record_key} não existe",
                },
            )
        return _state_view(row)

    @app.get("/v1/records/{entity}/{record_key}/events")
    async def record_events(entity: str, record_key: str) -> dict[str, Any]:
        if entity not in ENTITIES:
            raise _unknown_entity(entity)
        columns = EVENT_LOG.c
        async with runtime.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(EVENT_LOG)
                    .where(columns.entity == entity, columns.record_key == record_key)
                    .order_by(columns.seq)
                )
            ).all()
        return {
            "items": [
                {
                    "seq": row.seq,
                    "event_id": row.event_id,
                    "kind": row.kind,
                    "revision": row.revision,
                    "origin": row.origin,
                    "causation_id": row.causation_id,
                    "deleted": row.deleted,
                    "record": row.data,
                    "stores": row.stores,
                    "reason": row.reason,
                    "recorded_at": row.recorded_at.isoformat(),
                }
                for row in rows
            ]
        }

    @app.get("/v1/stores")
    async def stores() -> dict[str, Any]:
        async with runtime.engine.connect() as connection:
            rows = (
                await connection.execute(select(KNOWN_STORE).order_by(KNOWN_STORE.c.store_id))
            ).all()
        return {
            "items": [
                {
                    "store_id": row.store_id,
                    "api_url": row.api_url,
                    "last_seen": row.last_seen.isoformat(),
                }
                for row in rows
            ]
        }

    @app.get("/v1/status")
    async def status(request: Request) -> dict[str, Any]:
        """Counts and digests per entity: overall, and what each known store should hold."""
        async with runtime.engine.connect() as connection:
            overall = await entity_summaries(connection)
            known = (
                await connection.execute(select(KNOWN_STORE).order_by(KNOWN_STORE.c.store_id))
            ).all()
            per_store = {
                row.store_id: {
                    "api_url": row.api_url,
                    "entities": await store_summaries(connection, row.store_id),
                }
                for row in known
            }
        return {"entities": overall, "stores": per_store}

    return app


def main() -> None:
    import uvicorn

    settings = OrchestratorSettings()
    configure_logging(settings.log_level, "sync-orchestrator")
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None
    )
