"""The operation log: every bootstrap, replay, drift check and repair, who asked and what it did.

One row per operation. It is the audit log (who requested it, with which parameters, and
what was sent), the progress a client polls (`total`, `done`), the resume point of an
interrupted bootstrap (`cursor`) and the stored drift report (`result`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, Integer, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from lojasync.ids import new_id
from lojasync.persistence import UtcDateTime, json_document, utc_now

logger = logging.getLogger(__name__)


class OperationKind(StrEnum):
    BOOTSTRAP = "bootstrap"
    REPLAY = "replay"
    DRIFT = "drift"
    REPAIR = "repair"
    ONBOARDING = "onboarding"


class OperationStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # An onboarding whose report has items that wait for a person's decision.
    AWAITING_DECISIONS = "awaiting_decisions"
    # Running when the orchestrator stopped; requesting it again resumes or repeats it.
    INTERRUPTED = "interrupted"


class Operation(SQLModel, table=True):
    """One requested operation on a store, with its progress and result."""

    __tablename__ = "operation"
    __table_args__ = (Index("ix_operation_store_kind", "store_id", "kind", "requested_at"),)

    id: str = Field(primary_key=True)
    kind: str
    store_id: str
    requested_by: str
    requested_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(json_document()))
    dry_run: bool = False
    status: str
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    done: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Where an interrupted operation resumes (bootstrap: the entity and last record key sent).
    cursor: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(json_document()))
    error: str | None = Field(default=None, sa_column=Column(Text))
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(UtcDateTime(), nullable=True)
    )


OPERATION: Table = Operation.__table__  # type: ignore[attr-defined]
OPERATION_TABLES = (OPERATION,)


def operation_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "store_id": row.store_id,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at.isoformat(),
        "parameters": row.parameters,
        "dry_run": row.dry_run,
        "status": row.status,
        "total": row.total,
        "done": row.done,
        "cursor": row.cursor,
        "result": row.result,
        "error": row.error,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


class OperationLog:
    """Writes operation rows; each call is its own short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        kind: OperationKind,
        store_id: str,
        requested_by: str,
        parameters: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> str:
        operation_id = new_id()
        async with self.engine.begin() as connection:
            await connection.execute(
                OPERATION.insert().values(
                    id=operation_id,
                    kind=kind.value,
                    store_id=store_id,
                    requested_by=requested_by,
                    requested_at=utc_now(),
                    parameters=parameters,
                    dry_run=dry_run,
                    status=OperationStatus.RUNNING.value,
                    total=0,
                    done=0,
                )
            )
        logger.info(
            "operation started",
            extra={
                "operation_id": operation_id,
                "kind": kind.value,
                "store_id": store_id,
                "requested_by": requested_by,
                "dry_run": dry_run,
            },
        )
        return operation_id

    async def progress(
        self,
        operation_id: str,
        *,
        done: int,
        total: int | None = None,
        cursor: dict[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {"done": done}
        if total is not None:
            values["total"] = total
        if cursor is not None:
            values["cursor"] = cursor
        async with self.engine.begin() as connection:
            await connection.execute(
                update(OPERATION).where(OPERATION.c.id == operation_id).values(**values)
            )

    async def mark_interrupted(self) -> int:
        """Mark the operations left running by a stopped process as interrupted.

        NOTE: this assumes that one orchestrator process runs operations. A second one
        starting while the first runs an operation marks it too; the first still
        finishes it, and its `finish` sets the final status.
        """
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(OPERATION)
                .where(OPERATION.c.status == OperationStatus.RUNNING.value)
                .values(
                    status=OperationStatus.INTERRUPTED.value,
                    error="the orchestrator stopped while this operation ran; request it "
                    "again to resume it (a bootstrap continues from its last batch)",
                )
            )
        interrupted = result.rowcount or 0
        if interrupted:
            logger.warning(
                "operations left running by a stopped orchestrator marked interrupted",
                extra={"operations": interrupted},
            )
        return interrupted

    async def reopen(self, operation_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(OPERATION)
                .where(OPERATION.c.id == operation_id)
                .values(status=OperationStatus.RUNNING.value, error=None, finished_at=None)
            )

    async def finish(
        self,
        operation_id: str,
        result: dict[str, Any],
        status: OperationStatus = OperationStatus.DONE,
    ) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(OPERATION)
                .where(OPERATION.c.id == operation_id)
                .values(status=status.value, result=result, finished_at=utc_now())
            )
        logger.info("operation finished", extra={"operation_id": operation_id})

    async def fail(self, operation_id: str, error: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(OPERATION)
                .where(OPERATION.c.id == operation_id)
                .values(status=OperationStatus.FAILED.value, error=error, finished_at=utc_now())
            )

    async def get(self, operation_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(select(OPERATION).where(OPERATION.c.id == operation_id))
            ).first()
        return operation_view(row) if row is not None else None

    async def latest(self, kind: OperationKind, store_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(OPERATION)
                    .where(OPERATION.c.kind == kind.value, OPERATION.c.store_id == store_id)
                    .order_by(OPERATION.c.requested_at.desc())
                    .limit(1)
                )
            ).first()
        return operation_view(row) if row is not None else None


OperationBody = Callable[[str], Awaitable[dict[str, Any]]]


class OperationRunner:
    """Runs operations as background tasks of the orchestrator process.

    A failure is stored in the operation row with its message and logged; the row keeps
    its cursor, so a bootstrap requested again resumes from there.
    """

    def __init__(self, log: OperationLog) -> None:
        self.log = log
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, operation_id: str, body: OperationBody) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(operation_id, body), name=f"operation {operation_id}")
        self._tasks[operation_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(operation_id, None))
        return task

    def running(self, operation_id: str) -> bool:
        return operation_id in self._tasks

    async def _run(self, operation_id: str, body: OperationBody) -> None:
        try:
            result = await body(operation_id)
        except asyncio.CancelledError:
            await asyncio.shield(self.log.fail(operation_id, "interrupted: the task was cancelled"))
            raise
        except Exception as exc:
            logger.exception("operation failed", extra={"operation_id": operation_id})
            await self.log.fail(operation_id, f"{type(exc).__name__}: {exc}")
            return
        status = (
            OperationStatus.AWAITING_DECISIONS if result.get("awaiting") else OperationStatus.DONE
        )
        await self.log.finish(operation_id, result, status)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
