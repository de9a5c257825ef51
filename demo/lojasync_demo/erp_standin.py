"""A stand-in for the retail ERP, for the demo and the tests.

It plays both sides of the ERP's conversation with the gateway:
- `POST /erp/changes` is the gateway's callback target. Each call carries one resolved
  store change; the stand-in keeps the newest revision of every record in `erp_record`
  and logs every accepted call in `erp_received`.
- `push_catalog` sends records to the gateway's `POST /v1/changes`, as the ERP does.

Settings (environment): LOJASYNC_ERP_DATABASE_URL (default: database lojasync_erp on the
local PostgreSQL), LOJASYNC_ERP_TOKEN (when set, callbacks must carry it as a bearer
token), LOJASYNC_ERP_FAIL_FIRST (respond with 503 to the first N callbacks, to exercise
the gateway's retries), LOJASYNC_ERP_HTTP_HOST and LOJASYNC_ERP_HTTP_PORT, or else
LOJASYNC_HTTP_HOST and LOJASYNC_HTTP_PORT (default 127.0.0.1:8009).
Run it with `python -m lojasync_demo.erp_standin`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from itertools import islice
from typing import Annotated, Any, TypedDict

import httpx
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Column, Identity, Integer, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from lojasync.logs import configure_logging
from lojasync.persistence import (
    UtcDateTime,
    create_engine,
    create_tables,
    database_ready,
    ensure_database,
    insert_with_conflict,
    json_document,
    serial_id,
    utc_now,
)
from lojasync.settings import database_url_for

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8009
PUSH_PATH = "/v1/changes"


class ErpStandinSettings(BaseSettings):
    """Settings of the ERP stand-in, read from LOJASYNC_ERP_* environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="LOJASYNC_ERP_", extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        default=database_url_for("lojasync_erp"),
        description="SQLAlchemy URL of the stand-in's database",
    )
    token: SecretStr | None = Field(
        default=None, description="bearer token that callbacks must carry; unset means none"
    )
    fail_first: int = Field(
        default=0, ge=0, description="number of first callbacks that get a 503 response"
    )
    # LOJASYNC_ERP_HTTP_* first; else the LOJASYNC_HTTP_* variables that every lojasync
    # service reads, so the demo can start all of them alike.
    http_host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("LOJASYNC_ERP_HTTP_HOST", "LOJASYNC_HTTP_HOST"),
    )
    http_port: int = Field(
        default=DEFAULT_PORT,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("LOJASYNC_ERP_HTTP_PORT", "LOJASYNC_HTTP_PORT"),
    )


