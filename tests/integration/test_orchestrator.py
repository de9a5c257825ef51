"""The orchestrator against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from lojasync.envelope import (
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    STORE_ANNOUNCED,
    Envelope,
    changed_key,
    store_origin,
)
from lojasync.messaging import REASON_HEADER, Broker
from lojasync.persistence import OutgoingEvent
from sync_orchestrator.app import create_app
from sync_orchestrator.settings import OrchestratorSettings
from tests.support import Probe, eventually

pytestmark = pytest.mark.integration

CUSTOMER_ID = "2f1c9a4e-4b7e-4f43-9a51-0d3e8f6b2c11"


def product(code: str = "P1", **overrides: Any) -> dict[str, Any]:
    return {
        "code": code,
        "description": "CERVEJA PILSEN 350ML",
        "gtins": ["7891000315507"],
        "ncm": "22030000",
        "unit": "UN",
        **overrides,
    }


def changed(entity: str, key: str, origin: str, fields: dict[str, Any], **extra: Any) -> Envelope:
    return Envelope(
        source="tests",
        type=RECORD_CHANGED,
        subject=f"{entity}/{key}",
        entity=entity,
        recordkey=key,
        origin=origin,
        data={"action": extra.pop("action", "upsert"), "fields": fields},
        **extra,
    )


@pytest.fixture
async def orchestrator(
    broker_url: str, namespace: str, fresh_database: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = OrchestratorSettings(
        broker_url=broker_url,
        namespace=namespace,
        database_url=await fresh_database("orchestrator"),
        outbox_poll_seconds=0.1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client:
            yield client


@pytest.fixture
async def probe(broker_url: str, namespace: str) -> AsyncIterator[Probe]:
    async with Probe(broker_url, namespace, ["resolved.#", "rejected.#"]) as probe:
        yield probe


async def publish(probe: Probe, event: Envelope) -> None:
    assert event.entity is not None and event.origin is not None
    await probe.publish(event, changed_key(event.entity, event.origin))


async def test_erp_change_resolved_to_all_stores(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    event = changed("product", "P1", "erp", product())

    await publish(probe, event)
    [(routing_key, resolved)] = await probe.wait_for(1, RECORD_RESOLVED)

    assert routing_key == "resolved.product.all"
    assert resolved.revision == 1
    assert resolved.causationid == event.id
    assert resolved.data["record"]["description"] == "CERVEJA PILSEN 350ML"
    assert resolved.data["deleted"] is False


async def test_revisions_increase_per_record(orchestrator: httpx.AsyncClient, probe: Probe) -> None:
    await publish(probe, changed("product", "P1", "erp", product()))
    await publish(probe, changed("product", "P1", "erp", product(description="CERVEJA LATA 350ML")))

    found = await probe.wait_for(2, RECORD_RESOLVED)
    state = (await orchestrator.get("/v1/records/product/P1")).json()

    assert [event.revision for _, event in found] == [1, 2]
    assert state["revision"] == 2
    assert state["record"]["description"] == "CERVEJA LATA 350ML"


async def test_duplicate_delivery_decided_once(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    event = changed("product", "P1", "erp", product())
    marker = changed("product", "P2", "erp", product("P2", gtins=["78935761"]))

    await publish(probe, event)
    await publish(probe, event)
    await publish(probe, marker)
    await probe.wait_for(2, RECORD_RESOLVED)
    events = (await orchestrator.get("/v1/records/product/P1/events")).json()["items"]

    assert [key for key, e in probe.of_type(RECORD_RESOLVED)] == ["resolved.product.all"] * 2
    assert len(events) == 1
    assert events[0]["revision"] == 1


async def test_duplicate_in_one_pack_decided_once(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    # A relay that published a pack and crashed before deleting its rows publishes the
    # same events again, so one consumer batch can hold the same event twice.
    event = changed("product", "P1", "erp", product())
    later = changed("product", "P1", "erp", product(description="CERVEJA LATA 350ML"))

    await probe.publish_pack([event, later, event, later], changed_key("product", "erp"))
    await probe.wait_for(2, RECORD_RESOLVED)
    events = (await orchestrator.get("/v1/records/product/P1/events")).json()["items"]

    assert [item["revision"] for item in events] == [1, 2]
    assert [resolved.revision for _, resolved in probe.of_type(RECORD_RESOLVED)] == [1, 2]


async def test_unchanged_erp_push_publishes_nothing(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    await publish(probe, changed("product", "P1", "erp", product()))
    await publish(probe, changed("product", "P1", "erp", product()))
    # A real change after the repeat, in the same partition: it is decided after the repeat.
    await publish(probe, changed("product", "P1", "erp", product(description="NOVO")))

    found = await probe.wait_for(2, RECORD_RESOLVED)
    state = (await orchestrator.get("/v1/records/product/P1")).json()

    assert [event.revision for _, event in found] == [1, 2]
    assert found[1][1].data["record"]["description"] == "NOVO"
    assert state["revision"] == 2


async def test_store_edit_of_product_rejected_to_store(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    await publish(probe, changed("product", "P1", "erp", product()))
    await probe.wait_for(1, RECORD_RESOLVED)
    edit = changed(
        "product", "P1", store_origin("loja-2"), {"description": "NOME DA LOJA"}, baserevision=1
    )

    await publish(probe, edit)
    [(routing_key, rejected)] = await probe.wait_for(1, RECORD_REJECTED)
    state = (await orchestrator.get("/v1/records/product/P1")).json()

    assert routing_key == "rejected.product.store.loja-2"
    assert rejected.data["code"] == "erp_owned"
    assert rejected.causationid == edit.id
    assert rejected.revision == 1
    assert rejected.data["current"]["description"] == "CERVEJA PILSEN 350ML"
    assert state["revision"] == 1


async def test_store_customer_goes_to_all_stores_and_erp(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    fields = {"id": CUSTOMER_ID, "document": "52998224725", "name": "Maria da Silva"}

    await publish(
        probe, changed("customer", CUSTOMER_ID, store_origin("loja-1"), fields, baserevision=0)
    )
    found = await probe.wait_for(2, RECORD_RESOLVED)

    assert sorted(key for key, _ in found) == ["resolved.customer.all", "resolved.customer.erp"]
    assert {event.revision for _, event in found} == {1}
    assert found[0][1].id != found[1][1].id


async def test_price_goes_only_to_stores_of_its_table(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    await publish(
        probe,
        changed(
            "price_table",
            "LOJA-3",
            "erp",
            {"code": "LOJA-3", "description": "Loja 3", "stores": ["loja-3"]},
        ),
    )
    await publish(
        probe,
        changed("price", "LOJA-3:P1", "erp", {"table": "LOJA-3", "product": "P1", "price": "9.90"}),
    )

    found = await probe.wait_for(2, RECORD_RESOLVED)

    assert [key for key, _ in found] == [
        "resolved.price_table.store.loja-3",
        "resolved.price.store.loja-3",
    ]


async def test_price_of_missing_table_rejected_to_erp(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    await publish(
        probe,
        changed("price", "NOPE:P1", "erp", {"table": "NOPE", "product": "P1", "price": "9.90"}),
    )

    [(routing_key, rejected)] = await probe.wait_for(1, RECORD_REJECTED)

    assert routing_key == "rejected.price.erp"
    assert rejected.data["code"] == "scope_parent_missing"


async def test_narrowed_scope_removes_record_from_stores(
    orchestrator: httpx.AsyncClient, probe: Probe
) -> None:
    table = {"code": "PROMO", "description": "Promo", "stores": ["loja-1", "loja-2"]}
    await publish(probe, changed("price_table", "PROMO", "erp", table))
    await publish(probe, changed("price_table", "PROMO", "erp", {**table, "stores": ["loja-2"]}))

    found = await probe.wait_for(4, RECORD_RESOLVED)
    last = {key: event for key, event in found if event.revision == 2}

    assert sorted(last) == [
        "resolved.price_table.store.loja-1",
        "resolved.price_table.store.loja-2",
    ]
    assert last["resolved.price_table.store.loja-1"].data["out_of_scope"] is True
    assert last["resolved.price_table.store.loja-2"].data["out_of_scope"] is False


async def test_poison_message_dead_lettered_and_rest_flows(
    orchestrator: httpx.AsyncClient, probe: Probe, broker_url: str, namespace: str
) -> None:
    collected: list[AbstractIncomingMessage] = []

    async def dead_letters() -> list[AbstractIncomingMessage]:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(f"{namespace}.dead-letters")
            while (message := await queue.get(fail=False)) is not None:
                collected.append(message)
                await message.ack()
        return collected

    await probe.publish_raw(b"not json at all", "changed.product.erp")
    await publish(probe, changed("bogus", "X", "erp", {"a": 1}))
    await publish(probe, changed("product", "P1", "erp", product()))
    [(_, resolved)] = await probe.wait_for(1, RECORD_RESOLVED)
    await eventually(dead_letters, until=lambda found: len(found) >= 2, what="2 dead letters")
    reasons = [str(message.headers[REASON_HEADER]) for message in collected]

    assert resolved.recordkey == "P1"
    assert len(collected) == 2
    assert any("not JSON" in reason for reason in reasons)
    assert any("unknown entity 'bogus'" in reason for reason in reasons)


async def test_status_counts_per_store(orchestrator: httpx.AsyncClient, probe: Probe) -> None:
    announce = Envelope(
        source="tests",
        type=STORE_ANNOUNCED,
        data={"store_id": "loja-1", "api_url": "http://127.0.0.1:1"},
    )
    await probe.publish(announce, "announced.store.loja-1")
    await publish(probe, changed("product", "P1", "erp", product()))
    await publish(
        probe,
        changed(
            "price_table",
            "LOJA-3",
            "erp",
            {"code": "LOJA-3", "description": "Loja 3", "stores": ["loja-3"]},
        ),
    )
    await probe.wait_for(2, RECORD_RESOLVED)

    status = await eventually(
        lambda: _json(orchestrator, "/v1/status"),
        until=lambda body: "loja-1" in body["stores"],
        what="loja-1 in status",
    )

    assert status["entities"]["product"]["count"] == 1
    assert status["entities"]["price_table"]["count"] == 1
    assert status["stores"]["loja-1"]["entities"]["product"]["count"] == 1
    assert status["stores"]["loja-1"]["entities"]["price_table"]["count"] == 0


async def _json(client: httpx.AsyncClient, path: str) -> Any:
    return (await client.get(path)).json()


async def test_change_published_before_orchestrator_starts_kept(
    broker_url: str, namespace: str, fresh_database: Any
) -> None:
    publisher = Broker(broker_url, namespace)
    await publisher.connect()
    event = changed("product", "P1", "erp", product())
    await publisher.publish(
        [OutgoingEvent(event.id, changed_key("product", "erp"), event.type, event.to_bytes())]
    )
    await publisher.close()
    settings = OrchestratorSettings(
        broker_url=broker_url,
        namespace=namespace,
        database_url=await fresh_database("orchestrator"),
    )
    app = create_app(settings)

    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://orchestrator"
        )
        state = await eventually(
            lambda: _json(client, "/v1/records/product/P1"),
            until=lambda body: body.get("revision") == 1,
            what="P1 decided",
        )

    assert state["record"]["code"] == "P1"
