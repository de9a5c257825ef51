"""Which database errors are worth retrying."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from lojasync.persistence import is_transient_database_error


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def wrapped(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", None, FakeDriverError(sqlstate))


@pytest.mark.parametrize(
    "sqlstate",
    ["40001", "40P01", "57P01", "57P03", "53300", "55000", "08006", "08001"],
)
def test_transient_sqlstates_retried(sqlstate: str) -> None:
    assert is_transient_database_error(wrapped(sqlstate))


@pytest.mark.parametrize("sqlstate", ["23505", "22P02", "42P01"])
def test_data_errors_not_retried(sqlstate: str) -> None:
    assert not is_transient_database_error(wrapped(sqlstate))
