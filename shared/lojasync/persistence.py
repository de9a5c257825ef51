"""Database helpers shared by the services: engines, column types, inbox and outbox.

Every service owns one database: PostgreSQL (asyncpg) on servers, or a SQLite file
(aiosqlite) in embedded mode. A consumer writes the ids of the events it handled into
`inbox` in the same transaction as their effect, so a redelivered event is recognized
and skipped. A service writes the events it must publish into `outbox` in the same
transaction as the state change that caused them; `lojasync.outbox` publishes them.

The column types below map to native PostgreSQL types (JSON, TEXT[], BIGINT, collation
"C") and to their SQLite equivalents, so one set of SQLModel tables serves both.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Result, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

from lojasync.array_insert import ArrayInsert, execute_together
from lojasync.pg_array import array_text

logger = logging.getLogger(__name__)


POSTGRESQL = "postgresql"
SQLITE = "sqlite"


def utc_now() -> datetime:
    return datetime.now(UTC)


def json_document(*, none_as_null: bool = False) -> TypeEngine[Any]:
    """Return the type of a JSON document column: `json` on PostgreSQL, JSON text on SQLite.

    PostgreSQL's `json` keeps the text as written and only checks its syntax, where `jsonb`
    converts each document to its binary form on every insert: 6 to 8 µs more per row of
    250 bytes on the 2-CPU development machine. lojasync writes documents and reads them
    back whole and never queries inside them, so the binary form would serve no query.
    """
    return JSON(none_as_null=none_as_null).with_variant(
        postgresql.JSON(none_as_null=none_as_null), POSTGRESQL
    )


def byte_ordered_text() -> TypeEngine[str]:
    """Return a text type compared and sorted by bytes, so keyset pages and digests agree.

    PostgreSQL needs the "C" collation for that; SQLite's default BINARY collation
    already compares UTF-8 bytes.
    """
    return Text().with_variant(Text(collation="C"), POSTGRESQL)


def serial_id() -> TypeEngine[int]:
    """Return the type of an auto-incremented primary key: BIGINT on PostgreSQL, the rowid
    on SQLite.

    SQLite assigns ids only to a column declared exactly INTEGER PRIMARY KEY.
    """
    return BigInteger().with_variant(Integer(), SQLITE)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware, in UTC.

    PostgreSQL stores `timestamptz`; SQLite keeps no zone, so values are stored in UTC
    and read back with UTC attached.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; pass a timezone-aware value")
        return value if dialect.name == POSTGRESQL else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class TextList(TypeDecorator[list[str]]):
    """A list of strings: TEXT[] on PostgreSQL, a JSON array on SQLite."""

    impl = JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == POSTGRESQL:
            return dialect.type_descriptor(postgresql.ARRAY(Text()))
        return dialect.type_descriptor(JSON())


class Inbox(SQLModel, table=True):
    """Ids of the events this service has applied."""

    __tablename__ = "inbox"

    # Compared by bytes: under a database collation such as C.UTF-8, PostgreSQL 15 compares
    # text with strcoll, and inserts into an index of 300,000 to 900,000 UUIDs took 25 to
    # 50 % longer. Tables created before keep their collation, which works as well.
    event_id: str = Field(
        sa_column=Column(
            String(64).with_variant(String(64, collation="C"), POSTGRESQL), primary_key=True
        )
    )
    received_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


class Outbox(SQLModel, table=True):
    """Events committed with their cause and not yet confirmed by the broker."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, sa_column=Column(serial_id(), primary_key=True))
    event_id: str = Field(max_length=64, unique=True)
    routing_key: str = Field(sa_column=Column(Text, nullable=False))
    event_type: str = Field(sa_column=Column(Text, nullable=False))
    partition_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=utc_now, sa_column=Column(UtcDateTime(), nullable=False)
    )


INBOX: Table = Inbox.__table__  # type: ignore[attr-defined]
OUTBOX: Table = Outbox.__table__  # type: ignore[attr-defined]


class OutgoingEvent(NamedTuple):
    """An event ready for the outbox: where it goes and its serialized CloudEvent.

    A named tuple, because the orchestrator and the relays build one per event.
    """

    event_id: str
    routing_key: str
    event_type: str
    body: bytes
    # The key that orders the event among the orchestrator's input (`product:P1`). The
    # publisher derives the partition from it; see lojasync.topology and lojasync.packing.
    partition_key: str | None = None
    content_type: str = "application/cloudevents+json"


OUTBOX_WRITTEN = "lojasync_outbox_written"


