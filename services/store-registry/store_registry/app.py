"""The store registry's HTTP API (FastAPI) and the wiring of its runtime.

HTTP status codes are chosen here only. Every 4xx body has the form
`{"detail": {"code", "message", "message_pt_br", ...}}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lojasync.catalog import ENTITIES, RecordInvalid, UnknownEntity
from lojasync.policy import PolicyViolation, load_policy
from lojasync.reference import load_reference_tables
from lojasync.service import ServiceRuntime
from store_registry.bulk import BatchApplier
from store_registry.domain import (
    EditKind,
    EditOutcome,
    LocalEdit,
    RecordKeyMismatch,
    RecordNotFound,
    ServerKeyUnsupported,
    StoreRegistryError,
    record_view,
)
from store_registry.drift import router as drift_router
from store_registry.handlers import StoreRegistry
from store_registry.models import TABLES
from store_registry.onboarding import ONBOARDING_TABLES
from store_registry.onboarding import router as onboarding_router
from store_registry.settings import StoreSettings, load_settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "store-registry"

# HTTP status of each PolicyViolation code; codes not listed get 403.
_POLICY_STATUS = {
    "erp_owned": status.HTTP_403_FORBIDDEN,
    "action_not_allowed": status.HTTP_403_FORBIDDEN,
    "not_owner_store": status.HTTP_403_FORBIDDEN,
    "immutable_field": status.HTTP_409_CONFLICT,
    "stale_revision": status.HTTP_409_CONFLICT,
}

_REGISTRY_ERROR_STATUS: dict[type[StoreRegistryError], int] = {
    RecordNotFound: status.HTTP_404_NOT_FOUND,
    RecordKeyMismatch: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ServerKeyUnsupported: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


class RecordWrite(BaseModel):
    """Body of PUT: the fields to set, and the revision the edit started from."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any]
    base_revision: int | None = Field(
        default=None,
        ge=0,
        description="revision the client read (0 for a create); a different current "
        "revision fails with 409 stale_revision; null skips the check",
    )


