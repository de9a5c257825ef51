"""A store registry on a SQLite file beside PostgreSQL services, all on the real RabbitMQ.

A small store whose back-office machine has no room for PostgreSQL keeps its copy in a
SQLite file and still talks to the chain's RabbitMQ. Here loja-2 does that while the
orchestrator, the gateway and the other stores use PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lojasync.persistence import sqlite_path
from lojasync.settings import embedded_database_url
from tests.conftest import DatabaseFactory
from tests.integration.system import System, running_system, store_url
from tests.integration.test_end_to_end import catalog
from tests.support import eventually

pytestmark = pytest.mark.integration

SQLITE_STORE = "loja-2"


@pytest.fixture
async def system(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory, tmp_path: Path
) -> AsyncIterator[System]:
    async def database_for(label: str) -> str:
        if label == SQLITE_STORE:
            return embedded_database_url(label.replace("-", "_"), tmp_path / "store")
        return await fresh_database(label)

    async with running_system(broker_url, namespace, database_for, tmp_path) as running:
        yield running


def stored_products(system: System) -> list[tuple[str, int]]:
    path = sqlite_path(system.store_settings[SQLITE_STORE].database_url)
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT record_key, revision FROM store_record WHERE entity = 'product' "
            "ORDER BY record_key"
        ).fetchall()
    return [(key, revision) for key, revision in rows]


async def test_sqlite_store_receives_catalog(system: System) -> None:
    await system.push(catalog())

    report = await system.converged(product=2, price=2, price_table=2, unit=1)

    assert all(store.matches for store in report.stores)
    assert stored_products(system) == [("P1", 1), ("P2", 1)]


async def test_sqlite_store_customer_reaches_others(system: System) -> None:
    created = await system.client.post(
        f"{store_url(SQLITE_STORE)}/v1/records/customer",
        json={"fields": {"document": "529.982.247-25", "name": "Maria da Silva"}},
    )
    key = created.json()["record_key"]

    confirmed = await eventually(
        lambda: system.record(SQLITE_STORE, "customer", key),
        until=lambda view: view is not None and view["status"] == "confirmed",
        what="customer confirmed in the SQLite store",
    )
    report = await system.converged(customer=1)
    in_loja1 = await system.record("loja-1", "customer", key)

    assert created.status_code == 202
    assert confirmed["revision"] == 1
    assert report.converged
    assert in_loja1 is not None
    assert in_loja1["record"]["name"] == "Maria da Silva"


async def test_sqlite_store_keeps_data_across_restart(system: System) -> None:
    await system.push(catalog())
    await system.converged(product=2)

    await system.restart_store(SQLITE_STORE)
    view = await system.record(SQLITE_STORE, "product", "P1")
    report = await system.converged(product=2)

    assert view is not None
    assert view["record"]["description"] == "PRODUTO P1"
    assert all(store.matches for store in report.stores)
