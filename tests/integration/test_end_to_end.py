"""End-to-end flows across every service, on the servers and in embedded mode.

The services run in the test's event loop, started by `tests.integration.system`. Each
test runs twice (see the `backend` fixture): against the real RabbitMQ and PostgreSQL,
and on SQLite files with the in-process broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lojasync.envelope import RECORD_CHANGED, Envelope
from tests.conftest import Backend
from tests.integration.system import (
    ERP,
    GATEWAY,
    ORCHESTRATOR,
    STORES,
    VALID_CPF,
    System,
    json_or_none,
    running_system,
    store_url,
)
from tests.support import Probe, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def system(backend: Backend, namespace: str, tmp_path: Path) -> AsyncIterator[System]:
    async with running_system(
        backend.broker_url, namespace, backend.fresh_database, tmp_path
    ) as running:
        yield running


def product(code: str, **overrides: Any) -> dict[str, Any]:
    return {
        "code": code,
        "description": f"PRODUTO {code}",
        "gtins": [],
        "ncm": "22030000",
        "unit": "UN",
        **overrides,
    }


def catalog() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("unit", {"code": "UN", "description": "Unidade"}),
        ("product", product("P1", gtins=["7891000315507"])),
        ("product", product("P2", gtins=["78935761"])),
        ("price_table", {"code": "BASE", "description": "Todas as lojas", "stores": []}),
        ("price_table", {"code": "LOJA-3", "description": "Loja 3", "stores": ["loja-3"]}),
        ("price", {"table": "BASE", "product": "P1", "price": "4.99"}),
        ("price", {"table": "BASE", "product": "P2", "price": "7.49"}),
    ]


async def test_erp_catalog_reaches_every_store(system: System) -> None:
    totals = await system.push(catalog())

    report = await system.converged(product=2, price=2, price_table=2, unit=1)
    loja2_table = await system.record("loja-2", "price_table", "LOJA-3")
    loja3_table = await system.record("loja-3", "price_table", "LOJA-3")

    assert totals["accepted"] == 7
    assert [store.store_id for store in report.stores] == list(STORES)
    assert all(store.matches for store in report.stores)
    assert loja2_table is None
    assert loja3_table is not None


async def test_customer_from_store_reaches_erp_and_other_stores(system: System) -> None:
    created = await system.client.post(
        f"{store_url('loja-1')}/v1/records/customer",
        json={"fields": {"document": "529.982.247-25", "name": "Maria da Silva"}},
    )
    key = created.json()["record_key"]

    confirmed = await eventually(
        lambda: system.record("loja-1", "customer", key),
        until=lambda view: view is not None and view["status"] == "confirmed",
        what="customer confirmed in loja-1",
    )
    in_erp = await eventually(
        lambda: json_or_none(system.client, f"{ERP}/erp/records/customer/{key}"),
        until=lambda body: body is not None,
        what="customer in the ERP",
    )
    await system.converged(customer=1)
    others = [await system.record(store_id, "customer", key) for store_id in ("loja-2", "loja-3")]

    assert created.status_code == 202
    assert created.json()["status"] == "pending"
    assert confirmed["revision"] == 1
    assert in_erp["record"]["document"] == VALID_CPF
    assert in_erp["revision"] == 1
    assert all(view is not None and view["record"]["name"] == "Maria da Silva" for view in others)


async def test_erp_owned_edit_rejected_at_store_api(system: System) -> None:
    await system.push(catalog())
    await system.converged(product=2)

    response = await system.client.put(
        f"{store_url('loja-2')}/v1/records/product/P1", json={"fields": {"description": "OUTRO"}}
    )
    events = (await system.client.get(f"{ORCHESTRATOR}/v1/records/product/P1/events")).json()
    view = await system.record("loja-2", "product", "P1")

    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "erp_owned"
    assert "message_pt_br" in response.json()["detail"]
    assert len(events["items"]) == 1
    assert view is not None
    assert view["record"]["description"] == "PRODUTO P1"
    assert view["status"] == "confirmed"


async def test_central_rejection_restores_store(system: System) -> None:
    await system.push(catalog())
    await system.converged(product=2)

    response = await system.client.put(
        f"{store_url('loja-3')}/v1/records/product/P1", json={"fields": {"description": "OUTRO"}}
    )
    restored = await eventually(
        lambda: system.record("loja-3", "product", "P1"),
        until=lambda view: view is not None and view["last_rejection"] is not None,
        what="rejection applied in loja-3",
    )
    report = await system.converged(product=2)

    assert response.status_code == 202
    assert restored["record"]["description"] == "PRODUTO P1"
    assert restored["status"] == "confirmed"
    assert restored["last_rejection"]["code"] == "erp_owned"
    assert report.converged


async def test_store_price_table_reaches_only_its_store(system: System) -> None:
    await system.push(catalog())
    await system.converged(price=2)

    await system.push([("price", {"table": "LOJA-3", "product": "P1", "price": "3.99"})])
    await system.converged(price=3)
    held = {store_id: await system.record(store_id, "price", "LOJA-3:P1") for store_id in STORES}

    assert held["loja-1"] is None
    assert held["loja-2"] is None
    assert held["loja-3"] is not None
    assert held["loja-3"]["record"]["price"] == "3.99"


async def test_operator_goes_to_erp_not_other_stores(system: System) -> None:
    created = await system.client.post(
        f"{store_url('loja-2')}/v1/records/operator",
        json={"fields": {"code": "7", "name": "Ana Caixa", "role": "cashier"}},
    )
    key = created.json()["record_key"]

    in_erp = await eventually(
        lambda: json_or_none(system.client, f"{ERP}/erp/records/operator/{key}"),
        until=lambda body: body is not None,
        what="operator in the ERP",
    )
    report = await system.converged(operator=1)
    held = {store_id: await system.record(store_id, "operator", key) for store_id in STORES}

    assert in_erp["record"]["store_id"] == "loja-2"
    assert held["loja-2"] is not None and held["loja-2"]["status"] == "confirmed"
    assert held["loja-1"] is None
    assert held["loja-3"] is None
    assert report.converged


async def test_customer_edits_merge_by_field(system: System) -> None:
    key = str(uuid.uuid4())
    fields = {"id": key, "document": VALID_CPF, "name": "Maria da Silva"}
    await system.push([("customer", fields)])
    await system.converged(customer=1)

    store_edit = await system.client.put(
        f"{store_url('loja-1')}/v1/records/customer/{key}",
        json={"fields": {"email": "maria@example.com.br"}},
    )
    await system.push([("customer", {**fields, "name": "Maria S. Souza"})])
    await eventually(
        lambda: system.record("loja-2", "customer", key),
        until=lambda view: (
            view is not None
            and view["record"]["email"] == "maria@example.com.br"
            and view["record"]["name"] == "Maria S. Souza"
        ),
        what="merged customer in loja-2",
    )
    report = await system.converged(customer=1)
    in_erp = await eventually(
        lambda: json_or_none(system.client, f"{ERP}/erp/records/customer/{key}"),
        until=lambda body: body is not None and body["record"]["email"] == "maria@example.com.br",
        what="store edit in the ERP",
    )

    assert store_edit.status_code == 202
    assert report.converged
    assert in_erp["record"]["email"] == "maria@example.com.br"


async def test_duplicate_change_delivery_decided_once(system: System) -> None:
    await system.push(catalog())
    await system.converged(product=2)
    event = Envelope(
        source="tests",
        type=RECORD_CHANGED,
        entity="product",
        recordkey="P2",
        origin="erp",
        data={"action": "upsert", "fields": product("P2", gtins=["78935761"], description="NOVO")},
    )

    async with Probe(system.broker_url, system.namespace, []) as probe:
        await probe.publish(event, "changed.product.erp")
        await probe.publish(event, "changed.product.erp")
    await eventually(
        lambda: system.record("loja-1", "product", "P2"),
        until=lambda view: view is not None and view["revision"] == 2,
        what="P2 at revision 2",
    )
    await system.push([("unit", {"code": "KG", "description": "Quilograma", "fractional": True})])
    report = await system.converged(unit=2)
    events = (await system.client.get(f"{ORCHESTRATOR}/v1/records/product/P2/events")).json()

    assert [item["revision"] for item in events["items"]] == [1, 2]
    assert report.converged


async def test_edit_of_other_store_operator_undone(system: System) -> None:
    created = await system.client.post(
        f"{store_url('loja-2')}/v1/records/operator",
        json={"fields": {"code": "8", "name": "Bia Caixa", "role": "cashier"}},
    )
    key = created.json()["record_key"]
    await system.converged(operator=1)

    response = await system.client.put(
        f"{store_url('loja-1')}/v1/records/operator/{key}",
        json={"fields": {"code": "8", "name": "Outro Nome", "role": "cashier"}},
    )
    undone = await eventually(
        lambda: json_or_none(system.client, f"{store_url('loja-1')}/v1/records/operator/{key}"),
        until=lambda body: body is not None and body["last_rejection"] is not None,
        what="rejection applied in loja-1",
    )
    report = await system.converged(operator=1)
    owner_copy = await system.record("loja-2", "operator", key)

    assert response.status_code == 202
    assert undone["last_rejection"]["code"] == "not_owner_store"
    assert undone["status"] == "deleted"
    assert owner_copy is not None
    assert owner_copy["record"]["name"] == "Bia Caixa"
    assert report.converged


async def push_with_base(
    system: System, entity: str, record: dict[str, Any], base_revision: int
) -> None:
    response = await system.client.post(
        f"{GATEWAY}/v1/changes",
        json={"records": [{"entity": entity, "record": record, "base_revision": base_revision}]},
    )
    assert response.json()["accepted"] == 1, response.text


async def test_erp_push_with_base_keeps_store_edit(system: System) -> None:
    created = await system.client.post(
        f"{store_url('loja-1')}/v1/records/customer",
        json={"fields": {"document": VALID_CPF, "name": "Maria", "email": "m@example.com.br"}},
    )
    key = created.json()["record_key"]
    await eventually(
        lambda: json_or_none(system.client, f"{ERP}/erp/records/customer/{key}"),
        until=lambda body: body is not None,
        what="customer in the ERP",
    )

    store_edit = await system.client.put(
        f"{store_url('loja-2')}/v1/records/customer/{key}",
        json={"fields": {"phone": "11987654321"}},
    )
    await system.converged(customer=1)
    erp_view = {
        "id": key,
        "document": VALID_CPF,
        "name": "Maria Souza",
        "email": "m@example.com.br",
    }
    await push_with_base(system, "customer", erp_view, base_revision=1)
    merged = await eventually(
        lambda: system.record("loja-3", "customer", key),
        until=lambda view: view is not None and view["record"]["name"] == "Maria Souza",
        what="ERP edit in loja-3",
    )
    report = await system.converged(customer=1)

    assert store_edit.status_code == 202
    assert merged["record"]["email"] == "m@example.com.br"
    assert merged["record"]["phone"] == "11987654321"
    assert report.converged
