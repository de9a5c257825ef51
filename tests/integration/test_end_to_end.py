"""Every service together, in one process, against the real RabbitMQ and PostgreSQL.

The orchestrator, the ERP gateway with the ERP stand-in behind it, and three store
registries run as ASGI apps in the test's event loop; HTTP between them goes through
httpx's ASGI transport, and every event goes through the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from erp_gateway.app import create_app as create_gateway_app
from erp_gateway.settings import GatewaySettings
from lojasync.convergence import ConvergenceReport, compare_stores
from lojasync.envelope import RECORD_CHANGED, Envelope
from lojasync.policy import BUNDLED_POLICY
from lojasync_demo.erp_standin import ErpStandin, ErpStandinSettings, push_catalog
from lojasync_demo.erp_standin import create_app as create_standin_app
from store_registry.app import create_app as create_store_app
from store_registry.settings import StoreSettings
from sync_orchestrator.app import create_app as create_orchestrator_app
from sync_orchestrator.settings import OrchestratorSettings
from tests.support import Probe, eventually

pytestmark = pytest.mark.integration

STORES = ("loja-1", "loja-2", "loja-3")
ORCHESTRATOR = "http://orchestrator.test"
GATEWAY = "http://gateway.test"
ERP = "http://erp.test"
VALID_CPF = "52998224725"


def store_url(store_id: str) -> str:
    return f"http://{store_id}.test"


@dataclass
class System:
    client: httpx.AsyncClient
    """Reaches every app by its base URL."""
    namespace: str
    broker_url: str

    async def push(self, records: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        totals = await push_catalog(GATEWAY, records, client=self.client)
        return dict(totals)

    async def record(self, store_id: str, entity: str, key: str) -> dict[str, Any] | None:
        response = await self.client.get(f"{store_url(store_id)}/v1/records/{entity}/{key}")
        return response.json() if response.status_code == 200 else None

    async def report(self) -> ConvergenceReport:
        return await compare_stores(ORCHESTRATOR, client=self.client)

    async def converged(self, **expected_counts: int) -> ConvergenceReport:
        """Wait until every store matches the orchestrator, which holds `expected_counts`."""

        def done(report: ConvergenceReport) -> bool:
            counts = {entity: summary["count"] for entity, summary in report.orchestrator.items()}
            return (
                len(report.stores) == len(STORES)
                and all(counts[entity] == count for entity, count in expected_counts.items())
                and report.converged
            )

        return await eventually(self.report, until=done, timeout=60, what="convergence")


def _policy_with_shared_products(directory: Path) -> Path:
    """A policy file where stores may edit products: a store running an outdated policy."""
    text = BUNDLED_POLICY.read_text()
    start = text.index("  product:\n")
    end = text.index("  tax_rule:\n")
    shared = (
        "  product:\n    owner: shared\n    erp: [create, edit, delete]\n"
        "    stores: [create, edit]\n    distribution: all\n    conflict: field-merge\n"
        "    store_local: [shelf_location]\n"
    )
    path = directory / "outdated-policy.yaml"
    path.write_text(text[:start] + shared + text[end:])
    return path


@pytest.fixture
async def system(
    broker_url: str, namespace: str, fresh_database: Any, tmp_path: Path
) -> AsyncIterator[System]:
    async with AsyncExitStack() as stack:
        common: dict[str, Any] = {
            "broker_url": broker_url,
            "namespace": namespace,
            "outbox_poll_seconds": 0.05,
        }
        mounts: dict[str, httpx.AsyncBaseTransport] = {}

        async def serve(app: FastAPI, url: str) -> None:
            await stack.enter_async_context(app.router.lifespan_context(app))
            mounts[f"{url}/"] = httpx.ASGITransport(app=app)

        orchestrator = create_orchestrator_app(
            OrchestratorSettings(**common, database_url=await fresh_database("orchestrator"))
        )
        await serve(orchestrator, ORCHESTRATOR)

        standin = ErpStandin(ErpStandinSettings(database_url=await fresh_database("erp")))
        standin_app = create_standin_app(standin=standin)
        await serve(standin_app, ERP)

        gateway = create_gateway_app(
            GatewaySettings(
                **common,
                database_url=await fresh_database("gateway"),
                erp_callback_url=f"{ERP}/erp/changes",
                delivery_poll_seconds=0.1,
            ),
            transport=httpx.ASGITransport(app=standin_app),
        )
        await serve(gateway, GATEWAY)

        outdated_policy = _policy_with_shared_products(tmp_path)
        for store_id in STORES:
            settings = StoreSettings(
                **common,
                store_id=store_id,
                database_url=await fresh_database(store_id),
                api_url=store_url(store_id),
                policy_file=outdated_policy if store_id == "loja-3" else None,
            )
            await serve(create_store_app(settings), store_url(store_id))

        client = await stack.enter_async_context(httpx.AsyncClient(mounts=mounts, timeout=30))
        system = System(client, namespace, broker_url)
        await eventually(
            lambda: system.report(),
            until=lambda report: len(report.stores) == len(STORES),
            what="three stores announced",
        )
        yield system


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
        lambda: _json_or_none(system.client, f"{ERP}/erp/records/customer/{key}"),
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
        lambda: _json_or_none(system.client, f"{ERP}/erp/records/operator/{key}"),
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
        lambda: _json_or_none(system.client, f"{ERP}/erp/records/customer/{key}"),
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


async def _json_or_none(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url)
    return response.json() if response.status_code == 200 else None
