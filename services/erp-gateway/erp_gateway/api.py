"""HTTP routes of the gateway, and the mapping of errors to the API's error format.

Every 4xx body is `{"detail": {"code", "message", "message_pt_br", ...}}`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from erp_gateway.gateway import Gateway
from erp_gateway.handlers import PushOutcome, prepare_push, record_push
from erp_gateway.repository import (
    count_deliveries,
    list_deliveries,
    list_rejections,
    retry_failed_delivery,
)
from erp_gateway.repository import get_delivery as fetch_delivery
from erp_gateway.schemas import (
    DeliveryList,
    DeliveryView,
    PushRequest,
    PushResponse,
    ReadyView,
    RejectionList,
    RejectionView,
)
from erp_gateway.tables import DeliveryStatus
from lojasync.api_errors import request_invalid
from lojasync.persistence import database_ready, is_transient_database_error

logger = logging.getLogger(__name__)


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
Limit = Annotated[int, Query(ge=1, le=1000, description="maximum number of items returned")]
After = Annotated[
    int | None, Query(ge=0, description="return items whose sequence is greater than this")
]

router = APIRouter()


@router.post("/v1/changes", response_model=PushResponse)
async def push_changes(body: PushRequest, gateway: GatewayDep) -> Response:
    """Validate a batch of ERP changes and publish the accepted ones as one transaction."""
    _check_batch_size(len(body.records), gateway.settings.max_batch_records)

    items = [item.to_domain() for item in body.records]
    prepared = await anyio.to_thread.run_sync(prepare_push, items, gateway.policy, gateway.tables)
    async with gateway.runtime.transaction() as connection:
        outcome = await record_push(connection, prepared)

    content = _push_content(outcome)
    logger.info(
        "push recorded",
        extra={
            "records": len(items),
            "accepted": content["accepted"],
            "rejected": content["rejected"],
            "duplicates": content["duplicates"],
        },
    )
    return Response(orjson.dumps(content), media_type="application/json")


def _check_batch_size(count: int, limit: int) -> None:
    if count == 0:
        raise HTTPException(
            422,
            {
                "code": "batch_empty",
                "message": f"records is empty; send between 1 and {limit} records per request",
                "message_pt_br": "records está vazio; envie de 1 a "
                f"{limit} registros por requisição",
                "field": "records",
                "limit": limit,
            },
        )
    if count > limit:
        raise HTTPException(
            422,
            {
                "code": "batch_too_large",
                "message": f"records has {count} items but at most {limit} are accepted "
                "per request (LOJASYNC_MAX_BATCH_RECORDS); split the batch",
                "message_pt_br": f"records tem {count} itens, mas no máximo {limit} são "
                "aceitos por requisição (LOJASYNC_MAX_BATCH_RECORDS); divida o lote",
                "field": "records",
                "limit": limit,
                "received": count,
            },
        )


def _push_content(outcome: PushOutcome) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for result in outcome.results:
        item: dict[str, Any] = {
            "index": result.index,
            "status": result.status,
            "entity": result.entity,
            "record_key": result.record_key,
            "event_id": result.event_id,
        }
        if result.status == "rejected":
            item["errors"] = result.errors or []
        results.append(item)
    return {
        "accepted": outcome.count("accepted"),
        "rejected": outcome.count("rejected"),
        "duplicates": outcome.count("duplicate"),
        "results": results,
    }


@router.get("/v1/deliveries", response_model=DeliveryList)
async def get_deliveries(
    gateway: GatewayDep,
    status: DeliveryStatus | None = None,
    after: After = None,
    limit: Limit = 100,
) -> DeliveryList:
    """List deliveries to the ERP in order of creation, optionally of one status."""
    async with gateway.runtime.engine.connect() as connection:
        rows = await list_deliveries(connection, status=status, after=after, limit=limit)
    items = [DeliveryView.model_validate(row, from_attributes=True) for row in rows]
    next_after = items[-1].sequence if len(items) == limit else None
    return DeliveryList(items=items, next_after=next_after)


@router.get("/v1/deliveries/{event_id}", response_model=DeliveryView)
async def get_delivery(event_id: str, gateway: GatewayDep) -> DeliveryView:
    async with gateway.runtime.engine.connect() as connection:
        row = await fetch_delivery(connection, event_id)
    if row is None:
        raise _delivery_not_found(event_id)
    return DeliveryView.model_validate(row, from_attributes=True)


@router.post("/v1/deliveries/{event_id}/retry", response_model=DeliveryView)
async def retry_delivery(event_id: str, gateway: GatewayDep) -> DeliveryView:
    """Set a failed delivery back to pending; the worker attempts it again at once."""
    async with gateway.runtime.engine.begin() as connection:
        row = await retry_failed_delivery(connection, event_id)
        current = None if row is not None else await fetch_delivery(connection, event_id)
    if row is None:
        if current is None:
            raise _delivery_not_found(event_id)
        raise HTTPException(
            409,
            {
                "code": "delivery_not_failed",
                "message": f"delivery {event_id} is {current.status}; only a failed "
                "delivery can be retried",
                "message_pt_br": f"a entrega {event_id} está {_STATUS_PT_BR[current.status]}; "
                "só uma entrega com falha pode ser repetida",
                "event_id": event_id,
                "status": current.status,
            },
        )
    gateway.worker.wake()
    logger.info(
        "failed delivery set back to pending",
        extra={"event_id": event_id, "record_key": row.record_key},
    )
    return DeliveryView.model_validate(row, from_attributes=True)


_STATUS_PT_BR = {"pending": "pendente", "delivered": "entregue", "failed": "com falha"}


def _delivery_not_found(event_id: str) -> HTTPException:
    return HTTPException(
        404,
        {
            "code": "delivery_not_found",
            "message": f"no delivery has event id {event_id!r}; list them with GET /v1/deliveries",
            "message_pt_br": f"nenhuma entrega tem o id de evento {event_id!r}; liste-as com "
            "GET /v1/deliveries",
            "event_id": event_id,
        },
    )


@router.get("/v1/rejections", response_model=RejectionList)
async def get_rejections(
    gateway: GatewayDep, after: After = None, limit: Limit = 100
) -> RejectionList:
    """List the ERP changes the orchestrator rejected, oldest first."""
    async with gateway.runtime.engine.connect() as connection:
        rows = await list_rejections(connection, after=after, limit=limit)
    items = [RejectionView.model_validate(row, from_attributes=True) for row in rows]
    next_after = items[-1].sequence if len(items) == limit else None
    return RejectionList(items=items, next_after=next_after)


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process serves HTTP."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyView)
async def ready(gateway: GatewayDep) -> JSONResponse:
    """Readiness: database and broker reachable. A missing callback URL is reported only,
    because pushes from the ERP still work without it."""
    engine = gateway.runtime.engine
    database = await database_ready(engine)
    broker = gateway.runtime.broker_ready
    deliveries: dict[str, int] | None = None
    if database:
        async with engine.connect() as db_connection:
            deliveries = await count_deliveries(db_connection)

    configured = gateway.worker.callback_configured
    message, message_pt_br = _readiness_messages(database, broker, configured, deliveries)
    view = ReadyView(
        ready=database and broker,
        database=database,
        broker=broker,
        erp_callback="configured" if configured else "not_configured",
        deliveries=deliveries,
        message=message,
        message_pt_br=message_pt_br,
    )
    return JSONResponse(view.model_dump(mode="json"), status_code=200 if view.ready else 503)


def _readiness_messages(
    database: bool, broker: bool, configured: bool, deliveries: dict[str, int] | None
) -> tuple[str, str]:
    english: list[str] = []
    portuguese: list[str] = []
    if not database:
        english.append("the database is unreachable")
        portuguese.append("o banco de dados não responde")
    if not broker:
        english.append("the broker connection is down")
        portuguese.append("a conexão com o broker caiu")
    if not configured:
        waiting = deliveries.get(DeliveryStatus.PENDING.value, 0) if deliveries else 0
        english.append(
            f"LOJASYNC_ERP_CALLBACK_URL is not set, so {waiting} pending deliveries wait"
        )
        portuguese.append(
            f"LOJASYNC_ERP_CALLBACK_URL não está definida, então {waiting} entregas "
            "pendentes aguardam"
        )
    if not english:
        return "ready", "pronto"
    return "; ".join(english), "; ".join(portuguese)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response follow the API's error format."""
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: object = exc.detail
    if not isinstance(detail, dict):
        detail = _generic_detail(exc.status_code, str(detail), request)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _generic_detail(status_code: int, text: str, request: Request) -> dict[str, object]:
    if status_code == 404:
        return {
            "code": "not_found",
            "message": f"no route matches {request.method} {request.url.path}",
            "message_pt_br": f"nenhuma rota corresponde a {request.method} {request.url.path}",
        }
    if status_code == 405:
        return {
            "code": "method_not_allowed",
            "message": f"{request.method} is not allowed on {request.url.path}",
            "message_pt_br": f"{request.method} não é permitido em {request.url.path}",
        }
    return {"code": "http_error", "message": text, "message_pt_br": text}


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Return 503 while the database is unreachable; re-raise other database errors."""
    if not is_transient_database_error(exc):
        raise exc
    logger.warning(
        "database unavailable",
        extra={"path": request.url.path, "error": f"{type(exc).__name__}: {exc}"},
    )
    return JSONResponse(
        {
            "detail": {
                "code": "database_unavailable",
                "message": "the gateway's database is unavailable; retry the request later",
                "message_pt_br": "o banco de dados do gateway está indisponível; repita a "
                "requisição mais tarde",
            }
        },
        status_code=503,
        headers={"Retry-After": "5"},
    )
