"""Database helpers shared by the services: engines, the inbox and the outbox tables.

Every service owns one PostgreSQL database. A consumer writes the ids of the events it
handled into `inbox` in the same transaction as their effect, so a redelivered event is
recognized and skipped. A service writes the events it must publish into `outbox` in the
same transaction as the state change that caused them; `lojasync.outbox` publishes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, Table, Text, text
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Inbox(SQLModel, table=True):
    """Ids of the events this service has applied."""

    __tablename__ = "inbox"

    event_id: str = Field(primary_key=True, max_length=64)
    received_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Outbox(SQLModel, table=True):
    """Events committed with their cause and not yet confirmed by the broker."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    event_id: str = Field(max_length=64, unique=True)
    routing_key: str = Field(sa_column=Column(Text, nullable=False))
    event_type: str = Field(sa_column=Column(Text, nullable=False))
    partition_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


INBOX: Table = Inbox.__table__  # type: ignore[attr-defined]
OUTBOX: Table = Outbox.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class OutgoingEvent:
    """An event ready for the outbox: where it goes and its serialized CloudEvent."""

    event_id: str
    routing_key: str
    event_type: str
    body: bytes
    # Hashed by the orchestrator's input exchange to pick a partition; see lojasync.topology.
    partition_key: str | None = None


OUTBOX_WRITTEN = "lojasync_outbox_written"


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True)


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist yet."""
    parsed = make_url(url)
    database = parsed.database
    if not database:
        return
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    connection = await asyncpg.connect(admin)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await connection.execute(f'CREATE DATABASE "{database}"')
                logger.info("created database", extra={"database": database})
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await connection.close()


async def drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await connection.close()


async def create_tables(engine: AsyncEngine, tables: Sequence[Table]) -> None:
    """Create the given tables if missing; each service lists its own plus inbox and outbox."""
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all, tables=list(tables))


# One statement text whatever the number of ids, so SQLAlchemy and asyncpg reuse the
# compiled and prepared statement; a multi-row VALUES list would be compiled per size.
_INBOX_INSERT = text(
    "INSERT INTO inbox (event_id, received_at) "
    "SELECT unnest(CAST(:event_ids AS TEXT[])), now() "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


async def record_inbox(connection: AsyncConnection, event_ids: Iterable[str]) -> set[str]:
    """Insert event ids into the inbox and return the ones that were new.

    An id already present means the event was applied before; the caller skips it.
    """
    ids = list(event_ids)
    if not ids:
        return set()
    result = await connection.execute(_INBOX_INSERT, {"event_ids": ids})
    return {row[0] for row in result}


def upsert_statement(
    table: Table, key_columns: Sequence[str], update_columns: Sequence[str] | None = None
) -> Insert:
    """Build `INSERT ... ON CONFLICT` for `table`, to run with many rows of parameters.

    With `update_columns` a conflicting row takes those columns from the new row; without
    them it is left as it is. Build it once and pass a list of row dicts to execute, so the
    statement is compiled and prepared once and asyncpg sends the rows in one pipeline.
    """
    statement = pg_insert(table)
    if not update_columns:
        return statement.on_conflict_do_nothing(index_elements=list(key_columns))
    return statement.on_conflict_do_update(
        index_elements=list(key_columns),
        set_={name: statement.excluded[name] for name in update_columns},
    )


async def add_outbox(connection: AsyncConnection, events: Sequence[OutgoingEvent]) -> None:
    if not events:
        return
    # Read by ServiceRuntime.transaction, which wakes the relay only after such a commit.
    connection.info[OUTBOX_WRITTEN] = True
    now = utc_now()
    await connection.execute(
        OUTBOX.insert(),
        [
            {
                "event_id": event.event_id,
                "routing_key": event.routing_key,
                "event_type": event.event_type,
                "partition_key": event.partition_key,
                "body": event.body,
                "created_at": now,
            }
            for event in events
        ],
    )


# Serialization failure, deadlock, administrator shutdown, crash shutdown, cannot connect
# now, too many connections, and "database is not currently accepting connections" (55000,
# while ALLOW_CONNECTIONS is false). Class 08 (connection exceptions) is checked apart.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55000"})


def is_transient_database_error(error: BaseException) -> bool:
    """Tell whether a database error may go away on retry (lost connection, deadlock...)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OperationalError | SAInterfaceError):
        return True
    cause = getattr(error, "orig", None) or error.__cause__ or error
    if isinstance(cause, OSError | ConnectionError | asyncpg.exceptions.PostgresConnectionError):
        return True
    if isinstance(cause, asyncpg.exceptions.InterfaceError):
        return True
    sqlstate = getattr(cause, "sqlstate", None) or getattr(
        getattr(cause, "__cause__", None), "sqlstate", None
    )
    return sqlstate in _TRANSIENT_SQLSTATES or (
        isinstance(sqlstate, str) and sqlstate.startswith("08")
    )


async def database_ready(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
