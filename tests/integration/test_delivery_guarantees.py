"""Ordering with partitions, dead letters, and a store cut off from the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from lojasync.dead_letters import list_dead_letters, republish_dead_letters
from lojasync.envelope import RECORD_CHANGED, Envelope, changed_key
from sync_orchestrator.app import create_app
from sync_orchestrator.settings import OrchestratorSettings
from tests.conftest import DatabaseFactory
from tests.integration.system import STORES, System, running_system, store_url
from tests.support import LinkProxy, Probe, eventually

pytestmark = pytest.mark.integration


def product(code: str, version: int) -> dict[str, Any]:
    return {
        "code": code,
        "description": f"PRODUTO {code} V{version}",
        "gtins": [],
        "ncm": "22030000",
        "unit": "UN",
    }


def changed(code: str, version: int) -> Envelope:
    return Envelope(
        source="tests",
        type=RECORD_CHANGED,
        entity="product",
        recordkey=code,
        origin="erp",
        data={"action": "upsert", "fields": product(code, version)},
    )


async def test_standby_orchestrator_takes_over_in_order(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory
) -> None:
    database_url = await fresh_database("orchestrator")
    codes = [f"P{number:03d}" for number in range(60)]
    versions = 8
    settings = OrchestratorSettings(
        broker_url=broker_url,
        namespace=namespace,
        database_url=database_url,
        partitions=4,
        batch_max=50,
    )
    first, second = create_app(settings), create_app(settings)

    async def revisions(client: httpx.AsyncClient) -> list[int]:
        found = []
        for code in codes:
            body = (await client.get(f"/v1/records/product/{code}")).json()
            found.append(body.get("revision", 0))
        return found

    def processed(app: Any) -> int:
        return sum(consumer.processed for consumer in app.state.runtime.consumers)

    async with AsyncExitStack() as stack:
        first_running = AsyncExitStack()
        await first_running.enter_async_context(first.router.lifespan_context(first))
        stack.push_async_callback(first_running.aclose)
        await stack.enter_async_context(second.router.lifespan_context(second))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://o")
        )
        probe = await stack.enter_async_context(Probe(broker_url, namespace, []))

        for version in range(1, versions // 2 + 1):
            for code in codes:
                await probe.publish(changed(code, version), changed_key("product", "erp"))
        await eventually(
            lambda: revisions(client),
            until=lambda found: min(found) >= 1,
            what="the first orchestrator deciding",
        )
        decided_by_first = processed(first)
        decided_by_second_before = processed(second)
        await first_running.aclose()
        for version in range(versions // 2 + 1, versions + 1):
            for code in codes:
                await probe.publish(changed(code, version), changed_key("product", "erp"))

        await eventually(
            lambda: revisions(client),
            until=lambda found: found == [versions] * len(codes),
            timeout=60,
            what="every record at its last revision",
        )
        histories = {
            code: (await client.get(f"/v1/records/product/{code}/events")).json()["items"]
            for code in codes
        }
        decided_by_second = processed(second)

    assert decided_by_first > 0
    assert decided_by_second_before == 0
    assert decided_by_second > 0
    for code, history in histories.items():
        assert [item["revision"] for item in history] == list(range(1, versions + 1)), code
        assert [item["record"]["description"] for item in history] == [
            f"PRODUTO {code} V{version}" for version in range(1, versions + 1)
        ], code


@pytest.fixture
async def system(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory, tmp_path: Path
) -> AsyncIterator[System]:
    async with running_system(broker_url, namespace, fresh_database, tmp_path) as running:
        yield running


async def test_dead_letter_republished_after_fix(system: System) -> None:
    await system.push([("unit", {"code": "UN", "description": "Unidade"})])
    await system.converged(unit=1)
    price_first = Envelope(
        source="tests",
        type=RECORD_CHANGED,
        entity="price",
        recordkey="BASE:P1",
        origin="erp",
        data={"action": "upsert", "fields": {"table": "BASE", "product": "P1", "price": "1.00"}},
    )
    poison = Envelope(
        source="tests",
        type=RECORD_CHANGED,
        entity="product",
        recordkey="P9",
        origin="erp",
        data={"action": "rename", "fields": {}},
    )

    async with Probe(system.broker_url, system.namespace, []) as probe:
        await probe.publish(poison, "changed.product.erp")
        await probe.publish(price_first, "changed.price.erp")
        await system.push([("product", product("P2", 1))])
        await system.converged(product=1)
        letters = await eventually(
            lambda: list_dead_letters(system.broker_url, system.namespace),
            until=lambda found: len(found) == 1,
            what="one dead letter",
        )
        listed_again = await list_dead_letters(system.broker_url, system.namespace)

    assert letters[0].message_id == poison.id
    assert "data.action 'rename'" in letters[0].reason
    assert letters[0].queue.startswith(f"{system.namespace}.orchestrator.")
    assert [letter.message_id for letter in listed_again] == [poison.id]

    result = await republish_dead_letters(system.broker_url, system.namespace, {poison.id, "nope"})

    assert result.republished == [poison.id]
    assert result.not_found == ["nope"]
    back = await eventually(
        lambda: list_dead_letters(system.broker_url, system.namespace),
        until=lambda found: len(found) == 1,
        what="the poison message dead-lettered again",
    )
    assert back[0].message_id == poison.id


async def test_store_offline_serves_and_catches_up(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory, tmp_path: Path
) -> None:
    parsed = httpx.URL(broker_url.replace("amqp://", "http://", 1))
    broker_port = parsed.port or 5672
    async with LinkProxy(parsed.host, broker_port) as proxy:
        proxied = broker_url.replace(f"{parsed.host}:{broker_port}", f"127.0.0.1:{proxy.port}")
        async with running_system(
            broker_url, namespace, fresh_database, tmp_path, store_broker_urls={"loja-1": proxied}
        ) as system:
            await system.push([("product", product("P1", 1))])
            await system.converged(product=1)

            proxy.cut()
            await eventually(
                lambda: system.client.get(f"{store_url('loja-1')}/ready"),
                until=lambda response: response.json().get("broker") is False,
                what="loja-1 sees the broker link down",
            )
            await system.push([("product", product("P1", 2))])
            created = await system.client.post(
                f"{store_url('loja-1')}/v1/records/customer",
                json={"fields": {"document": "52998224725", "name": "Maria Offline"}},
            )
            key = created.json()["record_key"]
            read = await system.record("loja-1", "product", "P1")
            await asyncio.sleep(1.0)
            while_offline = await system.record("loja-1", "product", "P1")
            elsewhere = await system.record("loja-2", "product", "P1")

            proxy.restore()
            confirmed = await eventually(
                lambda: system.record("loja-1", "customer", key),
                until=lambda view: view is not None and view["status"] == "confirmed",
                timeout=60,
                what="offline customer confirmed after the link is back",
            )
            report = await system.converged(product=1, customer=1)

    assert created.status_code == 202
    assert read is not None and read["revision"] == 1
    assert while_offline is not None and while_offline["revision"] == 1
    assert elsewhere is not None and elsewhere["revision"] == 2
    assert confirmed["revision"] == 1
    assert all(store.matches for store in report.stores)
    assert [store.store_id for store in report.stores] == list(STORES)