def is_sqlite_url(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == SQLITE


def dialect_of(connection: AsyncConnection) -> str:
    return connection.dialect.name


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """Create the engine of a service's database.

    A SQLite database gets a pool of one connection: the process's transactions on it
    queue in the pool instead of failing with "database is locked", so SQLite needs no
    row or advisory locks. A transaction must therefore never open a second connection
    to the same database while it keeps the first.

    PostgreSQL connections are not pinged at checkout: a ping is one more round trip in
    every transaction. After the server restarts, the first statement on an old connection
    fails as a disconnect, SQLAlchemy then discards every connection the pool holds, and
    the caller's retry (a consumer's, or the client's after a 503) gets a new one.
    """
    if not is_sqlite_url(url):
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=5,
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        )
    engine = create_async_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=120,
        connect_args={"timeout": 30},
        json_serializer=_json_text,
        json_deserializer=orjson.loads,
    )
    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _json_text(value: Any) -> str:
    # orjson instead of the standard library's json for JSON and JSONB columns: the
    # orchestrator writes several JSON documents per change, and json.dumps was one of
    # its larger costs in a py-spy profile of the throughput benchmark.
    return orjson.dumps(value).decode()


def _configure_sqlite(dbapi_connection: Any, connection_record: object) -> None:
    # WAL lets another process (the CLI) read while the service writes; NORMAL
    # synchronous mode in WAL loses no committed transaction when the process crashes.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def sqlite_path(url: str | URL) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError(
            f"SQLite URL {url!s} names no file; use sqlite+aiosqlite:///path/to/file.db"
        )
    return Path(database)


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist yet.

    For SQLite this creates the file's directory; the file appears on first connect.
    """
    if is_sqlite_url(url):
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        return
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
    if is_sqlite_url(url):
        path = sqlite_path(url)
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
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
    "SELECT unnest(CAST(CAST(:event_ids AS TEXT) AS TEXT[])), now() "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
# SQLite allows 32,766 bound parameters per statement (since 3.32).
_SQLITE_MAX_PARAMETERS = 32_766


async def record_inbox(connection: AsyncConnection, event_ids: Iterable[str]) -> set[str]:
    """Insert event ids into the inbox and return the ones that were new.

    An id already present means the event was applied before; the caller skips it.
    """
    ids = list(event_ids)
    if not ids:
        return set()
    if dialect_of(connection) == POSTGRESQL:
        result = await connection.execute(_INBOX_INSERT, {"event_ids": array_text(ids)})
        return {row[0] for row in result}
    now = utc_now()
    return await insert_new_rows(
        connection,
        INBOX,
        [{"event_id": event_id, "received_at": now} for event_id in ids],
        key_column="event_id",
    )


async def insert_new_rows(
    connection: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]], *, key_column: str
) -> set[Any]:
    """Insert `rows`, skipping keys already present; return the keys that were inserted.

    Runs multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING statements, as many as
    SQLite's limit of bound parameters requires.
    """
    if not rows:
        return set()
    per_statement = max(1, _SQLITE_MAX_PARAMETERS // len(rows[0]))
    inserted: set[Any] = set()
    for start in range(0, len(rows), per_statement):
        statement = (
            insert_with_conflict(connection, table)
            .values(list(rows[start : start + per_statement]))
            .on_conflict_do_nothing(index_elements=[key_column])
            .returning(table.c[key_column])
        )
        inserted.update(row[0] for row in await connection.execute(statement))
    return inserted


async def fetch_by_record_ids(
    connection: AsyncConnection,
    table: Table,
    record_ids: Sequence[tuple[str, str]],
    *,
    for_update: bool = False,
) -> Result[Any]:
    """Return the rows of `table` whose (entity, record_key) is in `record_ids`.

    On PostgreSQL the ids travel as two arrays joined with `unnest`, so one statement
    serves any number of ids and is planned as one index lookup per id. A row comparison
    `(entity, record_key) IN ((...), ...)` would be planned as one OR branch per id, which
    took about 100 ms for 500 ids. SQLite gets the row comparison.
    """
    columns = table.c
    if dialect_of(connection) != POSTGRESQL:
        query = select(table).where(
            tuple_(columns.entity, columns.record_key).in_(list(record_ids))
        )
        return await connection.execute(query.with_for_update() if for_update else query)
    statement = _by_record_ids(table, for_update, connection.dialect)
    parameters = {
        "id_entities": array_text([entity for entity, _ in record_ids]),
        "id_keys": array_text([key for _, key in record_ids]),
    }
    result: Result[Any] = await connection.execute(statement, parameters)
    return result


# Built once per table: SQLAlchemy computes the cache key of every new statement object,
# which took two thirds of the 480 µs of client CPU of a lookup of ten ids.
_BY_RECORD_IDS: dict[tuple[Table, bool], Select[Any]] = {}


def _by_record_ids(table: Table, for_update: bool, dialect: Dialect) -> Select[Any]:
    statement = _BY_RECORD_IDS.get((table, for_update))
    if statement is not None:
        return statement
    columns = table.c
    ids = (
        func.unnest(array_parameter("id_entities", Text), array_parameter("id_keys", Text))
        .table_valued("entity", "record_key")
        .render_derived(name="ids")
    )
    requested_key: ColumnElement[Any] = ids.c.record_key
    collation = getattr(columns.record_key.type.dialect_impl(dialect), "collation", None)
    if collation is not None:
        # Compared in the key column's own collation (see byte_ordered_text), the primary
        # key index serves the lookup.
        requested_key = requested_key.collate(collation)
    statement = select(table).join(
        ids, and_(columns.entity == ids.c.entity, columns.record_key == requested_key)
    )
    if for_update:
        statement = statement.with_for_update(of=table)
    _BY_RECORD_IDS[(table, for_update)] = statement
    return statement


def array_parameter(name: str, element_type: type[TypeEngine[Any]]) -> ColumnElement[Any]:
    """Return a PostgreSQL array parameter whose value the caller passes as array text
    (`lojasync.pg_array.array_text`), so one statement serves any number of values."""
    return cast(bindparam(name, type_=Text), ARRAY(element_type))


def insert_with_conflict(
    connection: AsyncConnection, table: Table
) -> postgresql.Insert | sqlite.Insert:
    """Return an INSERT of the connection's dialect, which has `on_conflict_do_*`."""
    if dialect_of(connection) == POSTGRESQL:
        return postgresql.insert(table)
    return sqlite.insert(table)


