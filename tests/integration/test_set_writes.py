"""Many-row writes and reads by record id, on PostgreSQL and on SQLite.

On PostgreSQL `Upsert` and `write_together` send one array per column
(`lojasync.array_insert`) and `fetch_by_record_ids` joins `unnest`; SQLite takes the
executemany and the row comparison. Both must leave the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    cast,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from lojasync.persistence import (
    OUTBOX,
    OUTBOX_WRITTEN,
    OutgoingEvent,
    TextList,
    Upsert,
    UtcDateTime,
    byte_ordered_text,
    create_engine,
    create_tables,
    fetch_by_record_ids,
    json_document,
    serial_id,
    write_together,
)
from tests.conftest import DatabaseFactory

METADATA = MetaData()

RECORDS = Table(
    "set_write_record",
    METADATA,
    Column("entity", Text, primary_key=True),
    Column("record_key", byte_ordered_text(), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("data", json_document(none_as_null=True)),
    Column("doc", json_document()),
    Column("stores", TextList()),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

LOG = Table(
    "set_write_log",
    METADATA,
    Column("seq", serial_id(), primary_key=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("body", LargeBinary, nullable=False),
    Column("stores", TextList()),
)

PLAIN_KEYS = Table(
    "set_write_plain",
    METADATA,
    Column("entity", Text, primary_key=True),
    Column("record_key", Text, primary_key=True),
    Column("revision", Integer, nullable=False),
)

NOW = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)

UPSERT = Upsert(
    RECORDS, ("entity", "record_key"), ("revision", "data", "doc", "stores", "updated_at")
)


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseFactory:
    if request.param == "postgresql":
        factory: DatabaseFactory = request.getfixturevalue("fresh_database")
        return factory

    async def sqlite_file(label: str) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / f'{label}.sqlite3'}"

    return sqlite_file


@pytest.fixture
async def engine(database: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    created = create_engine(await database("set-writes"))
    await create_tables(created, [*METADATA.tables.values(), OUTBOX])
    yield created
    await created.dispose()


def record(key: str, revision: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entity": "product",
        "record_key": key,
        "revision": revision,
        "data": {"description": f"Produto {key}", "price": "9.90"},
        "doc": None,
        "stores": None,
        "updated_at": NOW,
    }
    row.update(fields)
    return row


async def read_records(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(RECORDS).order_by(RECORDS.c.record_key))
        return {row.record_key: row for row in rows}


async def test_keys_with_awkward_characters_are_written_and_found(engine: AsyncEngine) -> None:
    keys = ["NULL", "a,b", "{x}", 'q"u', "b\\s", " sp ", "tab\tnl\n", "\x01", "ção"]
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record(key, 1) for key in keys])
        found = await fetch_by_record_ids(connection, RECORDS, [("product", key) for key in keys])

    assert sorted(row.record_key for row in found) == sorted(keys)
    assert sorted(await read_records(engine)) == sorted(keys)


async def test_upsert_writes_every_column_type(engine: AsyncEngine) -> None:
    awkward = ['loja "1"', "loja\\2", "loja,3", "{loja}", "", "ção"]
    async with engine.begin() as connection:
        await UPSERT.execute(
            connection,
            [
                record("A", 1, stores=awkward, doc={"nested": [1, None, "x"]}),
                record("B", 1, data=None, doc=None, stores=[]),
                record("C", 1, updated_at=NOW + timedelta(hours=1)),
            ],
        )

    rows = await read_records(engine)
    assert rows["A"].stores == awkward
    assert rows["A"].doc == {"nested": [1, None, "x"]}
    assert rows["A"].data == {"description": "Produto A", "price": "9.90"}
    assert rows["A"].deleted is False  # the column's default, left out of the rows
    assert rows["A"].updated_at == NOW
    assert rows["B"].data is None
    assert rows["B"].stores == []
    assert rows["C"].updated_at == NOW + timedelta(hours=1)


async def test_none_in_json_columns_follows_none_as_null(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record("A", 1, data=None, doc=None)])
    async with engine.connect() as connection:
        null_data = await connection.scalar(
            select(RECORDS.c.record_key).where(RECORDS.c.data.is_(None))
        )
        null_doc = await connection.scalar(
            select(RECORDS.c.record_key).where(RECORDS.c.doc.is_(None))
        )
    # `data` keeps None as SQL NULL; `doc` stores the JSON value null, as SQLAlchemy does.
    assert null_data == "A"
    assert null_doc is None


async def test_json_documents_keep_the_text_as_written(engine: AsyncEngine) -> None:
    # PostgreSQL's jsonb would hand back {"a": "x", "zeta": 1}: it orders keys by length.
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record("A", 1, data={"zeta": 1, "a": "x"})])
    async with engine.connect() as connection:
        stored = await connection.scalar(select(cast(RECORDS.c.data, Text)))

    assert stored == '{"zeta":1,"a":"x"}'


async def test_upsert_into_existing_jsonb_columns(
    fresh_database: DatabaseFactory,
) -> None:
    # create_tables does not change the type of an existing column; PostgreSQL casts the
    # json values to jsonb on assignment.
    def documents(document_type: Any) -> Table:
        return Table(
            "set_write_documents",
            MetaData(),
            Column("record_key", Text, primary_key=True),
            Column("data", document_type),
        )

    engine = create_engine(await fresh_database("set-writes-jsonb"))
    try:
        await create_tables(engine, [documents(postgresql.JSONB(none_as_null=True))])
        table = documents(json_document(none_as_null=True))
        upsert = Upsert(table, ("record_key",), ("data",))
        for revision in (1, 2):
            async with engine.begin() as connection:
                await upsert.execute(
                    connection,
                    [
                        {"record_key": "A", "data": {"b": [revision, None]}},
                        {"record_key": "B", "data": None},
                    ],
                )
        async with engine.connect() as connection:
            rows = dict((await connection.execute(select(table.c.record_key, table.c.data))).all())
            column_type = await connection.scalar(
                text(
                    "SELECT data_type FROM information_schema.columns"
                    " WHERE table_name = 'set_write_documents' AND column_name = 'data'"
                )
            )
    finally:
        await engine.dispose()

    assert column_type == "jsonb"
    assert rows == {"A": {"b": [2, None]}, "B": None}


async def test_upsert_updates_only_the_listed_columns(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record("A", 1, deleted=True)])
    async with engine.begin() as connection:
        await UPSERT.execute(
            connection, [record("A", 2, deleted=False, data={"description": "novo"})]
        )

    row = (await read_records(engine))["A"]
    assert row.revision == 2
    assert row.data == {"description": "novo"}
    assert row.deleted is True  # not an update column


async def test_upsert_merges_repeated_keys(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await UPSERT.execute(
            connection,
            [
                record("A", 1, deleted=True),
                record("B", 1, deleted=False),
                record("A", 2, deleted=False, data={"description": "segunda"}),
            ],
        )

    rows = await read_records(engine)
    assert sorted(rows) == ["A", "B"]
    assert rows["A"].revision == 2
    assert rows["A"].data == {"description": "segunda"}
    assert rows["A"].deleted is True  # from the first row: not an update column


async def test_insert_keeps_row_order(engine: AsyncEngine) -> None:
    names = [f"event-{index:03d}" for index in range(200)]
    async with engine.begin() as connection:
        rows = [{"event_id": name, "body": name.encode(), "stores": ["loja-1"]} for name in names]
        await write_together(connection, [(LOG, rows)])
    async with engine.connect() as connection:
        stored = (await connection.execute(select(LOG).order_by(LOG.c.seq))).all()

    assert [row.event_id for row in stored] == names
    assert [row.body for row in stored] == [name.encode() for name in names]
    assert all(row.stores == ["loja-1"] for row in stored)


@pytest.mark.parametrize("table", [RECORDS, PLAIN_KEYS], ids=["byte-ordered", "plain"])
async def test_fetch_by_record_ids(engine: AsyncEngine, table: Table) -> None:
    keys = ["B", "a", "Á", "b", "A"]
    async with engine.begin() as connection:
        if table is RECORDS:
            await UPSERT.execute(connection, [record(key, 1) for key in keys])
        else:
            plain_rows = [{"entity": "product", "record_key": key, "revision": 1} for key in keys]
            await write_together(connection, [(PLAIN_KEYS, plain_rows)])
    requested = [("product", "a"), ("product", "Á"), ("product", "missing"), ("price", "A")]
    async with engine.connect() as connection:
        found = await fetch_by_record_ids(connection, table, requested)
        keys_found = sorted(row.record_key for row in found)
        nothing = await fetch_by_record_ids(connection, table, [])
        assert nothing.all() == []

    assert keys_found == sorted(["a", "Á"])


async def test_fetch_by_record_ids_locks_for_update(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record("A", 1)])
        rows = await fetch_by_record_ids(connection, RECORDS, [("product", "A")], for_update=True)
        assert [row.record_key for row in rows] == ["A"]


async def test_write_together_writes_each_table_and_the_outbox(engine: AsyncEngine) -> None:
    events = [
        OutgoingEvent(f"event-{index}", "resolved.product.all", "resolved", b"{}", None)
        for index in range(3)
    ]
    async with engine.begin() as connection:
        await UPSERT.execute(connection, [record("A", 1, deleted=False)])
        await write_together(
            connection,
            [
                (UPSERT, [record("A", 2, deleted=False), record("B", 1, deleted=False)]),
                (LOG, [{"event_id": "log-1", "body": b"x", "stores": None}]),
                (PLAIN_KEYS, []),
            ],
            events,
        )
        assert connection.info.get(OUTBOX_WRITTEN) is True
    async with engine.connect() as connection:
        queued = [
            row.event_id
            for row in await connection.execute(select(OUTBOX.c.event_id).order_by(OUTBOX.c.id))
        ]
        logged = [row.event_id for row in await connection.execute(select(LOG.c.event_id))]

    rows = await read_records(engine)
    assert {key: row.revision for key, row in rows.items()} == {"A": 2, "B": 1}
    assert logged == ["log-1"]
    assert queued == ["event-0", "event-1", "event-2"]


async def test_write_together_without_rows_writes_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await write_together(connection, [(UPSERT, []), (LOG, [])])
        assert OUTBOX_WRITTEN not in connection.info
    assert await read_records(engine) == {}
