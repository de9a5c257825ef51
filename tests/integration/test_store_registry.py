"""The store registry against the real PostgreSQL and RabbitMQ.

The app runs in-process with its lifespan (runtime, consumer, outbox relay). The tests
play the orchestrator: they publish `record.resolved` and `record.rejected` straight
into the namespace's exchange and read the store's outgoing events from a queue bound
to `changed.#` and `announced.#`.

A test that expects "nothing published" makes a later edit that does publish, and checks
that this later event is the next message: the outbox relay publishes in commit order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from sqlalchemy import select, text

from lojasync.catalog import validate_record
from lojasync.digest import EMPTY_DIGEST, content_hash, entity_digest
from lojasync.envelope import (
    RECORD_CHANGED,
    RECORD_REJECTED,
    RECORD_RESOLVED,
    STORE_ANNOUNCED,
    Envelope,
    rejected_key,
    resolved_key,
    store_target,
)
from lojasync.persistence import INBOX
from lojasync.policy import BUNDLED_POLICY
from lojasync.reference import load_reference_tables
from store_registry.app import create_app
from store_registry.handlers import StoreRegistry
from store_registry.settings import StoreSettings
from tests.conftest import DatabaseFactory
from tests.support import event_bodies, eventually

pytestmark = pytest.mark.integration

STORE_ID = "loja-7"
ORCHESTRATOR_SOURCE = "lojasync/sync-orchestrator"
VALID_CPF = "52998224725"
OTHER_VALID_CPF = "11144477735"
GTIN = "7891000315507"
TABLES = load_reference_tables()


def customer(key: str, name: str = "Ana Souza", document: str = VALID_CPF) -> dict[str, Any]:
    return validate_record("customer", {"id": key, "document": document, "name": name}, TABLES)


def product(code: str, description: str = "Cerveja Pilsen 350 ml") -> dict[str, Any]:
    fields = {"code": code, "description": description, "gtins": [GTIN], "ncm": "22030000"}
    return validate_record("product", {**fields, "unit": "UN"}, TABLES)


@dataclass
class StoreHarness:
    """The running store, its HTTP client, and a test publisher playing the orchestrator."""

    client: httpx.AsyncClient
    registry: StoreRegistry
    channel: AbstractChannel
    exchange: AbstractExchange
    outgoing: AbstractQueue
    # Events of a pack already taken from `outgoing` and not yet returned by next_event.
    unread: list[tuple[str, Envelope]] = field(default_factory=list)

    async def publish(self, event: Envelope, routing_key: str) -> None:
        message = aio_pika.Message(
            event.to_bytes(), message_id=event.id, type=event.type, content_type="application/json"
        )
        await self.exchange.publish(message, routing_key=routing_key)

    async def resolve(
        self,
        entity: str,
        key: str,
        revision: int,
        record: dict[str, Any] | None,
        *,
        causation_id: str | None = None,
        deleted: bool = False,
        out_of_scope: bool = False,
        event_id: str | None = None,
    ) -> Envelope:
        event = Envelope(
            id=event_id or str(uuid.uuid4()),
            source=ORCHESTRATOR_SOURCE,
            type=RECORD_RESOLVED,
            subject=f"{entity}/{key}",
            entity=entity,
            recordkey=key,
            revision=revision,
            origin="erp",
            causationid=causation_id or str(uuid.uuid4()),
            data={
                "deleted": deleted,
                "record": record,
                "stores": None,
                "out_of_scope": out_of_scope,
            },
        )
        target = store_target(STORE_ID) if out_of_scope else "all"
        await self.publish(event, resolved_key(entity, target))
        return event

    async def reject(
        self,
        entity: str,
        key: str,
        *,
        causation_id: str,
        revision: int | None,
        current: dict[str, Any] | None,
        code: str = "stale_revision",
    ) -> Envelope:
        event = Envelope(
            source=ORCHESTRATOR_SOURCE,
            type=RECORD_REJECTED,
            subject=f"{entity}/{key}",
            entity=entity,
            recordkey=key,
            revision=revision,
            origin=f"store:{STORE_ID}",
            causationid=causation_id,
            data={
                "code": code,
                "message": "rejected by the test",
                "message_pt_br": "rejeitado pelo teste",
                "field": "name",
                "errors": [],
                "current": current,
                "deleted": False,
            },
        )
        await self.publish(event, rejected_key(entity, store_target(STORE_ID)))
        return event

    async def next_event(self, wait_seconds: float = 10.0) -> tuple[str, Envelope]:
        """Return the routing key and event of the next outgoing event, unpacking packs."""
        if not self.unread:
            message = await eventually(
                lambda: self.outgoing.get(no_ack=True, fail=False),
                until=lambda found: found is not None,
                timeout=wait_seconds,
                what="an outgoing message",
            )
            assert message is not None
            self.unread.extend(
                (message.routing_key or "", Envelope.from_bytes(body))
                for body in event_bodies(message)
            )
        return self.unread.pop(0)

    async def view(self, entity: str, key: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/records/{entity}/{key}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_for_revision(self, entity: str, key: str, revision: int) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            response = await self.client.get(f"/v1/records/{entity}/{key}")
            return response.json() if response.status_code == 200 else None

        view = await eventually(
            probe,
            until=lambda found: found is not None and found["revision"] == revision,
            what=f"{entity} {key} at revision {revision}",
        )
        assert view is not None
        return view

    async def drain_decisions(self) -> None:
        """Wait until the store applied everything published before this call."""
        marker = str(uuid.uuid4())
        await self.resolve("unit", f"M{marker[:5].upper()}", 1, _unit(marker))
        await self.wait_for_revision("unit", f"M{marker[:5].upper()}", 1)

    async def create_customer(self, name: str = "Ana Souza") -> tuple[str, Envelope]:
        """Create a customer here and return its key and the changed event it published."""
        key = str(uuid.uuid4())
        response = await self.client.put(
            f"/v1/records/customer/{key}",
            json={"fields": {"document": VALID_CPF, "name": name}, "base_revision": 0},
        )
        assert response.status_code == 202, response.text
        routing_key, event = await self.next_event()
        assert event.recordkey == key, f"expected the changed event of {key}, got {routing_key}"
        return key, event

    async def accepted_customer(self, name: str = "Ana Souza") -> str:
        """Create a customer here, confirm it at revision 1, and return its key."""
        key, changed = await self.create_customer(name)
        await self.resolve("customer", key, 1, customer(key, name), causation_id=changed.id)
        await self.wait_for_revision("customer", key, 1)
        return key


def _unit(marker: str) -> dict[str, Any]:
    code = f"M{marker[:5].upper()}"
    return validate_record("unit", {"code": code, "description": "marker"}, TABLES)


@asynccontextmanager
async def running_store(
    broker_url: str,
    namespace: str,
    database_url: str,
    policy_file: Path | None = None,
) -> AsyncIterator[StoreHarness]:
    """Start the store app with a test publisher, after its start-up announcement."""
    settings = StoreSettings(
        store_id=STORE_ID,
        namespace=namespace,
        broker_url=broker_url,
        database_url=database_url,
        api_url="http://127.0.0.1:18107",
        outbox_poll_seconds=0.1,
        policy_file=policy_file,
    )
    connection: AbstractRobustConnection = await aio_pika.connect_robust(broker_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            namespace, aio_pika.ExchangeType.TOPIC, durable=True
        )
        outgoing = await channel.declare_queue(f"{namespace}.test-outgoing", exclusive=True)
        await outgoing.bind(exchange, routing_key="changed.#")
        await outgoing.bind(exchange, routing_key="announced.#")

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://store") as client:
                harness = StoreHarness(client, app.state.registry, channel, exchange, outgoing)
                routing_key, announced = await harness.next_event()
                assert announced.type == STORE_ANNOUNCED, routing_key
                yield harness
    finally:
        await connection.close()


@pytest.fixture
async def store(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory
) -> AsyncIterator[StoreHarness]:
    database_url = await fresh_database("store")
    async with running_store(broker_url, namespace, database_url) as harness:
        yield harness


# --- Start-up and health --------------------------------------------------------------------


async def test_announces_store_at_start_up(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory
) -> None:
    database_url = await fresh_database("store")
    settings = StoreSettings(
        store_id=STORE_ID,
        namespace=namespace,
        broker_url=broker_url,
        database_url=database_url,
        api_url="http://127.0.0.1:18107",
    )
    connection = await aio_pika.connect_robust(broker_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(namespace, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{namespace}.test-announced", exclusive=True)
    await queue.bind(exchange, routing_key="announced.#")
    app = create_app(settings)

    async with app.router.lifespan_context(app):
        message = await eventually(
            lambda: queue.get(no_ack=True, fail=False), until=lambda m: m is not None
        )
    await connection.close()

    assert message is not None
    event = Envelope.from_bytes(message.body)
    assert message.routing_key == f"announced.store.{STORE_ID}"
    assert event.type == STORE_ANNOUNCED
    assert event.data == {"store_id": STORE_ID, "api_url": "http://127.0.0.1:18107"}


async def test_health_and_ready(store: StoreHarness) -> None:
    health = await store.client.get("/health")
    ready = await store.client.get("/ready")

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": True, "broker": True}


# --- record.resolved ------------------------------------------------------------------------


async def test_resolved_applies(store: StoreHarness) -> None:
    record = product("P-1")

    await store.resolve("product", "P-1", 3, record)
    view = await store.wait_for_revision("product", "P-1", 3)

    assert view["status"] == "confirmed"
    assert view["confirmed"] == record
    assert view["record"] == record
    assert view["pending"] is None


async def test_older_or_duplicate_revision_changes_nothing(store: StoreHarness) -> None:
    await store.resolve("product", "P-1", 2, product("P-1", "Second"))
    await store.wait_for_revision("product", "P-1", 2)

    await store.resolve("product", "P-1", 1, product("P-1", "First, delivered late"))
    await store.resolve("product", "P-1", 2, product("P-1", "Second, other data"))
    await store.drain_decisions()

    view = await store.view("product", "P-1")
    assert view["revision"] == 2
    assert view["record"]["description"] == "Second"


async def test_duplicate_event_id_skipped_by_inbox(store: StoreHarness) -> None:
    first = await store.resolve("product", "P-1", 1, product("P-1", "Original"))
    await store.wait_for_revision("product", "P-1", 1)

    await store.resolve("product", "P-1", 5, product("P-1", "Replayed id"), event_id=first.id)
    await store.drain_decisions()

    view = await store.view("product", "P-1")
    assert view["revision"] == 1
    assert view["record"]["description"] == "Original"
    async with store.registry.runtime.engine.connect() as connection:
        seen = (
            await connection.execute(select(INBOX.c.event_id).where(INBOX.c.event_id == first.id))
        ).all()
    assert len(seen) == 1


async def test_malformed_event_dead_lettered(store: StoreHarness, namespace: str) -> None:
    malformed = Envelope(
        source=ORCHESTRATOR_SOURCE,
        type=RECORD_RESOLVED,
        entity="product",
        recordkey="P-1",
        data={"deleted": False, "record": product("P-1")},
    )
    await store.publish(malformed, resolved_key("product", "all"))
    await store.resolve("product", "P-2", 1, product("P-2"))

    await store.wait_for_revision("product", "P-2", 1)
    dead_letters = await store.channel.get_queue(f"{namespace}.dead-letters")
    message = await eventually(
        lambda: dead_letters.get(no_ack=True, fail=False), until=lambda m: m is not None
    )

    assert message is not None
    assert message.message_id == malformed.id
    assert "revision" in str((message.headers or {}).get("x-lojasync-reason"))
    missing = await store.client.get("/v1/records/product/P-1")
    assert missing.status_code == 404


async def test_batch_with_several_revisions_of_one_record(store: StoreHarness) -> None:
    for revision in range(1, 31):
        await store.resolve("product", "P-1", revision, product("P-1", f"Revision {revision}"))

    view = await store.wait_for_revision("product", "P-1", 30)

    assert view["record"]["description"] == "Revision 30"


async def test_out_of_scope_resolved_removes_record(store: StoreHarness) -> None:
    await store.resolve("product", "P-1", 1, product("P-1"))
    await store.wait_for_revision("product", "P-1", 1)

    await store.resolve("product", "P-1", 2, product("P-1"), out_of_scope=True)
    view = await store.wait_for_revision("product", "P-1", 2)

    assert view["status"] == "deleted"
    assert view["confirmed"] is None
    listed = (await store.client.get("/v1/records/product")).json()
    assert listed["items"] == []
    with_deleted = (await store.client.get("/v1/records/product?include_deleted=true")).json()
    assert [item["record_key"] for item in with_deleted["items"]] == ["P-1"]


# --- Local edits ----------------------------------------------------------------------------


async def test_customer_create_is_pending_and_published(store: StoreHarness) -> None:
    key = str(uuid.uuid4())

    response = await store.client.put(
        f"/v1/records/customer/{key}",
        json={"fields": {"document": "529.982.247-25", "name": "Ana Souza"}},
    )
    routing_key, event = await store.next_event()

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert routing_key == f"changed.customer.store.{STORE_ID}"
    assert event.type == RECORD_CHANGED
    assert event.origin == f"store:{STORE_ID}"
    assert event.source == f"lojasync/store-registry/{STORE_ID}"
    assert event.recordkey == key
    assert event.baserevision == 0
    assert event.data["action"] == "upsert"
    assert event.data["fields"] == customer(key)


async def test_create_publishes_no_store_local_fields(
    broker_url: str, namespace: str, fresh_database: DatabaseFactory, tmp_path: Path
) -> None:
    # No entity that stores create has store-local fields in the bundled policy, so this
    # test runs the store with a policy that makes the customer's email store-local.
    rules = yaml.safe_load(BUNDLED_POLICY.read_text(encoding="utf-8"))
    rules["entities"]["customer"]["store_local"] = ["email"]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    database_url = await fresh_database("store")
    key = str(uuid.uuid4())
    fields = {"document": VALID_CPF, "name": "Ana Souza", "email": "ana@example.com"}

    async with running_store(broker_url, namespace, database_url, policy_file) as store:
        response = await store.client.put(f"/v1/records/customer/{key}", json={"fields": fields})
        _, event = await store.next_event()

    assert response.status_code == 202
    assert response.json()["local"] == {"email": "ana@example.com"}
    assert response.json()["record"]["email"] == "ana@example.com"
    assert "email" not in event.data["fields"]
    assert event.data["fields"]["document"] == VALID_CPF
    assert event.baserevision == 0


async def test_resolved_with_matching_causation_confirms(store: StoreHarness) -> None:
    key, changed = await store.create_customer()

    await store.resolve("customer", key, 1, customer(key), causation_id=changed.id)
    view = await store.wait_for_revision("customer", key, 1)

    assert view["status"] == "confirmed"
    assert view["pending"] is None
    assert view["confirmed"] == customer(key)


async def test_resolved_of_other_change_keeps_pending(store: StoreHarness) -> None:
    key = await store.accepted_customer()
    edit = await store.client.put(f"/v1/records/customer/{key}", json={"fields": {"name": "Bia"}})
    assert edit.status_code == 202

    await store.resolve("customer", key, 2, customer(key, name="Ana, from the ERP"))
    view = await store.wait_for_revision("customer", key, 2)

    assert view["status"] == "pending"
    assert view["pending"] == {"name": "Bia"}
    assert view["confirmed"]["name"] == "Ana, from the ERP"
    assert view["record"]["name"] == "Bia"


async def test_rejected_restores_authoritative_state(store: StoreHarness) -> None:
    key = await store.accepted_customer()
    await store.client.put(f"/v1/records/customer/{key}", json={"fields": {"name": "Bia"}})
    _, edit = await store.next_event()
    authoritative = customer(key, name="Ana Maria")

    await store.reject("customer", key, causation_id=edit.id, revision=2, current=authoritative)
    view = await store.wait_for_revision("customer", key, 2)

    assert view["status"] == "confirmed"
    assert view["record"] == authoritative
    assert view["pending"] is None
    assert view["last_rejection"]["code"] == "stale_revision"
    assert view["last_rejection"]["message_pt_br"] == "rejeitado pelo teste"


async def test_rejected_create_removes_record(store: StoreHarness) -> None:
    key, changed = await store.create_customer()

    await store.reject("customer", key, causation_id=changed.id, revision=None, current=None)

    async def status() -> str:
        return str((await store.view("customer", key))["status"])

    await eventually(status, until=lambda found: found == "deleted")
    view = await store.view("customer", key)
    assert view["revision"] == 0
    assert view["last_rejection"]["code"] == "stale_revision"
    listed = (await store.client.get("/v1/records/customer")).json()
    assert listed["items"] == []


async def test_rejected_of_superseded_edit_ignored(store: StoreHarness) -> None:
    key = await store.accepted_customer()
    await store.client.put(f"/v1/records/customer/{key}", json={"fields": {"name": "Bia"}})
    _, older = await store.next_event()
    await store.client.put(f"/v1/records/customer/{key}", json={"fields": {"name": "Carla"}})

    await store.reject("customer", key, causation_id=older.id, revision=1, current=customer(key))
    await store.drain_decisions()

    view = await store.view("customer", key)
    assert view["status"] == "pending"
    assert view["record"]["name"] == "Carla"
    assert view["last_rejection"] is None


async def test_erp_owned_product_edit_forbidden(store: StoreHarness) -> None:
    await store.resolve("product", "P-1", 1, product("P-1"))
    before = await store.wait_for_revision("product", "P-1", 1)

    response = await store.client.put(
        "/v1/records/product/P-1", json={"fields": {"description": "Changed in the store"}}
    )
    _, next_event = await store.create_customer()

    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "erp_owned"
    assert response.json()["detail"]["field"] == "description"
    assert next_event.entity == "customer"
    assert await store.view("product", "P-1") == before


async def test_shelf_location_edit_stays_local(store: StoreHarness) -> None:
    await store.resolve("product", "P-1", 1, product("P-1"))
    await store.wait_for_revision("product", "P-1", 1)

    response = await store.client.put(
        "/v1/records/product/P-1", json={"fields": {"shelf_location": "A-03"}}
    )
    _, next_event = await store.create_customer()
    await store.resolve("product", "P-1", 2, product("P-1", "New description"))
    view = await store.wait_for_revision("product", "P-1", 2)

    assert response.status_code == 200
    assert response.json()["status"] == "confirmed"
    assert next_event.entity == "customer"
    assert view["local"] == {"shelf_location": "A-03"}
    assert view["record"]["shelf_location"] == "A-03"
    assert view["record"]["description"] == "New description"


async def test_invalid_cpf_rejected_and_not_stored(store: StoreHarness) -> None:
    key = str(uuid.uuid4())

    response = await store.client.put(
        f"/v1/records/customer/{key}",
        json={"fields": {"document": "529.982.247-26", "name": "Ana Souza"}},
    )
    lookup = await store.client.get(f"/v1/records/customer/{key}")

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "record_invalid"
    assert detail["field"] == "document"
    assert detail["rule"] == "cpf_check_digit"
    assert [error["rule"] for error in detail["errors"]] == ["cpf_check_digit"]
    assert lookup.status_code == 404


async def test_document_change_of_accepted_customer_conflicts(store: StoreHarness) -> None:
    key = await store.accepted_customer()

    response = await store.client.put(
        f"/v1/records/customer/{key}", json={"fields": {"document": OTHER_VALID_CPF}}
    )

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "immutable_field"
    assert response.json()["detail"]["field"] == "document"


async def test_edit_from_stale_revision_conflicts(store: StoreHarness) -> None:
    key = await store.accepted_customer()

    response = await store.client.put(
        f"/v1/records/customer/{key}", json={"fields": {"name": "Bia"}, "base_revision": 0}
    )

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "stale_revision"


async def test_customer_delete_forbidden(store: StoreHarness) -> None:
    key, _ = await store.create_customer()

    response = await store.client.delete(f"/v1/records/customer/{key}")

    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "action_not_allowed"


async def test_operator_post_and_delete(store: StoreHarness) -> None:
    created = await store.client.post(
        "/v1/records/operator", json={"fields": {"code": "12", "name": "Bia", "role": "cashier"}}
    )
    key = created.json()["record_key"]
    _, create_event = await store.next_event()
    await store.resolve(
        "operator", key, 1, create_event.data["fields"], causation_id=create_event.id
    )
    await store.wait_for_revision("operator", key, 1)

    deleted = await store.client.delete(f"/v1/records/operator/{key}")
    _, delete_event = await store.next_event()

    assert created.status_code == 202
    assert created.headers["location"] == f"/v1/records/operator/{key}"
    assert create_event.data["fields"]["store_id"] == STORE_ID
    assert deleted.status_code == 202
    assert deleted.json()["pending_action"] == "delete"
    assert delete_event.data == {"action": "delete", "fields": {}}
    assert delete_event.baserevision == 1


async def test_uuid_key_lookup_is_case_insensitive(store: StoreHarness) -> None:
    key, _ = await store.create_customer()

    response = await store.client.get(f"/v1/records/customer/{key.upper()}")

    assert response.status_code == 200
    assert response.json()["record_key"] == key


async def test_unknown_entity_lists_entities(store: StoreHarness) -> None:
    response = await store.client.get("/v1/records/produto")

    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "unknown_entity"
    assert "product" in response.json()["detail"]["entities"]


# --- Reads ----------------------------------------------------------------------------------


async def test_list_pages_by_key(store: StoreHarness) -> None:
    for code in ("P-3", "P-1", "P-2"):
        await store.resolve("product", code, 1, product(code))
    await store.drain_decisions()

    first = (await store.client.get("/v1/records/product?limit=2")).json()
    second = (
        await store.client.get(f"/v1/records/product?limit=2&after={first['next_after']}")
    ).json()

    assert [item["record_key"] for item in first["items"]] == ["P-1", "P-2"]
    assert first["next_after"] == "P-2"
    assert [item["record_key"] for item in second["items"]] == ["P-3"]
    assert second["next_after"] is None


async def test_status_matches_python_digest(store: StoreHarness) -> None:
    products = {code: product(code) for code in ("P-2", "P-10", "P-1")}
    for code, record in products.items():
        await store.resolve("product", code, 1, record)
    await store.resolve("product", "P-9", 1, None, deleted=True)
    await store.create_customer()
    await store.drain_decisions()

    response = await store.client.get("/v1/status")

    body = response.json()
    expected = entity_digest((code, content_hash(record)) for code, record in products.items())
    assert body["store_id"] == STORE_ID
    assert body["entities"]["product"] == {"count": 3, "digest": expected, "pending": 0}
    assert body["entities"]["customer"] == {"count": 0, "digest": EMPTY_DIGEST, "pending": 1}
    assert body["entities"]["ncm"] == {"count": 0, "digest": EMPTY_DIGEST, "pending": 0}
    async with store.registry.runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT record_key, content_hash FROM store_record "
                    "WHERE entity = 'product' AND revision > 0 AND NOT deleted"
                )
            )
        ).all()
    assert entity_digest((row.record_key, row.content_hash) for row in rows) == expected