class ErpRecord(SQLModel, table=True):
    """The newest revision of each record the ERP received from the gateway."""

    __tablename__ = "erp_record"

    entity: str = SQLField(sa_column=Column(Text, primary_key=True))
    record_key: str = SQLField(sa_column=Column(Text, primary_key=True))
    revision: int = SQLField(sa_column=Column(Integer, nullable=False))
    deleted: bool = False
    record: dict[str, Any] | None = SQLField(default=None, sa_column=Column(json_document()))
    received_at: datetime = SQLField(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class ErpReceived(SQLModel, table=True):
    """Every callback the ERP accepted, in arrival order."""

    __tablename__ = "erp_received"

    id: int | None = SQLField(
        default=None, sa_column=Column(serial_id(), Identity(), primary_key=True)
    )
    event_id: str = SQLField(sa_column=Column(Text, nullable=False))
    entity: str = SQLField(sa_column=Column(Text, nullable=False))
    record_key: str = SQLField(sa_column=Column(Text, nullable=False))
    revision: int = SQLField(sa_column=Column(Integer, nullable=False))
    deleted: bool = False
    # False when erp_record already held this or a newer revision.
    applied: bool = False
    payload: dict[str, Any] = SQLField(sa_column=Column(json_document(), nullable=False))
    received_at: datetime = SQLField(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


ERP_RECORD: Table = ErpRecord.__table__  # type: ignore[attr-defined]
ERP_RECEIVED: Table = ErpReceived.__table__  # type: ignore[attr-defined]
TABLES = (ERP_RECORD, ERP_RECEIVED)


class DeliveredChange(BaseModel):
    """The body of one gateway callback: a resolved store change."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(min_length=1)
    entity: str = Field(min_length=1)
    record_key: str = Field(min_length=1)
    revision: int = Field(ge=1)
    deleted: bool
    record: dict[str, Any] | None
    origin: str
    time: datetime


class ErpStandin:
    """The stand-in's state: its database and the callback counter for failure injection."""

    def __init__(self, settings: ErpStandinSettings | None = None) -> None:
        self.settings = settings or ErpStandinSettings()
        self._engine: AsyncEngine | None = None
        self.calls = 0

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("ErpStandin.start() must run before the stand-in is used")
        return self._engine

    async def start(self) -> None:
        """Create the database and tables if missing; a second call does nothing."""
        if self._engine is not None:
            return
        await ensure_database(self.settings.database_url)
        engine = create_engine(self.settings.database_url)
        await create_tables(engine, TABLES)
        self._engine = engine

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def authorized(self, authorization: str | None) -> bool:
        token = self.settings.token
        if token is None:
            return True
        expected = f"Bearer {token.get_secret_value()}"
        return authorization is not None and hmac.compare_digest(
            authorization.encode(), expected.encode()
        )

    def should_fail(self) -> bool:
        """Count a callback; True while it is one of the first `fail_first` calls."""
        self.calls += 1
        return self.calls <= self.settings.fail_first

    async def receive(self, change: DeliveredChange) -> bool:
        """Store a delivered change; return whether it was newer than the stored revision."""
        now = utc_now()
        async with self.engine.begin() as connection:
            statement = insert_with_conflict(connection, ERP_RECORD).values(
                entity=change.entity,
                record_key=change.record_key,
                revision=change.revision,
                deleted=change.deleted,
                record=change.record,
                received_at=now,
            )
            newer_only = statement.on_conflict_do_update(
                index_elements=[ERP_RECORD.c.entity, ERP_RECORD.c.record_key],
                set_={
                    "revision": statement.excluded.revision,
                    "deleted": statement.excluded.deleted,
                    "record": statement.excluded.record,
                    "received_at": statement.excluded.received_at,
                },
                where=ERP_RECORD.c.revision < statement.excluded.revision,
            ).returning(ERP_RECORD.c.revision)
            applied = (await connection.execute(newer_only)).first() is not None
            await connection.execute(
                ERP_RECEIVED.insert().values(
                    event_id=change.event_id,
                    entity=change.entity,
                    record_key=change.record_key,
                    revision=change.revision,
                    deleted=change.deleted,
                    applied=applied,
                    payload=change.model_dump(mode="json"),
                    received_at=now,
                )
            )
        return applied


def _record_view(row: Any) -> dict[str, Any]:
    return {
        "entity": row.entity,
        "record_key": row.record_key,
        "revision": row.revision,
        "deleted": row.deleted,
        "record": row.record,
        "received_at": row.received_at.isoformat(),
    }


def _error(code: str, message: str, message_pt_br: str, **extra: object) -> dict[str, object]:
    return {"code": code, "message": message, "message_pt_br": message_pt_br, **extra}


def create_app(
    settings: ErpStandinSettings | None = None, standin: ErpStandin | None = None
) -> FastAPI:
    """Build the stand-in's app; its lifespan starts `standin` (which tests may start first)."""
    standin = standin or ErpStandin(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await standin.start()
        try:
            yield
        finally:
            await standin.stop()

    app = FastAPI(title="lojasync ERP stand-in", version="0.1.0", lifespan=lifespan)
    app.state.standin = standin

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        database = await database_ready(standin.engine)
        return JSONResponse({"database": database}, status_code=200 if database else 503)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(part) for part in problem["loc"]), "message": problem["msg"]}
            for problem in exc.errors()
        ]
        detail = _error(
            "request_invalid",
            "the callback body is not a delivered change; see errors",
            "o corpo da chamada não é uma alteração entregue; veja errors",
            errors=problems,
        )
        return JSONResponse({"detail": detail}, status_code=422)

    @app.post("/erp/changes")
    async def receive_change(
        change: DeliveredChange,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        if standin.should_fail():
            logger.info("failing a callback on purpose", extra={"event_id": change.event_id})
            raise HTTPException(
                503,
                _error(
                    "erp_unavailable",
                    f"the ERP stand-in fails the first {standin.settings.fail_first} calls "
                    "(LOJASYNC_ERP_FAIL_FIRST); retry later",
                    f"o ERP simulado falha as primeiras {standin.settings.fail_first} chamadas "
                    "(LOJASYNC_ERP_FAIL_FIRST); tente mais tarde",
                ),
            )
        if not standin.authorized(authorization):
            raise HTTPException(
                401,
                _error(
                    "unauthorized",
                    "missing or wrong bearer token; send Authorization: Bearer <token> with "
                    "the value of LOJASYNC_ERP_TOKEN",
                    "token bearer ausente ou errado; envie Authorization: Bearer <token> com "
                    "o valor de LOJASYNC_ERP_TOKEN",
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )
        applied = await standin.receive(change)
        logger.info(
            "change received",
            extra={
                "event_id": change.event_id,
                "entity": change.entity,
                "record_key": change.record_key,
                "revision": change.revision,
                "applied": applied,
            },
        )
        return {
            "status": "applied" if applied else "stale",
            "entity": change.entity,
            "record_key": change.record_key,
            "revision": change.revision,
        }

    @app.get("/erp/records/{entity}")
    async def list_records(entity: str, include_deleted: bool = False) -> dict[str, Any]:
        query = select(ERP_RECORD).where(ERP_RECORD.c.entity == entity)
        if not include_deleted:
            query = query.where(ERP_RECORD.c.deleted.is_(False))
        async with standin.engine.connect() as connection:
            rows = (await connection.execute(query.order_by(ERP_RECORD.c.record_key))).all()
        return {"items": [_record_view(row) for row in rows]}

    @app.get("/erp/records/{entity}/{record_key}")
    async def get_record(entity: str, record_key: str) -> dict[str, Any]:
        query = select(ERP_RECORD).where(
            ERP_RECORD.c.entity == entity, ERP_RECORD.c.record_key == record_key
        )
        async with standin.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            raise HTTPException(
                404,
                _error(
                    "record_not_found",
                    f"the ERP has received no {entity} {record_key}",
                    f"o ERP não recebeu nenhum {entity} {record_key}",
                ),
            )
        return _record_view(row)

    @app.get("/erp/received")
    async def list_received(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        query = select(ERP_RECEIVED).order_by(ERP_RECEIVED.c.id).limit(limit)
        async with standin.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {
            "items": [
                {
                    "id": row.id,
                    "event_id": row.event_id,
                    "entity": row.entity,
                    "record_key": row.record_key,
                    "revision": row.revision,
                    "deleted": row.deleted,
                    "applied": row.applied,
                    "payload": row.payload,
                    "received_at": row.received_at.isoformat(),
                }
                for row in rows
            ]
        }

    return app


PushRecord = tuple[str, Mapping[str, Any]] | Mapping[str, Any]


class PushTotals(TypedDict):
    """Sums of the gateway's responses over every batch of one `push_catalog` call."""

    accepted: int
    rejected: int
    duplicates: int
    batches: int
    rejections: list[dict[str, Any]]
    """Results of the rejected items, with `index` counted over the whole push."""


class PushFailed(RuntimeError):
    """The gateway responded to a push batch with an error status."""


async def push_catalog(
    gateway_url: str,
    records: Iterable[PushRecord],
    batch_size: int = 5000,
    *,
    client: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_seconds: float = 120.0,
) -> PushTotals:
    """Push records through the gateway's POST /v1/changes in batches, in order.

    Each element is either an `(entity, record)` pair, pushed as an upsert, or a mapping
    in the push format (`entity`, `action`, `record`, `key`, `change_id`,
    `base_revision`). Requests go through `client` when given, else through a new client
    on `transport` (None means the network). Raises PushFailed when the gateway responds
    to a batch with an error status.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    async with AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        totals = await _push_batches(
            client, gateway_url.rstrip("/") + PUSH_PATH, records, batch_size, timeout_seconds
        )
    logger.info(
        "catalog pushed",
        extra={
            "accepted": totals["accepted"],
            "rejected": totals["rejected"],
            "duplicates": totals["duplicates"],
            "batches": totals["batches"],
        },
    )
    return totals


async def _push_batches(
    client: httpx.AsyncClient,
    url: str,
    records: Iterable[PushRecord],
    batch_size: int,
    timeout_seconds: float,
) -> PushTotals:
    totals = PushTotals(accepted=0, rejected=0, duplicates=0, batches=0, rejections=[])
    offset = 0
    for batch in _batches((_push_item(record) for record in records), batch_size):
        response = await client.post(url, json={"records": batch}, timeout=timeout_seconds)
        if response.status_code != 200:
            raise PushFailed(
                f"POST {url} failed with HTTP {response.status_code} for records {offset} to "
                f"{offset + len(batch) - 1}: {response.text[:1000]}"
            )
        body = response.json()
        totals["accepted"] += body["accepted"]
        totals["rejected"] += body["rejected"]
        totals["duplicates"] += body["duplicates"]
        totals["batches"] += 1
        for result in body["results"]:
            if result["status"] == "rejected":
                totals["rejections"].append({**result, "index": offset + result["index"]})
        offset += len(batch)
    return totals


def _push_item(record: PushRecord) -> dict[str, Any]:
    if isinstance(record, tuple):
        entity, data = record
        return {"entity": entity, "action": "upsert", "record": dict(data)}
    return dict(record)


def _batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    while batch := list(islice(items, size)):
        yield batch


def main() -> None:
    import uvicorn

    settings = ErpStandinSettings()
    configure_logging("INFO", "erp-standin")
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None
    )


if __name__ == "__main__":
    main()
