"""Replay, drift detection and repair, and bootstrap, on the real RabbitMQ and PostgreSQL.

Drift is injected by writing to a store's database directly, as an outside tool or a
restored backup would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from stdnum import ean

from lojasync.digest import content_hash
from lojasync.errors import BrokerUnavailable
from lojasync.persistence import OutgoingEvent
from store_registry.settings import StoreSettings
from sync_orchestrator import bootstrap as bootstrap_module
from sync_orchestrator.operations import OperationKind
from sync_orchestrator.operations_api import Operations
from tests.conftest import DatabaseFactory
from tests.integration.system import (
    ORCHESTRATOR,
    VALID_CPF,
    System,
    running_system,
    store_url,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

PRODUCTS = 30
USER = "ana@central"


@pytest.fixture
async def system(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory, tmp_path: Path
) -> AsyncIterator[System]:
    async with running_system(broker_url, namespace, fresh_database, tmp_path) as running:
        yield running


def product(number: int) -> dict[str, Any]:
    return {
        "code": f"P{number:02d}",
        "description": f"PRODUTO {number}",
        "gtins": [],
        "ncm": "22030000",
        "unit": "UN",
    }


def catalog() -> list[tuple[str, dict[str, Any]]]:
    records: list[tuple[str, dict[str, Any]]] = [
        ("unit", {"code": "UN", "description": "Unidade"}),
        ("price_table", {"code": "BASE", "description": "Todas as lojas", "stores": []}),
    ]
    records += [("product", product(n)) for n in range(1, PRODUCTS + 1)]
    records += [
        ("price", {"table": "BASE", "product": f"P{n:02d}", "price": f"{n}.90"})
        for n in range(1, PRODUCTS + 1)
    ]
    return records


def orchestrator_operations(system: System) -> Operations:
    """The orchestrator app's operation services, reached through the test's router."""
    transport = system.router._transports[ORCHESTRATOR.removeprefix("http://")]
    app = transport.app
    assert isinstance(app, FastAPI)
    operations: Operations = app.state.operations
    return operations


async def store_connection(system: System, store_id: str) -> asyncpg.Connection:
    url = make_url(system.store_settings[store_id].database_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def store_rows(system: System, store_id: str) -> list[tuple[Any, ...]]:
    connection = await store_connection(system, store_id)
    try:
        rows = await connection.fetch(
            "SELECT entity, record_key, revision, content_hash, deleted, updated_at"
            " FROM store_record ORDER BY entity, record_key"
        )
    finally:
        await connection.close()
    return [tuple(row) for row in rows]


async def run_operation(
    system: System, store_id: str, kind: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await system.client.post(
        f"{ORCHESTRATOR}/v1/stores/{store_id}/{kind}",
        params={"wait": "true"},
        json={"requested_by": USER, **(body or {})},
    )
    assert response.status_code == 200, response.text
    operation: dict[str, Any] = response.json()
    return operation


async def loaded(system: System) -> None:
    await system.push(catalog())
    await system.converged(product=PRODUCTS, price=PRODUCTS, price_table=1, unit=1)


# --- Replay -------------------------------------------------------------------------------


async def test_replay_restores_lost_rows_once(system: System) -> None:
    await loaded(system)
    connection = await store_connection(system, "loja-1")
    await connection.execute(
        "DELETE FROM store_record WHERE entity = 'product' AND record_key IN ('P01', 'P02')"
    )
    await connection.close()

    dry_run = await run_operation(system, "loja-1", "replay", {"dry_run": True})
    first = await run_operation(system, "loja-1", "replay", {"entities": ["product"]})
    await system.converged(product=PRODUCTS)
    after_first = await store_rows(system, "loja-1")
    second = await run_operation(system, "loja-1", "replay", {"entities": ["product"]})
    await eventually(
        lambda: system.client.get(f"{store_url('loja-1')}/v1/status"),
        until=lambda response: response.status_code == 200,
    )
    after_second = await store_rows(system, "loja-1")
    log = (
        await system.client.get(
            f"{ORCHESTRATOR}/v1/operations", params={"store_id": "loja-1", "kind": "replay"}
        )
    ).json()["items"]

    assert dry_run["result"]["events"] == 2 * PRODUCTS + 2
    assert dry_run["result"]["messages"] == 0
    assert len(dry_run["result"]["sample"]) == 50
    assert first["result"]["events"] == PRODUCTS
    assert first["result"]["per_entity"] == {"product": PRODUCTS}
    assert second["result"]["events"] == PRODUCTS
    assert after_second == after_first
    assert [item["requested_by"] for item in log] == [USER, USER, USER]
    assert [item["dry_run"] for item in log] == [False, False, True]


async def test_replay_second_run_changes_nothing(system: System) -> None:
    await loaded(system)
    connection = await store_connection(system, "loja-2")
    await connection.execute(
        "UPDATE store_record SET revision = 0, data = NULL, content_hash = NULL"
        " WHERE entity = 'price'"
    )
    await connection.close()

    await run_operation(system, "loja-2", "replay", {"entities": ["price"]})
    await system.converged(price=PRODUCTS)
    before = await store_rows(system, "loja-2")
    await run_operation(system, "loja-2", "replay", {})
    await run_operation(system, "loja-2", "replay", {"entities": ["price"]})
    probe = await run_operation(system, "loja-2", "drift")
    after = await store_rows(system, "loja-2")

    assert probe["result"]["in_sync"] is True
    assert after == before


# --- Drift and repair ---------------------------------------------------------------------


async def inject_drift(system: System, store_id: str, customer_id: str) -> None:
    """Delete P03 and price BASE:P07, change P05 and the customer, add an unknown P99."""
    connection = await store_connection(system, store_id)
    changed = {**product(5), "description": "ALTERADO FORA DO LOJASYNC"}
    extra = product(99)
    customer_row = await connection.fetchrow(
        "SELECT data FROM store_record WHERE entity = 'customer' AND record_key = $1",
        customer_id,
    )
    assert customer_row is not None
    customer = {**orjson.loads(customer_row["data"]), "name": "Nome Mudado Na Loja"}
    try:
        await connection.execute(
            "DELETE FROM store_record WHERE (entity, record_key) IN"
            " (('product', 'P03'), ('price', 'BASE:P07'))"
        )
        await connection.execute(
            "UPDATE store_record SET data = $1::json, content_hash = $2"
            " WHERE entity = 'product' AND record_key = 'P05'",
            orjson.dumps(changed).decode(),
            content_hash(changed),
        )
        await connection.execute(
            "UPDATE store_record SET data = $1::json, content_hash = $2"
            " WHERE entity = 'customer' AND record_key = $3",
            orjson.dumps(customer).decode(),
            content_hash(customer),
            customer_id,
        )
        await connection.execute(
            "INSERT INTO store_record (entity, record_key, revision, data, content_hash,"
            " deleted, local, updated_at)"
            " VALUES ('product', 'P99', 1, $1::json, $2, false, '{}', now())",
            orjson.dumps(extra).decode(),
            content_hash(extra),
        )
    finally:
        await connection.close()


async def create_customer(system: System) -> str:
    response = await system.client.post(
        f"{store_url('loja-1')}/v1/records/customer",
        json={"fields": {"document": VALID_CPF, "name": "Maria Souza"}},
    )
    assert response.status_code == 202, response.text
    customer_id: str = response.json()["record"]["id"]
    await system.settled_record("loja-1", "customer", customer_id)
    return customer_id


async def test_drift_detected_exactly(system: System) -> None:
    await loaded(system)
    customer_id = await create_customer(system)
    await system.converged(customer=1)
    await inject_drift(system, "loja-2", customer_id)

    operation = await run_operation(system, "loja-2", "drift")
    untouched = await run_operation(system, "loja-1", "drift")
    report = operation["result"]
    entities = report["entities"]
    metrics = (await system.client.get(f"{ORCHESTRATOR}/metrics")).text

    assert operation["status"] == "done"
    assert report["differences"] == 5
    assert set(entities) == {"product", "price", "customer"}
    assert entities["product"]["missing_keys"] == ["P03"]
    assert entities["product"]["different_keys"] == ["P05"]
    assert entities["product"]["extra_keys"] == ["P99"]
    assert entities["price"]["missing_keys"] == ["BASE:P07"]
    assert entities["price"]["extra"] + entities["price"]["different"] == 0
    assert entities["customer"]["different_keys"] == [customer_id]
    assert untouched["result"]["in_sync"] is True
    assert 'lojasync_drift_records{store="loja-2",entity="product",kind="missing"} 1' in metrics
    assert 'lojasync_drift_records{store="loja-1",entity="all",kind="all"} 0' in metrics


async def test_drift_repaired_by_policy(system: System) -> None:
    await loaded(system)
    customer_id = await create_customer(system)
    await system.converged(customer=1)
    await inject_drift(system, "loja-2", customer_id)

    repair = await run_operation(system, "loja-2", "repair")
    report = await system.converged(product=PRODUCTS, price=PRODUCTS, customer=1)
    check = await run_operation(system, "loja-2", "drift")
    product_5 = await system.record("loja-2", "product", "P05")
    product_99 = await system.record("loja-2", "product", "P99")
    central_customer = await system.central_record("customer", customer_id)
    other_store_customer = await eventually(
        lambda: system.record("loja-3", "customer", customer_id),
        until=lambda view: view is not None and view["record"]["name"] == "Nome Mudado Na Loja",
        what="the raised customer name in loja-3",
    )

    assert repair["status"] == "done"
    assert repair["result"]["resent"] == 4
    assert repair["result"]["raised"] == 1
    assert report.converged
    assert check["result"]["in_sync"] is True
    assert product_5 is not None
    assert product_5["record"]["description"] == "PRODUTO 5"
    assert product_99 is None or product_99["status"] == "deleted"
    assert central_customer is not None
    assert central_customer["record"]["name"] == "Nome Mudado Na Loja"
    assert other_store_customer["record"]["name"] == "Nome Mudado Na Loja"


# --- Bootstrap ----------------------------------------------------------------------------


class FailingBus:
    """Publishes through the broker and fails after `limit` publish calls, as a lost link would."""

    def __init__(self, operations: Operations, limit: int | None) -> None:
        self.broker = operations.runtime.broker
        self.limit = limit
        self.calls = 0

    async def publish(self, events: Sequence[OutgoingEvent]) -> None:
        if self.limit is not None and self.calls >= self.limit:
            raise BrokerUnavailable("link to the broker cut by the test")
        self.calls += 1
        await self.broker.publish(events)


async def add_store(system: System, store_id: str, fresh_database: DatabaseFactory) -> None:
    base = system.store_settings["loja-1"]
    system.store_settings[store_id] = StoreSettings(
        broker_url=base.broker_url,
        namespace=base.namespace,
        outbox_poll_seconds=0.05,
        store_id=store_id,
        database_url=await fresh_database(store_id),
        api_url=store_url(store_id),
    )
    await system.start_store(store_id)
    await eventually(
        system.report,
        until=lambda report: store_id in [store.store_id for store in report.stores],
        what=f"{store_id} announced",
    )


async def test_interrupted_bootstrap_resumes(
    system: System, fresh_database: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await loaded(system)
    await add_store(system, "loja-4", fresh_database)
    operations = orchestrator_operations(system)
    monkeypatch.setattr(bootstrap_module, "PAGE_ROWS", 10)
    operations.sender.items_per_message = 5
    cut = FailingBus(operations, limit=3)
    operations.sender.bus = cut

    interrupted = await run_operation(system, "loja-4", "bootstrap")
    resumed_bus = FailingBus(operations, limit=None)
    operations.sender.bus = resumed_bus
    resumed = await run_operation(system, "loja-4", "bootstrap")
    report = await eventually(
        system.report,
        until=lambda report: report.converged,
        what="loja-4 converged after the bootstrap",
    )
    loja_4 = next(store for store in report.stores if store.store_id == "loja-4")
    counts = {entity.entity: entity.count for entity in loja_4.entities}

    assert interrupted["status"] == "failed"
    assert interrupted["cursor"] is not None
    assert interrupted["done"] < interrupted["total"]
    assert resumed["id"] == interrupted["id"]
    assert resumed["status"] == "done"
    assert resumed["result"]["records"] == 2 * PRODUCTS + 2
    # The rest of the products (one page), the price table (one) and the prices (three).
    assert resumed_bus.calls == 5
    assert counts["unit"] == 1
    assert counts["product"] == PRODUCTS
    assert counts["price"] == PRODUCTS
    assert loja_4.matches


# --- Onboarding ---------------------------------------------------------------------------


def gtin13(number: int) -> str:
    body = f"789{number:09d}"
    return body + ean.calc_check_digit(body)


def onboarding_product(code: str, gtins: list[str], description: str) -> dict[str, Any]:
    return {
        "code": code,
        "description": description,
        "gtins": gtins,
        "ncm": "22030000",
        "unit": "UN",
    }


OTHER_CPF = "11144477735"


async def test_onboarding_reports_and_converges(
    system: System, fresh_database: DatabaseFactory
) -> None:
    erp_customer = str(uuid.uuid4())
    store_customer = str(uuid.uuid4())
    store_only_customer = str(uuid.uuid4())
    erp_products = [
        ("product", onboarding_product(f"P0{n}", [gtin13(n)], f"PRODUTO {n}")) for n in range(1, 7)
    ]
    await system.push(
        [
            ("unit", {"code": "UN", "description": "Unidade"}),
            *erp_products,
            (
                "customer",
                {
                    "id": erp_customer,
                    "document": VALID_CPF,
                    "name": "Maria Souza",
                    "email": "maria@erp.example.com",
                },
            ),
        ]
    )
    await system.converged(product=6, unit=1, customer=1)
    await add_store(system, "loja-4", fresh_database)
    legacy = [
        {
            "entity": "product",
            "key": "L01",
            "fields": onboarding_product("L01", [gtin13(1)], "PRODUTO 1"),
        },
        {
            "entity": "product",
            "key": "L02",
            "fields": onboarding_product("L02", [gtin13(2)], "NOME DA LOJA"),
        },
        {
            "entity": "product",
            "key": "L03",
            "fields": onboarding_product("L03", [gtin13(3), gtin13(4)], "DOIS GTINS"),
        },
        {
            "entity": "product",
            "key": "L09",
            "fields": onboarding_product("L09", [gtin13(9)], "SO NA LOJA"),
        },
        {
            "entity": "customer",
            "key": store_customer,
            "fields": {
                "document": "529.982.247-25",
                "name": "Maria Souza",
                "email": "maria@loja.example.com",
            },
        },
        {
            "entity": "customer",
            "key": store_only_customer,
            "fields": {"document": OTHER_CPF, "name": "João Pereira"},
        },
    ]
    loaded = await system.client.post(
        f"{store_url('loja-4')}/v1/onboarding/records", json={"records": legacy}
    )

    dry_run = await run_operation(system, "loja-4", "onboarding", {"dry_run": True})
    held_after_dry_run = await store_rows(system, "loja-4")
    operation = await run_operation(system, "loja-4", "onboarding")
    items = (
        await system.client.get(f"{ORCHESTRATOR}/v1/operations/{operation['id']}/items")
    ).json()["items"]
    by_key = {item["store_key"]: item for item in items}
    awaiting = sorted(item["store_key"] for item in items if item["decision"] is None)
    decisions = await system.client.post(
        f"{ORCHESTRATOR}/v1/operations/{operation['id']}/decisions",
        json={
            "requested_by": USER,
            "decisions": [
                {"item": by_key["L03"]["item"], "decision": "accept_erp", "erp_key": "P03"},
                {"item": by_key["L09"]["item"], "decision": "accept_erp"},
                {
                    "item": by_key[store_customer]["item"],
                    "decision": "merge",
                    "fields": {"email": "store"},
                },
            ],
        },
    )
    central_customer = await eventually(
        lambda: system.central_record("customer", erp_customer),
        until=lambda state: state is not None and state["revision"] == 2,
        what="the merged customer decided",
    )
    created = await eventually(
        lambda: system.central_record("customer", store_only_customer),
        until=lambda state: state is not None,
        what="the store-only customer created",
    )
    report = await eventually(
        system.report,
        until=lambda report: (
            report.converged and any(store.store_id == "loja-4" for store in report.stores)
        ),
        what="every store converged after onboarding",
    )
    left = (await system.client.get(f"{store_url('loja-4')}/v1/onboarding/records")).json()
    decided = (
        await system.client.get(f"{ORCHESTRATOR}/v1/operations/{operation['id']}/items")
    ).json()["items"]

    assert loaded.status_code == 200
    assert dry_run["status"] == "done"
    assert dry_run["result"]["entities"]["product"] == {
        "only_store": 1,
        "equal": 1,
        "different": 1,
        "conflict": 1,
        "invalid": 0,
        "only_erp": 2,
        "only_erp_keys": ["P05", "P06"],
    }
    assert dry_run["result"]["entities"]["customer"] == {
        "only_store": 1,
        "equal": 0,
        "different": 1,
        "conflict": 0,
        "invalid": 0,
        "only_erp": 0,
        "only_erp_keys": [],
    }
    assert dry_run["result"]["entities"]["unit"]["only_erp_keys"] == ["UN"]
    assert held_after_dry_run == []
    assert operation["status"] == "awaiting_decisions"
    assert by_key["L01"]["category"] == "equal"
    assert by_key["L01"]["erp_key"] == "P01"
    assert by_key["L02"]["category"] == "different"
    assert by_key["L02"]["differences"] == {
        "description": {"erp": "PRODUTO 2", "store": "NOME DA LOJA"}
    }
    assert by_key["L02"]["decision"] == "accept_erp"
    assert by_key["L03"]["category"] == "conflict"
    assert by_key["L03"]["candidates"] == ["P03", "P04"]
    assert by_key["L09"]["category"] == "only_store"
    assert by_key[store_customer]["category"] == "different"
    assert by_key[store_customer]["differences"] == {
        "email": {"erp": "maria@erp.example.com", "store": "maria@loja.example.com"}
    }
    assert by_key[store_only_customer]["decision"] == "accept_store"
    assert awaiting == sorted(["L03", "L09", store_customer])
    assert decisions.status_code == 200, decisions.text
    assert decisions.json()["status"] == "done"
    assert central_customer["record"]["email"] == "maria@loja.example.com"
    assert central_customer["record"]["name"] == "Maria Souza"
    assert created["record"]["document"] == OTHER_CPF
    assert report.converged
    assert left["items"] == []
    assert all(item["decided_by"] in (USER, "policy") for item in decided)
    assert all(item["applied_at"] is not None for item in decided)


async def test_replay_filters_by_key_and_revision(system: System) -> None:
    await loaded(system)
    await system.push([("product", {**product(1), "description": "PRODUTO 1 NOVO"})])
    await eventually(
        lambda: system.central_record("product", "P01"),
        until=lambda state: state is not None and state["revision"] == 2,
        what="P01 at revision 2",
    )

    by_key = await run_operation(
        system, "loja-1", "replay", {"dry_run": True, "record_keys": ["P01", "P02"]}
    )
    newer = await run_operation(
        system, "loja-1", "replay", {"dry_run": True, "record_keys": ["P01"], "from_revision": 2}
    )
    older = await run_operation(
        system, "loja-1", "replay", {"dry_run": True, "entities": ["product"], "to_revision": 1}
    )

    assert by_key["result"]["events"] == 3
    assert [item["revision"] for item in newer["result"]["sample"]] == [2]
    assert older["result"]["events"] == PRODUCTS


async def test_scheduled_drift_check_stores_report(system: System) -> None:
    await loaded(system)
    operations = orchestrator_operations(system)

    operations.start_schedule(0.2)
    scheduled = await eventually(
        lambda: system.client.get(
            f"{ORCHESTRATOR}/v1/operations", params={"kind": "drift", "store_id": "loja-3"}
        ),
        until=lambda response: any(
            item["requested_by"] == "schedule" and item["status"] == "done"
            for item in response.json()["items"]
        ),
        what="a scheduled drift check of loja-3",
    )
    metrics = (await system.client.get(f"{ORCHESTRATOR}/metrics")).text
    report = next(
        item
        for item in scheduled.json()["items"]
        if item["requested_by"] == "schedule" and item["status"] == "done"
    )

    assert report["result"]["in_sync"] is True
    assert 'lojasync_drift_records{store="loja-3",entity="all",kind="all"} 0' in metrics
    assert 'lojasync_drift_checked_timestamp_seconds{store="loja-3"}' in metrics


# --- Bad input and interrupted operations --------------------------------------------------


async def post_operation(
    system: System, store_id: str, kind: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    response = await system.client.post(
        f"{ORCHESTRATOR}/v1/stores/{store_id}/{kind}", json={"requested_by": USER, **body}
    )
    detail: dict[str, Any] = response.json()["detail"]
    return response.status_code, detail


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from_revision": 5, "to_revision": 2}, "to_revision"),
        ({"since": "2026-12-05T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "until"),
    ],
)
async def test_replay_inverted_range_rejected(
    system: System, body: dict[str, Any], field: str
) -> None:
    status, detail = await post_operation(system, "loja-1", "replay", body)
    operations = (
        await system.client.get(f"{ORCHESTRATOR}/v1/operations", params={"store_id": "loja-1"})
    ).json()["items"]

    assert status == 422
    assert detail["code"] == "range_invalid"
    assert detail["field"] == field
    assert field in detail["message"]
    assert field in detail["message_pt_br"]
    assert operations == []


async def test_replay_unknown_entity_names_field(system: System) -> None:
    status, detail = await post_operation(system, "loja-1", "replay", {"entities": ["produto"]})

    assert status == 422
    assert detail["field"] == "entities"
    assert "produto" in detail["message_pt_br"]


async def test_invalid_body_answers_both_languages(system: System) -> None:
    status, detail = await post_operation(system, "loja-1", "replay", {"from_revision": 0})

    assert status == 422
    assert detail["code"] == "request_invalid"
    assert detail["errors"][0]["field"] == "from_revision"
    assert "from_revision" in detail["message"]
    assert "from_revision" in detail["message_pt_br"]


async def test_running_operation_marked_interrupted(system: System) -> None:
    operations = orchestrator_operations(system)
    operation_id = await operations.log.create(OperationKind.BOOTSTRAP, "loja-1", USER, {})

    interrupted = await operations.log.mark_interrupted()
    view = await operations.log.get(operation_id)

    assert interrupted == 1
    assert view is not None
    assert view["status"] == "interrupted"
    assert "request it again" in view["error"]


async def test_loaded_legacy_records_deleted(system: System) -> None:
    records_url = f"{store_url('loja-1')}/v1/onboarding/records"
    legacy = [
        {"entity": "product", "key": "L1", "fields": {"description": "ARROZ"}},
        {"entity": "customer", "key": str(uuid.uuid4()), "fields": {"name": "Ana"}},
    ]
    await system.client.post(records_url, json={"records": legacy})

    products = await system.client.delete(records_url, params={"entity": "product"})
    left = (await system.client.get(records_url)).json()["items"]
    everything = await system.client.delete(records_url)
    unknown = await system.client.delete(records_url, params={"entity": "produto"})

    assert products.json() == {"removed": 1}
    assert [item["entity"] for item in left] == ["customer"]
    assert everything.json() == {"removed": 1}
    assert unknown.status_code == 422
    assert unknown.json()["detail"]["field"] == "entity"
