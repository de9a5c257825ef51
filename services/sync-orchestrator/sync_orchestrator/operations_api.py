"""HTTP API of the store operations: bootstrap, replay, drift check, repair, and their log.

Each POST starts an operation in the background and responds 202 with the operation row;
with `wait=true` it responds when the operation ended. `GET /v1/operations/{id}` shows the
progress, and `GET /metrics` the last drift check of every store in the Prometheus text
format.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from lojasync.catalog import ENTITIES
from lojasync.policy import Policy
from lojasync.postgresql_only import PostgresqlRequired, require_postgresql
from lojasync.reference import load_reference_tables
from lojasync.service import ServiceRuntime
from sync_orchestrator.batches import BatchSender
from sync_orchestrator.bootstrap import Bootstrapper
from sync_orchestrator.drift import DriftChecker, StoreUnreachable
from sync_orchestrator.matching import Decision
from sync_orchestrator.models import KNOWN_STORE
from sync_orchestrator.onboarding import DecisionInvalid, Onboarder
from sync_orchestrator.operations import (
    OPERATION,
    OperationKind,
    OperationLog,
    OperationRunner,
    OperationStatus,
    operation_view,
)
from sync_orchestrator.replay import Replayer, ReplayFilter

logger = logging.getLogger(__name__)

# Max seconds `wait=true` waits before it responds with the operation still running.
WAIT_SECONDS = 600.0


class OperationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requested_by: str = Field(
        min_length=1, max_length=200, description="who asks for it, kept in the operation log"
    )


class ReplayRequest(OperationRequest):
    entities: list[str] | None = None
    record_keys: list[str] | None = Field(default=None, max_length=100_000)
    from_revision: int | None = Field(default=None, ge=1)
    to_revision: int | None = Field(default=None, ge=1)
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False


class OnboardingRequest(OperationRequest):
    dry_run: bool = False


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: int = Field(ge=1)
    decision: Decision
    erp_key: str | None = Field(
        default=None, description="for a conflict: the ERP record the store's record is"
    )
    fields: dict[str, Literal["erp", "store"]] | None = Field(
        default=None, description="for merge: which side's value each differing field takes"
    )


class DecisionsRequest(OperationRequest):
    decisions: list[DecisionBody] = Field(min_length=1, max_length=10_000)


class Operations:
    """The operation services of one orchestrator process, built once by the app."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        policy: Policy,
        *,
        store_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.log = OperationLog(runtime.engine)
        self.runner = OperationRunner(self.log)
        self.client = httpx.AsyncClient(transport=store_transport, timeout=120)
        self.sender = BatchSender(runtime.broker)
        self.replayer = Replayer(runtime.engine, self.sender, self.log)
        self.bootstrapper = Bootstrapper(runtime.engine, self.sender, self.log)
        self.checker = DriftChecker(runtime.engine, self.client, self.sender, policy)
        self.onboarder = Onboarder(
            runtime.engine, self.client, self.bootstrapper, policy, load_reference_tables()
        )
        self._schedule: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._schedule is not None:
            self._schedule.cancel()
            try:
                await self._schedule
            except asyncio.CancelledError:
                pass
        await self.runner.stop()
        await self.client.aclose()

    async def store_url(self, store_id: str) -> str | None:
        async with self.runtime.engine.connect() as connection:
            url: str | None = await connection.scalar(
                select(KNOWN_STORE.c.api_url).where(KNOWN_STORE.c.store_id == store_id)
            )
        return url

    async def known_stores(self) -> list[tuple[str, str]]:
        async with self.runtime.engine.connect() as connection:
            rows = await connection.execute(
                select(KNOWN_STORE.c.store_id, KNOWN_STORE.c.api_url).order_by(
                    KNOWN_STORE.c.store_id
                )
            )
            return [(row.store_id, row.api_url) for row in rows]

    async def check_drift(self, operation_id: str, store_id: str, api_url: str) -> dict[str, Any]:
        report = await self.checker.detect(store_id, api_url)
        await self.log.progress(operation_id, done=report.differences, total=report.differences)
        return report.as_dict()

    async def repair_drift(self, operation_id: str, store_id: str, api_url: str) -> dict[str, Any]:
        report = await self.checker.detect(store_id, api_url)
        await self.log.progress(operation_id, done=0, total=report.differences)
        result = await self.checker.repair(operation_id, store_id, api_url, report)
        await self.log.progress(operation_id, done=report.differences)
        return result

    def start_schedule(self, interval_seconds: float) -> None:
        """Check every known store for drift every `interval_seconds`; 0 turns it off."""
        if interval_seconds > 0:
            self._schedule = asyncio.create_task(
                self._scheduled_checks(interval_seconds), name="scheduled drift checks"
            )

    async def _scheduled_checks(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            for store_id, api_url in await self.known_stores():
                operation_id = await self.log.create(
                    OperationKind.DRIFT, store_id, "schedule", {"scheduled": True}
                )
                try:
                    result = await self.check_drift(operation_id, store_id, api_url)
                except (StoreUnreachable, httpx.HTTPError) as exc:
                    logger.warning(
                        "scheduled drift check failed",
                        extra={"store_id": store_id, "error": str(exc)},
                    )
                    await self.log.fail(operation_id, str(exc))
                    continue
                await self.log.finish(operation_id, result)


def _operations(request: Request) -> Operations:
    operations: Operations = request.app.state.operations
    return operations


def _postgresql_operations(request: Request, feature: str) -> Operations:
    """Return the operations, responding 501 when the orchestrator's database is not
    PostgreSQL."""
    operations = _operations(request)
    try:
        require_postgresql(operations.runtime.engine, feature)
    except PostgresqlRequired as exc:
        raise HTTPException(501, exc.as_dict()) from exc
    return operations


def _store_not_found(store_id: str) -> HTTPException:
    return HTTPException(
        404,
        {
            "code": "store_not_found",
            "message": f"store {store_id} has never announced itself to the orchestrator; "
            "start its store registry first",
            "message_pt_br": f"a loja {store_id} nunca se anunciou ao orquestrador; "
            "inicie o store registry dela antes",
            "store_id": store_id,
        },
    )


def _unknown_entities(entities: list[str]) -> HTTPException:
    known = ", ".join(sorted(ENTITIES))
    names = ", ".join(entities)
    return HTTPException(
        422,
        {
            "code": "unknown_entity",
            "field": "entities",
            "message": f"entities (--entity): unknown entity {names}; use one of: {known}",
            "message_pt_br": f"entities (--entity): entidade desconhecida {names}; use uma "
            f"destas: {known}",
            "entities": sorted(ENTITIES),
        },
    )


def _check_ranges(body: ReplayRequest) -> None:
    """Reject a revision or time range whose start comes after its end."""
    ranges = (
        ("from_revision", body.from_revision, "to_revision", body.to_revision),
        ("since", body.since, "until", body.until),
    )
    for start_field, start, end_field, end in ranges:
        if start is None or end is None or start <= end:  # type: ignore[operator]
            continue
        raise HTTPException(
            422,
            {
                "code": "range_invalid",
                "field": end_field,
                "message": f"{end_field} ({end}) is before {start_field} ({start}); give an "
                f"{end_field} at or after {start_field}, or leave one of them out",
                "message_pt_br": f"{end_field} ({end}) vem antes de {start_field} ({start}); "
                f"informe um {end_field} igual ou posterior a {start_field}, ou omita um deles",
            },
        )


async def _start_drift_operation(
    request: Request, store_id: str, body: OperationRequest, wait: bool, kind: OperationKind
) -> JSONResponse:
    """Start a drift check (`DRIFT`) or a drift repair (`REPAIR`) of one store."""
    repair = kind is OperationKind.REPAIR
    operations = _postgresql_operations(request, "drift repair" if repair else "drift detection")
    api_url = await operations.store_url(store_id)
    if api_url is None:
        raise _store_not_found(store_id)
    operation_id = await operations.log.create(kind, store_id, body.requested_by, {})
    action = operations.repair_drift if repair else operations.check_drift
    operations.runner.start(operation_id, lambda op: action(op, store_id, api_url))
    return await _answer(operations, operation_id, wait)


async def _answer(operations: Operations, operation_id: str, wait: bool) -> JSONResponse:
    if wait:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while operations.runner.running(operation_id):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    view = await operations.log.get(operation_id)
    finished = view is not None and view["status"] != OperationStatus.RUNNING.value
    return JSONResponse(view, status_code=200 if finished else 202)


Wait = Annotated[bool, Query(description="respond when the operation ended")]


def build_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.post("/v1/stores/{store_id}/replay")
    async def replay(
        request: Request, store_id: str, body: ReplayRequest, wait: Wait = False
    ) -> JSONResponse:
        """Re-send resolved events from the event log to a store (`dry_run` only counts)."""
        operations = _postgresql_operations(request, "replay")
        unknown = [entity for entity in body.entities or [] if entity not in ENTITIES]
        if unknown:
            raise _unknown_entities(unknown)
        _check_ranges(body)
        if await operations.store_url(store_id) is None:
            raise _store_not_found(store_id)
        replay_filter = ReplayFilter(
            store_id=store_id,
            entities=body.entities,
            record_keys=body.record_keys,
            from_revision=body.from_revision,
            to_revision=body.to_revision,
            since=body.since,
            until=body.until,
        )
        operation_id = await operations.log.create(
            OperationKind.REPLAY,
            store_id,
            body.requested_by,
            replay_filter.as_parameters(),
            dry_run=body.dry_run,
        )
        operations.runner.start(
            operation_id,
            lambda op: operations.replayer.run(op, replay_filter, dry_run=body.dry_run),
        )
        return await _answer(operations, operation_id, wait)

    @router.post("/v1/stores/{store_id}/bootstrap")
    async def bootstrap(
        request: Request, store_id: str, body: OperationRequest, wait: Wait = False
    ) -> JSONResponse:
        """Send the full state in scope to a store, resuming an unfinished bootstrap."""
        operations = _postgresql_operations(request, "bootstrap")
        if await operations.store_url(store_id) is None:
            raise _store_not_found(store_id)
        latest = await operations.log.latest(OperationKind.BOOTSTRAP, store_id)
        if latest is not None and latest["status"] == OperationStatus.RUNNING.value:
            if operations.runner.running(latest["id"]):
                return await _answer(operations, latest["id"], wait)
        if latest is not None and latest["status"] != OperationStatus.DONE.value:
            operation_id = latest["id"]
            cursor = latest["cursor"]
            await operations.log.reopen(operation_id)
            logger.info(
                "bootstrap resumed on request",
                extra={"operation_id": operation_id, "requested_by": body.requested_by},
            )
        else:
            operation_id = await operations.log.create(
                OperationKind.BOOTSTRAP, store_id, body.requested_by, {}
            )
            cursor = None
        operations.runner.start(
            operation_id, lambda op: operations.bootstrapper.run(op, store_id, cursor)
        )
        return await _answer(operations, operation_id, wait)

    @router.post("/v1/stores/{store_id}/drift")
    async def drift(
        request: Request, store_id: str, body: OperationRequest, wait: Wait = False
    ) -> JSONResponse:
        """Compare a store with the orchestrator; the report is the operation's result."""
        return await _start_drift_operation(request, store_id, body, wait, OperationKind.DRIFT)

    @router.post("/v1/stores/{store_id}/repair")
    async def repair(
        request: Request, store_id: str, body: OperationRequest, wait: Wait = False
    ) -> JSONResponse:
        """Detect drift, then re-send or raise each differing record as the policy decides."""
        return await _start_drift_operation(request, store_id, body, wait, OperationKind.REPAIR)

    @router.post("/v1/stores/{store_id}/onboarding")
    async def onboarding(
        request: Request, store_id: str, body: OnboardingRequest, wait: Wait = False
    ) -> JSONResponse:
        """Match a store's legacy records to the ERP's, report, and apply what the policy
        decides; the rest waits for decisions (`POST /v1/operations/{id}/decisions`)."""
        operations = _postgresql_operations(request, "onboarding")
        api_url = await operations.store_url(store_id)
        if api_url is None:
            raise _store_not_found(store_id)
        operation_id = await operations.log.create(
            OperationKind.ONBOARDING, store_id, body.requested_by, {}, dry_run=body.dry_run
        )
        operations.runner.start(
            operation_id,
            lambda op: operations.onboarder.run(op, store_id, api_url, dry_run=body.dry_run),
        )
        return await _answer(operations, operation_id, wait)

    @router.get("/v1/operations/{operation_id}/items")
    async def onboarding_items(
        request: Request, operation_id: str, awaiting: bool = False
    ) -> dict[str, Any]:
        """List the items of an onboarding report; `awaiting=true` lists the undecided ones."""
        operations = _operations(request)
        await _operation_or_404(operations, operation_id)
        items = await operations.onboarder.items(operation_id, awaiting_only=awaiting)
        return {"items": items}

    @router.post("/v1/operations/{operation_id}/decisions")
    async def decide(request: Request, operation_id: str, body: DecisionsRequest) -> JSONResponse:
        """Record a person's decisions on onboarding items, then apply them."""
        operations = _operations(request)
        view = await _operation_or_404(operations, operation_id)
        if (
            view["kind"] != OperationKind.ONBOARDING.value
            or view["dry_run"]
            or view["status"] != OperationStatus.AWAITING_DECISIONS.value
        ):
            raise HTTPException(
                409,
                {
                    "code": "not_awaiting_decisions",
                    "message": f"operation {operation_id} ({view['kind']}, {view['status']}"
                    f"{', dry run' if view['dry_run'] else ''}) takes no decisions; only an "
                    "onboarding that is not a dry run and awaits decisions does",
                    "message_pt_br": f"a operação {operation_id} ({view['kind']}, "
                    f"{view['status']}{', simulação' if view['dry_run'] else ''}) não aceita "
                    "decisões; só uma integração real que aguarda decisões aceita",
                },
            )
        try:
            await operations.onboarder.record_decisions(
                operation_id,
                [decision.model_dump() for decision in body.decisions],
                body.requested_by,
            )
        except DecisionInvalid as exc:
            raise HTTPException(422, exc.as_dict()) from exc
        api_url = await operations.store_url(view["store_id"])
        assert api_url is not None
        await operations.onboarder.apply_decided(
            operation_id, view["store_id"], api_url, decided_by=body.requested_by
        )
        awaiting = await operations.onboarder.awaiting(operation_id)
        result = {**(view["result"] or {}), "awaiting": awaiting}
        status = OperationStatus.AWAITING_DECISIONS if awaiting else OperationStatus.DONE
        await operations.log.finish(operation_id, result, status)
        return JSONResponse(await operations.log.get(operation_id))

    @router.get("/v1/operations/{operation_id}")
    async def get_operation(request: Request, operation_id: str) -> dict[str, Any]:
        return await _operation_or_404(_operations(request), operation_id)

    @router.get("/v1/operations")
    async def list_operations(
        request: Request,
        store_id: str | None = None,
        kind: OperationKind | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """List the operation log, newest first: the audit trail of who requested what."""
        query = select(OPERATION).order_by(OPERATION.c.requested_at.desc()).limit(limit)
        if store_id is not None:
            query = query.where(OPERATION.c.store_id == store_id)
        if kind is not None:
            query = query.where(OPERATION.c.kind == kind.value)
        async with _operations(request).runtime.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {"items": [operation_view(row) for row in rows]}

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> str:
        """Return the last finished drift check of each store in the Prometheus text format."""
        operations = _operations(request)
        lines = [
            "# HELP lojasync_drift_records Records that differ from the orchestrator, "
            "per store, entity and kind, at the last drift check.",
            "# TYPE lojasync_drift_records gauge",
        ]
        checked = [
            "# HELP lojasync_drift_checked_timestamp_seconds When the last drift check ended.",
            "# TYPE lojasync_drift_checked_timestamp_seconds gauge",
        ]
        for store_id, _ in await operations.known_stores():
            latest = await _latest_finished_drift(operations, store_id)
            if latest is None:
                continue
            for entity, drift in (latest["result"] or {}).get("entities", {}).items():
                for kind in ("missing", "extra", "different"):
                    lines.append(
                        f'lojasync_drift_records{{store="{store_id}",entity="{entity}",'
                        f'kind="{kind}"}} {drift[kind]}'
                    )
            lines.append(
                f'lojasync_drift_records{{store="{store_id}",entity="all",kind="all"}} '
                f"{(latest['result'] or {}).get('differences', 0)}"
            )
            finished = datetime.fromisoformat(latest["finished_at"]).timestamp()
            checked.append(
                f'lojasync_drift_checked_timestamp_seconds{{store="{store_id}"}} {finished:.3f}'
            )
        return "\n".join([*lines, *checked]) + "\n"

    return router


async def _operation_or_404(operations: Operations, operation_id: str) -> dict[str, Any]:
    view = await operations.log.get(operation_id)
    if view is None:
        raise HTTPException(
            404,
            {
                "code": "operation_not_found",
                "message": f"operation {operation_id} does not exist",
                "message_pt_br": f"a operação {operation_id} não existe",
            },
        )
    return view


async def _latest_finished_drift(operations: Operations, store_id: str) -> dict[str, Any] | None:
    query = (
        select(OPERATION)
        .where(
            OPERATION.c.store_id == store_id,
            OPERATION.c.kind == OperationKind.DRIFT.value,
            OPERATION.c.status == OperationStatus.DONE.value,
        )
        .order_by(OPERATION.c.finished_at.desc())
        .limit(1)
    )
    async with operations.runtime.engine.connect() as connection:
        row = (await connection.execute(query)).first()
    return operation_view(row) if row is not None else None