class RecordCreate(BaseModel):
    """Body of POST: the fields of a new record; the store generates its `id`."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any]


def create_app(
    settings: StoreSettings | None = None, runtime: ServiceRuntime | None = None
) -> FastAPI:
    """Build the app; its lifespan starts the runtime, the consumer and the announcement."""
    settings = settings or load_settings()
    runtime = runtime or ServiceRuntime(
        f"{SERVICE_NAME}.{settings.store_id}", settings.database_url, settings
    )
    registry = StoreRegistry(
        runtime,
        store_id=settings.store_id,
        api_url=settings.api_url,
        policy=load_policy(settings.policy_file),
        tables=load_reference_tables(),
    )

    batches = BatchApplier(runtime, settings.store_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(
            [*TABLES, *ONBOARDING_TABLES], [registry.subscription(), batches.subscription()]
        )
        try:
            await registry.announce()
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=f"lojasync store registry ({settings.store_id})",
        description="This store's copy of the cadastros, and its back-office edits.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    _add_error_handlers(app)
    _add_routes(app)
    app.include_router(drift_router)
    app.include_router(onboarding_router)
    return app


def _registry(request: Request) -> StoreRegistry:
    registry: StoreRegistry = request.app.state.registry
    return registry


Registry = Annotated[StoreRegistry, Depends(_registry)]


def _add_routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Return 200 while the process runs."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(registry: Registry) -> JSONResponse:
        """Return 200 while the database answers, else 503.

        Without the broker the store still serves reads and local edits, which wait in its
        outbox; the body then says `"status": "offline"`.
        """
        checks = await registry.ready()
        if checks["database"]:
            return JSONResponse({"status": "ready" if checks["broker"] else "offline", **checks})
        down = ", ".join(name for name, up in checks.items() if not up)
        detail = {
            "code": "not_ready",
            "message": f"not ready: no connection to {down}",
            "message_pt_br": f"não está pronto: sem conexão com {down}",
            **checks,
        }
        return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)

    @app.get("/v1/status")
    async def store_status(registry: Registry) -> dict[str, Any]:
        """Count, digest and pending edits of every catalog entity this store holds."""
        summaries = await registry.status()
        return {
            "store_id": registry.store_id,
            "entities": {entity: summary.as_dict() for entity, summary in summaries.items()},
        }

    @app.get("/v1/records/{entity}")
    async def list_records(
        registry: Registry,
        entity: str,
        after: Annotated[str | None, Query(description="return keys after this one")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        include_deleted: bool = False,
    ) -> dict[str, Any]:
        """Page through an entity's records in key order (byte order of the keys)."""
        page = await registry.list_page(
            entity, after=after, limit=limit, include_deleted=include_deleted
        )
        return {
            "items": [record_view(record) for record in page.records],
            "next_after": page.next_after,
        }

    @app.get("/v1/records/{entity}/{key}")
    async def get_record(registry: Registry, entity: str, key: str) -> dict[str, Any]:
        return record_view(await registry.get(entity, key))

    @app.put("/v1/records/{entity}/{key}")
    async def put_record(
        registry: Registry, entity: str, key: str, body: RecordWrite, response: Response
    ) -> dict[str, Any]:
        """Create or edit a record: 202 when shared fields wait for the orchestrator,
        200 when only store-local fields changed or nothing changed."""
        outcome = await registry.upsert(LocalEdit(entity, key, body.fields, body.base_revision))
        response.status_code = _edit_status(outcome)
        return record_view(outcome.record)

    @app.post("/v1/records/{entity}", status_code=status.HTTP_202_ACCEPTED)
    async def post_record(
        registry: Registry, entity: str, body: RecordCreate, response: Response
    ) -> dict[str, Any]:
        """Create a customer or operator under a generated UUID key; any `id` sent is
        replaced. An operator without `store_id` gets this store's id."""
        outcome = await registry.create(entity, body.fields)
        response.status_code = _edit_status(outcome)
        response.headers["Location"] = f"/v1/records/{entity}/{outcome.record.record_key}"
        return record_view(outcome.record)

    @app.delete("/v1/records/{entity}/{key}", status_code=status.HTTP_202_ACCEPTED)
    async def delete_record(
        registry: Registry,
        entity: str,
        key: str,
        base_revision: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        """Mark a record for deletion; the orchestrator decides it."""
        outcome = await registry.delete(entity, key, base_revision)
        return record_view(outcome.record)


def _edit_status(outcome: EditOutcome) -> int:
    if outcome.kind is EditKind.PENDING:
        return status.HTTP_202_ACCEPTED
    return status.HTTP_200_OK


def _error(status_code: int, detail: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PolicyViolation)
    async def policy_violation(request: Request, exc: PolicyViolation) -> JSONResponse:
        return _error(_POLICY_STATUS.get(exc.code, status.HTTP_403_FORBIDDEN), exc.as_dict())

    @app.exception_handler(RecordInvalid)
    async def record_invalid(request: Request, exc: RecordInvalid) -> JSONResponse:
        detail = exc.as_dict()
        if exc.errors:
            first = exc.errors[0]
            detail.update(field=first.field, value=first.value, rule=first.rule)
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)

    @app.exception_handler(UnknownEntity)
    async def unknown_entity(request: Request, exc: UnknownEntity) -> JSONResponse:
        detail = {**exc.as_dict(), "entities": sorted(ENTITIES)}
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)

    @app.exception_handler(StoreRegistryError)
    async def registry_error(request: Request, exc: StoreRegistryError) -> JSONResponse:
        code = _REGISTRY_ERROR_STATUS.get(type(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
        return _error(code, exc.as_dict())

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_request_error(error) for error in exc.errors()]
        fields = ", ".join(str(error["field"]) for error in errors)
        detail = {
            "code": "request_invalid",
            "message": f"the request is invalid ({fields}); fix the listed fields",
            "message_pt_br": f"a requisição é inválida ({fields}); corrija os campos listados",
            "errors": errors,
        }
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, jsonable_encoder(detail))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            # Raised by this API's own routes, already in the error format.
            return _error(exc.status_code, exc.detail)
        if exc.status_code == status.HTTP_404_NOT_FOUND:
            code, message_pt_br = "not_found", f"{request.url.path} não existe nesta API"
        elif exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            code = "method_not_allowed"
            message_pt_br = f"{request.method} não é aceito em {request.url.path}"
        else:
            code, message_pt_br = "http_error", str(exc.detail)
        detail = {
            "code": code,
            "message": f"{request.method} {request.url.path}: {exc.detail}",
            "message_pt_br": message_pt_br,
        }
        return _error(exc.status_code, detail)


def _request_error(error: Any) -> dict[str, Any]:
    location = ".".join(str(part) for part in error.get("loc", ()))
    return {
        "field": location,
        "value": error.get("input"),
        "rule": error.get("type"),
        "message": f"{location}: {error.get('msg')}",
        "message_pt_br": f"{location}: valor inválido ({error.get('msg')})",
    }