class Upsert:
    """`INSERT ... ON CONFLICT` for a table, built once per SQL dialect.

    With `update_columns` a conflicting row takes those columns from the new row; without
    them it is left as it is. Pass a list of row dicts to execute, so the statement is
    compiled and prepared once and asyncpg sends the rows in one pipeline.
    """

    def __init__(
        self, table: Table, key_columns: Sequence[str], update_columns: Sequence[str] = ()
    ) -> None:
        self.table = table
        self.key_columns = list(key_columns)
        self.update_columns = list(update_columns)
        self._statements: dict[str, Insert] = {}
        self._array_insert = ArrayInsert(
            table, conflict_keys=key_columns, update_columns=update_columns
        )

    def statement_for(self, connection: AsyncConnection) -> Insert:
        dialect = dialect_of(connection)
        statement = self._statements.get(dialect)
        if statement is None:
            statement = self._build(dialect)
            self._statements[dialect] = statement
        return statement

    def _build(self, dialect: str) -> Insert:
        if dialect == POSTGRESQL:
            pg_statement = postgresql.insert(self.table)
            if not self.update_columns:
                return pg_statement.on_conflict_do_nothing(index_elements=self.key_columns)
            return pg_statement.on_conflict_do_update(
                index_elements=self.key_columns,
                set_={name: pg_statement.excluded[name] for name in self.update_columns},
            )
        if dialect == SQLITE:
            lite_statement = sqlite.insert(self.table)
            if not self.update_columns:
                return lite_statement.on_conflict_do_nothing(index_elements=self.key_columns)
            return lite_statement.on_conflict_do_update(
                index_elements=self.key_columns,
                set_={name: lite_statement.excluded[name] for name in self.update_columns},
            )
        raise ValueError(f"unsupported database dialect {dialect!r}; use PostgreSQL or SQLite")

    async def execute(self, connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        await write_together(connection, [(self, rows)])


_ARRAY_INSERTS: dict[str, ArrayInsert] = {}


def _array_insert(table: Table) -> ArrayInsert:
    statement = _ARRAY_INSERTS.get(table.fullname)
    if statement is None:
        statement = _ARRAY_INSERTS[table.fullname] = ArrayInsert(table)
    return statement


async def add_outbox(connection: AsyncConnection, events: Sequence[OutgoingEvent]) -> None:
    await write_together(connection, [], events)


async def write_together(
    connection: AsyncConnection,
    writes: Sequence[tuple[Upsert | Table, Sequence[dict[str, Any]]]],
    events: Sequence[OutgoingEvent] = (),
) -> None:
    """Insert (into a Table) or upsert (with an Upsert) rows of different tables, and add
    `events` to the outbox.

    On PostgreSQL everything goes in one statement, so a batch's writes cost one round
    trip (see lojasync.array_insert.execute_together). Elsewhere, or when the rows of one
    write differ in their columns, the writes run one after another.
    """
    parts = [(target, rows) for target, rows in writes if rows]
    if events:
        # Read by ServiceRuntime.transaction, which wakes the relay only after such a commit.
        connection.info[OUTBOX_WRITTEN] = True
        parts.append((OUTBOX, _outbox_rows(events)))
    if not parts:
        return
    if dialect_of(connection) == POSTGRESQL:
        inserts = [
            (target._array_insert if isinstance(target, Upsert) else _array_insert(target), rows)
            for target, rows in parts
        ]
        if all(insert.accepts(rows) for insert, rows in inserts):
            await execute_together(connection, inserts)
            return
    for target, rows in parts:
        if isinstance(target, Upsert):
            await connection.execute(target.statement_for(connection), list(rows))
        else:
            await connection.execute(target.insert(), list(rows))


def _outbox_rows(events: Sequence[OutgoingEvent]) -> list[dict[str, Any]]:
    now = utc_now()
    return [
        {
            "event_id": event.event_id,
            "routing_key": event.routing_key,
            "event_type": event.event_type,
            "partition_key": event.partition_key,
            "body": event.body,
            "created_at": now,
        }
        for event in events
    ]


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
    if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
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
