"""Array text (`lojasync.pg_array`) read by PostgreSQL gives the arrays asyncpg would send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from lojasync.pg_array import array_text
from tests.conftest import DatabaseFactory

AWKWARD_TEXTS = [
    "plain",
    "",
    "NULL",
    "null",
    None,
    " padded ",
    "{braces}",
    "a,b",
    'quote "inside"',
    "back\\slash",
    '\\"',
    "\\n (backslash n)",
    "tab\there",
    "line\nbreak",
    "\x01\x1f",
    "ção 日本 €",
    "\u2028",
    "'",
]


@pytest.fixture
async def connection(fresh_database: DatabaseFactory) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(await fresh_database("pg-array")).set(drivername="postgresql")
    opened = await asyncpg.connect(url.render_as_string(hide_password=False))
    yield opened
    await opened.close()


@pytest.mark.parametrize(
    ("sql_type", "values"),
    [
        ("text", AWKWARD_TEXTS),
        ("text", []),
        ("text", [""]),
        ("bigint", [1, -5, None, 2**62, 0]),
        ("integer", [7]),
        ("boolean", [True, False, None]),
        (
            "timestamptz",
            [
                datetime(2026, 12, 5, 3, 4, 5, 123456, tzinfo=UTC),
                datetime(2026, 12, 5, 3, 4, 5, tzinfo=timezone(timedelta(hours=-3))),
                datetime(2026, 12, 5, 3, 4, 5),
                None,
            ],
        ),
    ],
)
async def test_array_text_reads_back_as_the_same_array(
    connection: asyncpg.Connection, sql_type: str, values: list[Any]
) -> None:
    from_text = await connection.fetchval(
        f"SELECT CAST(CAST($1 AS TEXT) AS {sql_type}[])", array_text(values)
    )
    from_list = await connection.fetchval(f"SELECT CAST($1 AS {sql_type}[])", values)

    assert from_text == from_list
    assert len(from_text) == len(values)


async def test_naive_datetimes_are_taken_as_utc(connection: asyncpg.Connection) -> None:
    naive = datetime(2026, 12, 5, 3, 4, 5)

    read = await connection.fetchval(
        "SELECT CAST(CAST($1 AS TEXT) AS timestamptz[])", array_text([naive])
    )

    assert read == [naive.replace(tzinfo=UTC)]


def test_plain_strings_keep_json_quoting() -> None:
    assert array_text(["a", 'b"c', "d\\e", None, ""]) == '{"a","b\\"c","d\\\\e",null,""}'


def test_control_characters_stay_unescaped() -> None:
    assert array_text(["x\ny", "\\n"]) == '{"x\ny","\\\\n"}'
